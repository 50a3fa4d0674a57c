"""Reference for kata 12-01: regex -> FSM over bytes -> token masks -> constrained generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from katas.phase12.regex_fsm_token_masks.scaffold import FSM, Atom

_UNSUPPORTED = set(".*?|(){}^$")


def parse_atoms(pattern: str) -> list[Atom]:
    atoms: list[Atom] = []
    last_was_multibyte = False  # the previous item was a character of several UTF-8 bytes
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "+":
            if not atoms:
                raise ValueError(f"pattern {pattern!r}: '+' at position {i} has nothing to repeat")
            if atoms[-1].repeat:
                raise ValueError(f"pattern {pattern!r}: '++' at position {i}")
            if last_was_multibyte:
                raise ValueError(f"pattern {pattern!r}: '+' after the multi-byte character "
                                 f"{pattern[i - 1]!r} is outside the lab's subset")
            atoms[-1] = Atom(atoms[-1].byte_set, True)
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                raise ValueError(f"pattern {pattern!r}: '[' at position {i} is never closed")
            atoms.append(Atom(_parse_class(pattern, pattern[i + 1:end])))
            last_was_multibyte = False
            i = end + 1
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise ValueError(f"pattern {pattern!r}: trailing backslash")
            escaped = pattern[i + 1]
            if escaped.isalnum():
                raise ValueError(f"pattern {pattern!r}: escape \\{escaped} is outside the subset "
                                 "(a backslash only makes punctuation literal)")
            atoms.extend(Atom(frozenset([b])) for b in escaped.encode("utf-8"))
            last_was_multibyte = ord(escaped) >= 128
            i += 2
        elif c in _UNSUPPORTED or c == "]":
            raise ValueError(f"pattern {pattern!r}: {c!r} at position {i} is outside the lab's "
                             "subset (literals, [...] classes, +)")
        else:
            atoms.extend(Atom(frozenset([b])) for b in c.encode("utf-8"))
            last_was_multibyte = ord(c) >= 128
            i += 1
    return atoms


def _parse_class(pattern: str, body: str) -> frozenset[int]:
    members: set[int] = set()
    j = 0
    while j < len(body):
        c = body[j]
        if ord(c) >= 128:
            raise ValueError(f"pattern {pattern!r}: class member {c!r} is not ASCII (a class is "
                             "a set of single bytes)")
        if j + 2 < len(body) and body[j + 1] == "-":
            hi = body[j + 2]
            if ord(hi) >= 128 or ord(hi) < ord(c):
                raise ValueError(f"pattern {pattern!r}: bad range {c}-{hi}")
            members.update(range(ord(c), ord(hi) + 1))
            j += 3
        else:
            members.add(ord(c))
            j += 1
    return frozenset(members)


def compile_pattern(pattern: str) -> FSM:
    atoms = parse_atoms(pattern)
    n = len(atoms)

    def step(positions: frozenset[int], byte: int) -> frozenset[int]:
        # Position i = "atoms 0..i-1 matched". Reading a byte of atom i moves to i + 1; a
        # repeated atom may also be read again from i + 1. Keep every position it could mean.
        out: set[int] = set()
        for i in positions:
            if i < n and byte in atoms[i].byte_set:
                out.add(i + 1)
            if i > 0 and atoms[i - 1].repeat and byte in atoms[i - 1].byte_set:
                out.add(i)
        return frozenset(out)

    start = frozenset([0])
    number = {start: 0}
    queue = [start]
    transitions: dict[tuple[int, int], int] = {}
    alphabet = sorted(set().union(*(a.byte_set for a in atoms)))
    while queue:
        positions = queue.pop(0)
        for byte in alphabet:
            target = step(positions, byte)
            if not target:
                continue  # the dead state is not a state: a missing key means death
            if target not in number:
                number[target] = len(number)
                queue.append(target)
            transitions[(number[positions], byte)] = number[target]
    accepting = frozenset(number[p] for p in number if n in p)
    return FSM(transitions=transitions, accepting=accepting, start=0)


def advance(fsm: FSM, state: int, data: bytes) -> int | None:
    for byte in data:
        nxt = fsm.transitions.get((state, byte))
        if nxt is None:
            return None
        state = nxt
    return state


def allowed_tokens(fsm: FSM, state: int, vocab: Sequence[bytes],
                   eos_token_id: int) -> np.ndarray:
    if not 0 <= eos_token_id < len(vocab):
        raise ValueError(f"eos_token_id must be a token id in [0, {len(vocab)}), "
                         f"got {eos_token_id!r}")
    mask = np.zeros(len(vocab), dtype=bool)
    for token_id, data in enumerate(vocab):
        if data and advance(fsm, state, data) is not None:
            mask[token_id] = True
    mask[eos_token_id] = state in fsm.accepting
    return mask


def constrained_generate(
    fsm: FSM,
    vocab: Sequence[bytes],
    eos_token_id: int,
    logits_fn: Callable[[list[int]], np.ndarray],
    max_tokens: int,
) -> tuple[list[int], str]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
    state = fsm.start
    tokens: list[int] = []
    masks: dict[int, np.ndarray] = {}
    while len(tokens) < max_tokens:
        if state not in masks:
            masks[state] = allowed_tokens(fsm, state, vocab, eos_token_id)
        mask = masks[state]
        if not mask.any():
            raise ValueError(f"dead end in state {state}: no token of the vocabulary (and not "
                             f"EOS) can continue {b''.join(vocab[t] for t in tokens)!r}")
        logits = np.asarray(logits_fn(list(tokens)), dtype=np.float64)
        token = int(np.argmax(np.where(mask, logits, -np.inf)))
        tokens.append(token)
        if token == eos_token_id:
            return tokens, "stop"
        state = advance(fsm, state, vocab[token])
    return tokens, "length"
