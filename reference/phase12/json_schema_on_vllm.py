"""Kata 12-02 (reference): JSON-schema constrained decoding on real vLLM, and how to judge it.

Four jobs, each a piece of the course's verification protocol:

* write a schema whose every output must close (``profile_schema``) and find the places where a
  schema lets output grow without limit (``unbounded_paths``);
* build the constrained request with vLLM 0.32's API (``structured_request``);
* judge each output strictly (``verdict``, ``tally``): a ``"length"`` finish is never valid;
* predict which schemas vLLM's xgrammar front door refuses (``xgrammar_refuses``) and read
  xgrammar's packed token bitmask (``unpack_bitmask``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from katas.phase12.json_schema_on_vllm.scaffold import VERDICTS

NAME_MAX, SKILL_MAX, SKILLS_MAX = 16, 12, 2
AGE_MIN, AGE_MAX = 18, 99

# vLLM 0.32 (v1/structured_output/backend_xgrammar.py): the string formats xgrammar implements.
XGRAMMAR_STRING_FORMATS = frozenset({
    "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid", "uri",
    "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
})
# vllm/sampling_params.py: MAX_STRUCTURED_OUTPUT_JSON_NESTING.
MAX_NESTING = 64
_ARRAY_REFUSED = ("uniqueItems", "contains", "minContains", "maxContains")


# ------------------------------------------------------------------------------ the schema


def profile_schema(jobs: Sequence[str]) -> dict[str, Any]:
    if isinstance(jobs, str) or not jobs or not all(isinstance(j, str) and j for j in jobs):
        raise ValueError(f"jobs must be a non-empty sequence of non-empty strings, got {jobs!r}")
    if len(set(jobs)) != len(jobs):
        raise ValueError(f"jobs must not repeat, got {list(jobs)}")
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
            "age": {"type": "integer", "minimum": AGE_MIN, "maximum": AGE_MAX},
            "job": {"enum": list(jobs)},
            "skills": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": SKILL_MAX},
                "minItems": 1,
                "maxItems": SKILLS_MAX,
            },
        },
        "required": ["name", "age", "job", "skills"],
        "additionalProperties": False,
    }


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def unbounded_paths(schema: Mapping[str, Any]) -> list[str]:
    if not isinstance(schema, Mapping):
        raise ValueError(f"schema must be a mapping, got {type(schema).__name__}")
    found: list[str] = []

    def visit(node: Any, path: str) -> None:
        if not isinstance(node, Mapping):
            found.append(path)  # `true` or anything else: any JSON value
            return
        if "enum" in node or "const" in node:
            return  # a finite list of values
        kind = node.get("type")
        if kind in ("boolean", "null"):
            return
        if kind == "string":
            if "maxLength" not in node:
                found.append(path)
        elif kind == "integer":
            low = "minimum" in node or "exclusiveMinimum" in node
            high = "maximum" in node or "exclusiveMaximum" in node
            if not (low and high):
                found.append(path)
        elif kind == "array":
            if "maxItems" not in node:
                found.append(path)
            if isinstance(node.get("items"), Mapping):
                visit(node["items"], f"{path}/items")
        elif kind == "object":
            if node.get("additionalProperties", True) is not False:
                found.append(path)
            for key, sub in (node.get("properties") or {}).items():
                visit(sub, f"{path}/properties/{_pointer_token(key)}")
        else:  # "number" (free fraction digits), a type list, no type at all: not provable
            found.append(path)

    visit(schema, "")
    return found


# ----------------------------------------------------------------------------- the request


def structured_request(schema: Mapping[str, Any] | None, *, max_tokens: int,
                       temperature: float = 0.8, seed: int | None = None) -> Any:
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    constraint = None if schema is None else StructuredOutputsParams(json=dict(schema))
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                          structured_outputs=constraint)


# --------------------------------------------------------------------------- the validator


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def verdict(text: str, finish_reason: str | None, schema: Mapping[str, Any]) -> str:
    import jsonschema

    if finish_reason not in ("stop", "length"):
        raise ValueError(f"finish_reason must be 'stop' or 'length', got {finish_reason!r}")
    if finish_reason == "length":
        return "truncated"  # cut off by max_tokens: suspect however well it parses
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return "not_json"
    try:
        jsonschema.validate(value, dict(schema))
    except jsonschema.ValidationError:
        return "schema_violation"
    return "valid"


def tally(completions: Iterable[tuple[str, str | None]],
          schema: Mapping[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for text, finish_reason in completions:
        counts[verdict(text, finish_reason, schema)] += 1
    return counts


# ------------------------------------------------------------------- xgrammar's front door


def _types(node: Mapping[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _bounded_pattern(node: Any) -> bool:
    return (isinstance(node, Mapping) and ("pattern" in node or "format" in node)
            and ("minLength" in node or "maxLength" in node))


def _refused_here(node: Mapping[str, Any]) -> bool:
    kinds = _types(node)
    if kinds & {"integer", "number"} and "multipleOf" in node:
        return True
    if "array" in kinds and any(k in node for k in _ARRAY_REFUSED):
        return True
    if "string" in kinds and "format" in node and node["format"] not in XGRAMMAR_STRING_FORMATS:
        return True
    if "string" in kinds and _bounded_pattern(node):
        return True
    if "object" in kinds and "propertyNames" in node:
        if (_bounded_pattern(node["propertyNames"]) or "patternProperties" in node
                or "properties" in node or node.get("unevaluatedProperties", True) is not True):
            return True
    if "object" in kinds and isinstance(node.get("patternProperties"), Mapping):
        if "properties" in node or len(node["patternProperties"]) > 1:
            return True
    all_of = node.get("allOf")
    return isinstance(all_of, list) and len(all_of) >= 2


def _depth(node: Any) -> int:
    """Containers (objects and arrays) on the deepest path through the schema document."""
    level, depth = [node], 0
    while level:
        level = [c for n in level if isinstance(n, (Mapping, list))
                 for c in (n.values() if isinstance(n, Mapping) else n)]
        depth += 1
        level = [c for c in level if isinstance(c, (Mapping, list))]
    return depth


def xgrammar_refuses(schema: Mapping[str, Any]) -> bool:
    if not isinstance(schema, Mapping):
        raise ValueError(f"schema must be a mapping, got {type(schema).__name__}")
    if _depth(schema) > MAX_NESTING:
        return True

    def walk(node: Mapping[str, Any]) -> bool:
        if _refused_here(node):
            return True
        for value in node.values():
            if isinstance(value, Mapping) and walk(value):
                return True
            if isinstance(value, list) and any(isinstance(v, Mapping) and walk(v)
                                               for v in value):
                return True
        return False

    return walk(schema)


# ------------------------------------------------------------------------- the token bitmask


def unpack_bitmask(words: np.ndarray, vocab_size: int) -> np.ndarray:
    words = np.asarray(words)
    if words.ndim != 1 or words.dtype != np.int32:
        raise ValueError(f"words must be a 1-D int32 row, got {words.dtype} {words.shape}")
    if not isinstance(vocab_size, int) or not 1 <= vocab_size <= 32 * words.size:
        raise ValueError(f"vocab_size must be an int in [1, {32 * words.size}] for "
                         f"{words.size} words, got {vocab_size!r}")
    bits = np.unpackbits(words.astype("<i4").view(np.uint8), bitorder="little")
    return bits[:vocab_size].astype(bool)
