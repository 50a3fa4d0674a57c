"""What lab 12-01 provides: the data types, a toy vocabulary, and the glue that lets your mask
function constrain mini_vllm (``LearnerRegexMatcher``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Atom(NamedTuple):
    """One position of a lab pattern: a set of byte values, optionally repeated (``+``)."""

    byte_set: frozenset[int]
    repeat: bool = False


@dataclass(frozen=True)
class FSM:
    """A deterministic machine over bytes.

    ``transitions[(state, byte)]`` is the next state; a missing key means the walk dies there.
    ``start`` is the state before any byte; ``accepting`` the states where the text read so far
    is a complete match.
    """

    transitions: dict[tuple[int, int], int]
    accepting: frozenset[int]
    start: int = 0


# A toy vocabulary of BYTES, as ``mini_vllm.structured_output.token_bytes`` gives a byte-level BPE
# tokenizer's: single characters, tokens that cross several pattern atoms ("0x", "12"), tokens
# that die half-way ("1x", "00"), the two halves of "é" (b"\xc3", b"\xa9") next to the whole
# character, a special token (id 21, "<pad>" in the tokenizer's files) that spells no bytes, and
# EOS (also empty: it is a control token, gated on acceptance instead).
TOY_VOCAB: list[bytes] = [
    b"0", b"1", b"7", b"9", b"x", b"0x", b"1x", b"00", b"12", b"a", b"f", b"ff", b"q", b"@",
    b"zz", b".", b"caf", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xc3\xa9!", b"", b"",
]
TOY_SPECIAL_TOKEN_ID = 21
TOY_EOS_TOKEN_ID = 22


def toy_token_id(text: str | bytes) -> int:
    """The id of a toy token given its text (str tokens are UTF-8 encoded)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not data:
        raise ValueError("empty tokens are special: use TOY_SPECIAL_TOKEN_ID / TOY_EOS_TOKEN_ID")
    return TOY_VOCAB.index(data)


class LearnerRegexMatcher:
    """A ``mini_vllm.structured_output.GrammarMatcher`` built from the lab's functions.

    ``compile_pattern`` builds the FSM once; ``allowed_tokens(fsm, state, vocab, eos)`` is called
    once per FSM state the request visits (and cached: the compile-time / runtime split), and
    ``advance(fsm, state, token_bytes)`` moves the state after each accepted token.
    """

    def __init__(
        self,
        pattern: str,
        vocab: Sequence[bytes],
        eos_token_id: int,
        *,
        compile_pattern: Callable[[str], FSM],
        advance: Callable[[FSM, int, bytes], int | None],
        allowed_tokens: Callable[[FSM, int, Sequence[bytes], int], np.ndarray],
        mask_cache: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.fsm = compile_pattern(pattern)
        self.vocab = vocab
        self.eos_token_id = eos_token_id
        self._advance = advance
        self._allowed_tokens = allowed_tokens
        self._cache: dict[int, np.ndarray] = {} if mask_cache is None else mask_cache
        self.state: int = self.fsm.start
        self._terminated = False
        self.mask_computations = 0

    def allowed_tokens(self) -> np.ndarray:
        if self._terminated:
            return np.zeros(len(self.vocab), dtype=bool)
        if self.state not in self._cache:
            mask = np.asarray(self._allowed_tokens(self.fsm, self.state, self.vocab,
                                                   self.eos_token_id))
            if mask.dtype != np.bool_ or mask.shape != (len(self.vocab),):
                raise ValueError(f"allowed_tokens returned a {mask.dtype} array of shape "
                                 f"{mask.shape}; expected bool ({len(self.vocab)},)")
            self._cache[self.state] = mask
            self.mask_computations += 1
        return self._cache[self.state].copy()

    def accept_token(self, token_id: int) -> None:
        if not self.allowed_tokens()[token_id]:
            raise ValueError(f"token {token_id} ({self.vocab[token_id]!r}) is not allowed in "
                             f"state {self.state}")
        if token_id == self.eos_token_id:
            self._terminated = True
            return
        nxt = self._advance(self.fsm, self.state, self.vocab[token_id])
        if nxt is None:
            raise ValueError(f"token {token_id} ({self.vocab[token_id]!r}) was allowed in state "
                             f"{self.state} but advance() says it dies there")
        self.state = nxt

    def is_terminated(self) -> bool:
        return self._terminated
