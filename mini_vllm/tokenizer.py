"""Byte-level tokenizer: one UTF-8 byte is one token, plus an end-of-sequence id.

Upstream twin: the Hugging Face tokenizer vLLM loads through
``vllm/transformers_utils/tokenizer.py: get_tokenizer``. Ours needs no downloaded files, and its
token counts are obvious by eye: ``"hello"`` is 5 tokens, ``"S" * 64`` is 64. The labs rely on
that to pin exact schedule numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Ids 0..255 are the byte values; 256 is the only special token.
EOS_TOKEN_ID: int = 256
VOCAB_SIZE: int = 257


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
