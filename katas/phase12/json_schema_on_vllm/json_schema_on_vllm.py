"""Kata 12-02: JSON-schema constrained decoding on real vLLM, and how to judge it.

Four jobs, each a piece of the course's verification protocol:

* write a schema whose every output must close (``profile_schema``) and find the places where a
  schema lets output grow without limit (``unbounded_paths``);
* build the constrained request with vLLM 0.32's API (``structured_request``);
* judge each output strictly (``verdict``, ``tally``): a ``"length"`` finish is never valid;
* predict which schemas vLLM's xgrammar front door refuses (``xgrammar_refuses``) and read
  xgrammar's packed token bitmask (``unpack_bitmask``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def profile_schema(jobs: Sequence[str]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for one fictional person, bounded so every output closes.

    An instance is valid iff it is an object with exactly the keys ``name``, ``age``, ``job``
    and ``skills``, all required, no other key:

    * ``name``: a string of 1 to 16 characters;
    * ``age``: an integer from 18 to 99 inclusive;
    * ``job``: one of ``jobs`` (exactly those strings);
    * ``skills``: an array of 1 or 2 strings, each of 1 to 12 characters.

    ``unbounded_paths`` of the result is empty. ``ValueError`` when ``jobs`` is a string, empty,
    holds a non-string or empty string, or repeats a job.
    """
    raise NotImplementedError("profile_schema: a bounded schema for a fictional profile")


def unbounded_paths(schema: Mapping[str, Any]) -> list[str]:
    """The schema nodes that let an output grow without limit, as JSON Pointers into ``schema``
    (``""`` is the root, ``"/properties/skills/items"`` a nested node; a ``/`` or ``~`` in a
    property name is written ``~1`` / ``~0``). Empty: every valid output has a bounded length
    (whitespace aside).

    A node is bounded when it has ``enum`` or ``const`` (its other keywords are then not
    looked at); else by its ``type``: ``boolean`` and ``null`` always; ``string`` with a
    ``maxLength``; ``integer`` with a lower (``minimum`` / ``exclusiveMinimum``) and an upper
    (``maximum`` / ``exclusiveMaximum``) bound; ``array`` with ``maxItems``; ``object`` whose
    ``additionalProperties`` is ``false``. A ``number`` (its fraction can always grow), a list
    of types, a node without ``type``, or a node that is not an object (``true``) is never
    proven bounded. An unbounded array or object is still searched: its ``items`` (when an
    object) and each of its ``properties`` are nodes too. Order: a node before its children,
    properties in the schema's order. ``ValueError`` when ``schema`` is not a mapping.
    """
    raise NotImplementedError("unbounded_paths: where a schema lets output grow forever")


def structured_request(schema: Mapping[str, Any] | None, *, max_tokens: int,
                       temperature: float = 0.8, seed: int | None = None) -> Any:
    """vLLM 0.32's ``SamplingParams`` for one request: ``max_tokens``, ``temperature`` and
    ``seed`` as given, and constrained to ``schema`` (a JSON Schema given as a dict) through
    vLLM's structured-outputs parameters; ``schema=None`` is the unconstrained control arm
    (no constraint at all). ``ValueError`` when ``max_tokens`` is not an int >= 1.
    Needs vLLM (import it inside the function).
    """
    raise NotImplementedError("structured_request: vLLM's request constrained to a schema")


def verdict(text: str, finish_reason: str | None, schema: Mapping[str, Any]) -> str:
    """Judge one output, strictly: one of ``"valid"``, ``"truncated"``, ``"not_json"``,
    ``"schema_violation"``.

    * ``"truncated"``: generation stopped at ``max_tokens`` (``finish_reason == "length"``),
      whatever the text looks like;
    * ``"not_json"``: the whole text is not one strict JSON value (``NaN`` and ``Infinity``
      are not JSON; neither is JSON inside a markdown fence or after a chatty preamble);
    * ``"schema_violation"``: JSON, but not an instance of ``schema`` (use ``jsonschema``);
    * ``"valid"``: otherwise.

    ``ValueError`` for a ``finish_reason`` other than ``"stop"`` or ``"length"``.
    """
    raise NotImplementedError("verdict: judge one output against the schema")


def tally(completions: Iterable[tuple[str, str | None]],
          schema: Mapping[str, Any]) -> dict[str, int]:
    """How many ``(text, finish_reason)`` completions got each verdict: a dict with all four
    verdicts as keys (zero counts included) whose values sum to the number of completions."""
    raise NotImplementedError("tally: count the verdicts of a run")


def xgrammar_refuses(schema: Mapping[str, Any]) -> bool:
    """Predict vLLM 0.32's front door for ``StructuredOutputsParams(json=schema)`` with the
    xgrammar backend: True iff vLLM refuses the schema before compiling it (its nesting limit,
    or a keyword on its list of what xgrammar does not support, anywhere in the schema).
    Schemas that xgrammar itself fails to compile are out of scope. ``ValueError`` when
    ``schema`` is not a mapping.
    """
    raise NotImplementedError("xgrammar_refuses: does vLLM's xgrammar front door refuse it")


def unpack_bitmask(words: np.ndarray, vocab_size: int) -> np.ndarray:
    """One row of xgrammar's token bitmask (``ceil(vocab_size / 32)`` int32 words, as
    ``xgr.allocate_token_bitmask`` makes and ``fill_next_token_bitmask`` fills) as a bool
    array of length ``vocab_size``: True where the token is allowed. Token ``t`` is bit
    ``t % 32`` (bit 0 = least significant) of word ``t // 32``. ``ValueError`` for a row that
    is not 1-D int32, or a ``vocab_size`` outside ``[1, 32 * len(words)]``.
    """
    raise NotImplementedError("unpack_bitmask: xgrammar's packed row to a bool mask")
