"""Reference for kata 16-03: an incremental detokenizer that only ever emits whole characters."""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm.structured_output import token_bytes as _token_bytes
from mini_vllm.tokenizer import ByteTokenizer


def utf8_expected_len(lead_byte: int) -> int:
    """Length of the UTF-8 sequence a first byte announces (1-4), 0 if it cannot start one."""
    if not isinstance(lead_byte, int) or not 0 <= lead_byte <= 0xFF:
        raise ValueError(f"utf8_expected_len: {lead_byte!r} is not a byte (0..255)")
    if lead_byte < 0x80:  # 0xxxxxxx
        return 1
    if lead_byte < 0xC0:  # 10xxxxxx: a continuation byte
        return 0
    if lead_byte < 0xE0:  # 110xxxxx
        return 2
    if lead_byte < 0xF0:  # 1110xxxx
        return 3
    if lead_byte < 0xF8:  # 11110xxx
        return 4
    return 0  # 11111xxx: no such lead byte


def _complete_prefix_len(buffer: bytes | bytearray) -> int:
    """Bytes at the front of ``buffer`` that form whole sequences (stray bytes count as one)."""
    i = 0
    while i < len(buffer):
        need = utf8_expected_len(buffer[i])
        if need == 0:  # can never become a character: let decode turn it into U+FFFD now
            i += 1
        elif i + need <= len(buffer):
            i += need
        else:
            break  # an incomplete last character: wait for the rest
    return i


class StreamingDetokenizer:
    """Feed token ids one at a time; get back only text that can no longer change."""

    def __init__(self, token_bytes: Sequence[bytes] | None = None) -> None:
        self._table = list(token_bytes) if token_bytes is not None else _token_bytes(
            ByteTokenizer())
        self._buffer = bytearray()

    def feed(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._table):
            raise ValueError(
                f"feed: token id {token_id} is outside the vocabulary (0..{len(self._table) - 1})")
        self._buffer += self._table[token_id]  # EOS and other special ids spell b""
        ready = _complete_prefix_len(self._buffer)
        if ready == 0:
            return ""
        text = bytes(self._buffer[:ready]).decode("utf-8", errors="replace")
        del self._buffer[:ready]
        return text

    def flush(self) -> str:
        text = bytes(self._buffer).decode("utf-8", errors="replace")
        self._buffer.clear()
        return text
