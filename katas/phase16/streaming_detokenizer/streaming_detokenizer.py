"""Kata 16-03 — the streaming detokenizer: never emit a broken character.

Fill in ``utf8_expected_len`` and ``StreamingDetokenizer``; grade them with
``pytest --impl=mine katas/phase16/streaming_detokenizer``.

A token is a run of bytes; a character is one to four bytes of UTF-8. The two boundaries do
not line up: with mini_vllm's ``ByteTokenizer`` (id ``b`` < 256 is the byte ``b``, 256 is EOS)
the rocket 🚀 is four tokens, and SmolLM2's BPE cuts Chinese characters and emoji between
tokens too. A streaming server may only send text that can no longer change.
"""

from __future__ import annotations

from collections.abc import Sequence


def utf8_expected_len(lead_byte: int) -> int:
    """How many bytes the UTF-8 sequence that starts with ``lead_byte`` has.

    ``0xxxxxxx`` -> 1, ``110xxxxx`` -> 2, ``1110xxxx`` -> 3, ``11110xxx`` -> 4 (bit patterns,
    as the course's table gives them). A byte that cannot start a character — a continuation
    byte ``10xxxxxx`` or ``11111xxx`` — gives 0. ``ValueError`` (mentioning "byte") for a
    value outside 0..255.
    """
    raise NotImplementedError("utf8_expected_len: the length a UTF-8 lead byte announces")


class StreamingDetokenizer:
    """Token ids in, one at a time; only complete characters out.

    ``token_bytes[i]`` is the bytes token ``i`` spells (``b""`` for EOS and other special
    tokens). Without a table the detokenizer speaks ``ByteTokenizer``: ids 0..255 are bytes,
    256 (EOS) spells nothing — ``mini_vllm.structured_output.token_bytes(ByteTokenizer())``
    is that table. For SmolLM2, ``token_bytes(HFTokenizer(path))`` is its table.
    """

    def __init__(self, token_bytes: Sequence[bytes] | None = None) -> None:
        raise NotImplementedError("StreamingDetokenizer: set up the table and a byte buffer")

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that became complete (possibly ``""``).

        Invariants, for valid UTF-8 input: the concatenation of everything returned so far is
        exactly the characters whose bytes have all arrived — nothing that could still change
        is emitted, nothing complete is held back (ASCII comes out on its own token), and no
        U+FFFD ever appears. A byte that can never start a character (``utf8_expected_len``
        0) is not waited on: it comes out as U+FFFD at once. Ids that spell nothing (EOS)
        return ``""`` and do not disturb a half-finished character. ``ValueError`` (naming the
        id) for an id outside ``0 .. len(token_bytes) - 1``.
        """
        raise NotImplementedError("feed: emit only complete characters")

    def flush(self) -> str:
        """End of stream: return whatever bytes are still held, decoded with U+FFFD for a
        character cut short (one U+FFFD for the 3 bytes of an unfinished 🚀), and empty the
        buffer so the detokenizer can start again. ``""`` when nothing is held."""
        raise NotImplementedError("flush: hand over the remnant at end of stream")
