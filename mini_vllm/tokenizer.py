"""Tokenizers: the byte tokenizer of the toy model, and Hugging Face tokenizers for real ones.

Upstream twin: ``vllm/transformers_utils/tokenizer.py: get_tokenizer``, which hands vLLM a
transformers tokenizer for a model directory. Ours needs neither transformers nor torch:

* ``ByteTokenizer`` needs no files at all, and its token counts are obvious by eye: ``"hello"``
  is 5 tokens, ``"S" * 64`` is 64. The labs rely on that to pin exact schedule numbers.
* ``HFTokenizer`` reads a directory's ``tokenizer.json`` with the ``tokenizers`` package and
  renders its chat template with jinja2 the way transformers does, so a prompt becomes the same
  ids under mini_vllm, transformers and vLLM.
* ``write_hf_tokenizer`` writes such a directory (the checkpoint builders use it).

``tokenizers`` and ``jinja2`` are imported only when a Hugging Face tokenizer is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Ids 0..255 are the byte values; 256 is the only special token.
EOS_TOKEN_ID: int = 256
VOCAB_SIZE: int = 257

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# The named special tokens transformers hands to a chat template (its SPECIAL_TOKENS_ATTRIBUTES).
_SPECIAL_TOKEN_NAMES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)


class ByteTokenizer:
    """Encode text as its UTF-8 bytes; decode skips EOS (it is a control token, not text)."""

    eos_token_id: int = EOS_TOKEN_ID
    vocab_size: int = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, token_ids: Iterable[int]) -> str:
        data = bytes(t for t in token_ids if t != EOS_TOKEN_ID)
        # A toy model emits arbitrary bytes, which need not form valid UTF-8; replacing
        # broken sequences keeps decode total (it never raises on model output).
        return data.decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face fast-tokenizer directory, read without transformers.

    ``encode`` adds special tokens exactly when transformers 5 does: as ``tokenizer.json``'s
    post-processor says (SmolLM2's adds none). ``add_bos_token`` in ``tokenizer_config.json`` is
    ignored, as transformers ignores it whenever a ``tokenizer.json`` exists. ``decode`` leaves
    spaces alone (``clean_up_tokenization_spaces`` is off in every directory this project
    writes, and transformers ignores it for BPE tokenizers anyway).
    """

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        tokenizer_file = model_dir / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise ValueError(f"{tokenizer_file}: file is missing")
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(f"{tokenizer_file}: not a tokenizers file ({exc})") from None
        config_file = model_dir / TOKENIZER_CONFIG_FILE
        self.config = _read_json(config_file)
        self.special_tokens = {
            name: text
            for name in _SPECIAL_TOKEN_NAMES
            if (text := _token_text(self.config.get(name))) is not None
        }
        eos = self.special_tokens.get("eos_token")
        eos_id = self._tokenizer.token_to_id(eos) if eos is not None else None
        if eos_id is None:
            raise ValueError(f"{config_file}: eos_token {eos!r} is not a token of {TOKENIZER_FILE}")
        self.eos_token_id: int = eos_id
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)

        template_file = model_dir / CHAT_TEMPLATE_FILE
        # transformers' precedence: chat_template.jinja overrides the config's entry.
        if template_file.is_file():
            self.chat_template: str | None = template_file.read_text(encoding="utf-8")
            self._template_source = template_file
        else:
            self.chat_template = _default_template(self.config.get("chat_template"))
            self._template_source = config_file

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt string transformers' ``apply_chat_template(..., tokenize=False)`` renders."""
        if self.chat_template is None:
            raise ValueError(f"{self._template_source}: no chat template")
        return _compile_chat_template(self.chat_template).render(
            messages=list(messages),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )


def get_tokenizer(model_dir: str | Path) -> ByteTokenizer | HFTokenizer:
    """The tokenizer of a model directory: its ``tokenizer.json``, else the byte tokenizer."""
    model_dir = Path(model_dir)
    if (model_dir / TOKENIZER_FILE).exists():
        return HFTokenizer(model_dir)
    return ByteTokenizer()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json spells it: a string, or a serialized AddedToken."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _default_template(value: object) -> str | None:
    """A config's chat_template: one string, or a list of named ones (take "default")."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        value = named.get("default")
    return value if isinstance(value, str) else None


@cache
def _compile_chat_template(template: str) -> Any:
    """Compile like transformers' ``utils/chat_template_utils.py``, so the strings are equal.

    Same sandbox, same whitespace control, same globals, and a ``tojson`` that does not escape
    HTML (jinja's own would turn ``<`` into ``\\u003c``).
    """
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}`` marks assistant text for training masks; rendering keeps it."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_keep")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _keep(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: the alphabet of byte-level BPE.

    Byte-level vocabularies spell every token in these 256 characters (a space is ``Ġ``).
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def special_tokens_post_processor(
    bos: tuple[str, int] | None = None, eos: tuple[str, int] | None = None
) -> Any:
    """The post-processor that adds BOS before and EOS after a text (each only when given).

    The template transformers' tokenizers backend writes (``update_post_processor``). It lives in
    ``tokenizer.json``, the only place transformers 5 and ``HFTokenizer`` look for it.
    """
    from tokenizers import processors

    def template(seq: str, type_id: int) -> str:
        parts = [f"{bos[0]}:{type_id}"] if bos else []
        parts.append(f"{seq}:{type_id}")
        if eos:
            parts.append(f"{eos[0]}:{type_id}")
        return " ".join(parts)

    return processors.TemplateProcessing(
        single=template("$A", 0),
        pair=f"{template('$A', 0)} {template('$B', 1)}",
        special_tokens=[t for t in (bos, eos) if t is not None],
    )


def write_hf_tokenizer(
    out_dir: Path,
    tokenizer: Tokenizer,
    special_tokens: Mapping[str, str],
    *,
    chat_template: str | None = None,
    model_max_length: int | None = None,
) -> None:
    """Write a fast-tokenizer directory that transformers, vLLM and ``HFTokenizer`` all load.

    ``tokenizer_class`` is ``PreTrainedTokenizerFast``: every transformers release reads it (5.x
    maps it to its tokenizers backend). Whether BOS/EOS are added is the post-processor's business
    in ``tokenizer.json``. The chat template goes both into the config and into
    ``chat_template.jinja``, the file transformers 5 writes and prefers.
    """
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **{name: special_tokens[name] for name in _SPECIAL_TOKEN_NAMES if name in special_tokens},
        "clean_up_tokenization_spaces": False,
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    if chat_template is not None:
        config["chat_template"] = chat_template
        (out_dir / CHAT_TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
    tokenizer.save(str(out_dir / TOKENIZER_FILE))
    (out_dir / TOKENIZER_CONFIG_FILE).write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
