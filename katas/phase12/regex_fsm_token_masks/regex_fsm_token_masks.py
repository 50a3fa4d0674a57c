"""Lab 12-01: compile a regex to an FSM over bytes, lift it to token masks, constrain generation.

Your four functions are also what ``scaffold.LearnerRegexMatcher`` calls to constrain mini_vllm
on SmolLM2's real vocabulary, so they must hold for 49,152 byte-level tokens, not just the toy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from katas.phase12.regex_fsm_token_masks.scaffold import FSM, Atom


def parse_atoms(pattern: str) -> list[Atom]:
    """The pattern as a sequence of atoms.

    The lab's subset: a literal character (a non-ASCII one, such as ``é``, is one atom per UTF-8
    byte), a class ``[...]`` of ASCII members and ranges (``[0-9a-f_]``), a backslash before a
    punctuation character (``\\.`` is a literal dot), and ``+`` after an atom (``repeat=True``:
    one or more).

    ``parse_atoms("0x[0-9a-f]+")`` is ``[Atom({0x30}), Atom({0x78}), Atom(<the 16 hex digit
    bytes>, True)]`` (byte values, not characters).

    ``ValueError`` naming the problem for anything outside the subset: ``. * ? | ( ) { } ^ $``,
    a backslash before a letter or digit, an unclosed ``[``, a non-ASCII class member, a range
    whose end precedes its start, ``+`` with nothing (or a multi-byte character) before it.
    """
    raise NotImplementedError("parse_atoms: split a lab pattern into byte-set atoms")


def compile_pattern(pattern: str) -> FSM:
    """A deterministic FSM over bytes that accepts exactly the byte strings ``re.fullmatch``
    accepts for ``pattern`` (UTF-8 encoded).

    Start state 0. For a pattern whose repeated atoms never overlap the atom after them, state
    ``i`` means "atoms ``0..i-1`` matched" (``0x[0-9a-f]+``: ``0 -'0'-> 1 -'x'-> 2 -hex-> 3``,
    hex loops on 3, accepting ``{3}``). When they do overlap (``[0-9]+[0-9]``) the machine
    must still be deterministic and exact. A missing ``(state, byte)`` key means the walk
    dies: there is no explicit dead state. ``ValueError`` as :func:`parse_atoms`.
    """
    raise NotImplementedError("compile_pattern: build a deterministic byte FSM from the atoms")


def advance(fsm: FSM, state: int, data: bytes) -> int | None:
    """The state after reading every byte of ``data`` from ``state``, or ``None`` if some byte
    has no transition (the walk died, possibly half-way through ``data``).

    Never changes ``fsm``; ``advance(fsm, s, b"")`` is ``s``.
    """
    raise NotImplementedError("advance: walk a token's bytes through the FSM")


def allowed_tokens(fsm: FSM, state: int, vocab: Sequence[bytes],
                   eos_token_id: int) -> np.ndarray:
    """bool ``[len(vocab)]``: which tokens may come next in ``state``.

    ``vocab[t]`` is token ``t``'s bytes (a token may hold several characters, or part of one).
    A token is allowed iff reading all of its bytes from ``state`` never dies. A token with no
    bytes (a special token) is never allowed, except EOS: ``eos_token_id`` is allowed exactly
    when ``state`` is accepting. ``ValueError`` if ``eos_token_id`` is not an index of
    ``vocab``.
    """
    raise NotImplementedError("allowed_tokens: the mask of tokens that keep the FSM alive")


def constrained_generate(
    fsm: FSM,
    vocab: Sequence[bytes],
    eos_token_id: int,
    logits_fn: Callable[[list[int]], np.ndarray],
    max_tokens: int,
) -> tuple[list[int], str]:
    """Greedy generation under the FSM, from its start state.

    Each step, ``logits_fn(tokens_so_far)`` scores the whole vocabulary; emit the allowed token
    with the highest logit (ties: the lowest id). Stop after emitting EOS (included in the
    returned ids; finish reason ``"stop"``) or after ``max_tokens`` tokens (``"length"``).
    Returns ``(token_ids, finish_reason)``. ``ValueError`` if ``max_tokens < 1``, or when no
    token (and not EOS) is allowed: a dead end.
    """
    raise NotImplementedError("constrained_generate: sample greedily among the allowed tokens")
