"""Regex -> NFA -> DFA over bytes -> per-state token masks: the course's phase 12 mini-build.

Upstream twins (vLLM v0.22.1): ``vllm/v1/structured_output/backend_xgrammar.py: XgrammarGrammar``
(``accept_tokens``, ``fill_bitmask``, ``rollback``, ``is_terminated``); the regex -> FSM -> token
index idea is outlines' (the lineage of ``vllm/model_executor/guided_decoding``).

Three moves:

1. **Compile** (:func:`compile_regex`, cached per pattern): a small regex parser -> Thompson NFA
   with byte-set edges -> subset construction -> a DFA over BYTES (``transitions[state, byte]``,
   ``-1`` = dead), with states that cannot reach acceptance pruned. Characters are UTF-8
   encoded, so ``é`` is two edges and ``.`` is every valid UTF-8 sequence but ``\\n``.
2. **Lift** (:func:`token_mask_table`, cached per (pattern, vocabulary)): token ``t`` is legal
   in state ``s`` iff walking ALL of ``t``'s bytes from ``s`` never dies. One token may hold
   several characters, cross several regex atoms, or hold half a character (byte-level BPE
   splits UTF-8); walking bytes covers all three. A token with no bytes (a special token) is
   never legal; EOS is legal exactly in accepting states. The whole ``state -> bool[vocab]``
   table is computed at once, all states and all tokens walked in parallel with numpy.
3. **Mask per step** (:class:`RegexMatcher`, one per request): ``allowed_tokens()`` is a row
   lookup; ``accept_token`` walks the token's bytes.

Supported syntax: literals (any Unicode character), ``.``, classes ``[a-z0-9_]`` and ``[^...]``
(negated classes: ASCII members only), escapes ``\\d \\w \\s \\D \\W \\S`` and ``\\`` + a
punctuation character, groups ``(...)`` and ``(?:...)``, alternation ``|``, and the quantifiers
``* + ?`` and ``{m}``, ``{m,}``, ``{m,n}``. The six escapes match ASCII characters only
(Python's ``re`` also matches Unicode digits and letters with ``\\d \\w``, and every other
non-ASCII character with ``\\D \\W \\S``), so every output this DFA allows also
``re.fullmatch``-es the same pattern. No anchors, backreferences, lookarounds or lazy
quantifiers (``ValueError``).

Measured on SmolLM2's 49,152-token vocabulary (a busy 2-core machine): the byte list
(``token_bytes``) and its padded ``[49152, 81]`` matrix take ~0.3 s each, once per tokenizer;
the table is filled all at once, ~0.01 s per DFA state (0.11 s for the 11-state date DFA
``\\d{4}-\\d{2}-\\d{2}``, 0.5 s for a 39-state email DFA), and keeps ``num_states * vocab`` bools:
48 KiB a state, 0.5 MiB for the date DFA (the walk's int32 scratch peaks at ~8 bytes per
(state, token) while it runs). Lazily filling only visited states would save little: the
whole table costs about as much as the first forward step of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

_DIGITS = frozenset(range(ord("0"), ord("9") + 1))
_WORD = frozenset(
    list(range(ord("a"), ord("z") + 1)) + list(range(ord("A"), ord("Z") + 1)) + list(_DIGITS)
    + [ord("_")])
_SPACE = frozenset(b" \t\n\r\f\v")
_ASCII = frozenset(range(128))
_MAX_REPEAT = 1000


# -- AST --------------------------------------------------------------------------------------
# ("bytes", frozenset[int])            one byte out of a set
# ("seq", [node...]) / ("alt", [node...])
# ("star", node) / ("plus", node) / ("opt", node) / ("repeat", node, m, n | None)


@dataclass(frozen=True)
class _CharSet:
    """A class of characters: ASCII members as bytes, non-ASCII ones as characters."""

    ascii: frozenset[int]
    chars: frozenset[str] = frozenset()
    any_non_ascii: bool = False  # every non-ASCII character (``.``, ``[^...]``, ``\\D``...)


def _charset_node(cs: _CharSet) -> tuple:
    branches: list[tuple] = []
    if cs.ascii:
        branches.append(("bytes", frozenset(cs.ascii)))
    for ch in sorted(cs.chars):
        branches.append(("seq", [("bytes", frozenset([b])) for b in ch.encode("utf-8")]))
    if cs.any_non_ascii:
        branches.extend(_UTF8_MULTIBYTE)
    if not branches:
        raise ValueError("an empty character class matches nothing")
    return branches[0] if len(branches) == 1 else ("alt", branches)


def _rng(lo: int, hi: int) -> tuple:
    return ("bytes", frozenset(range(lo, hi + 1)))


_CONT = _rng(0x80, 0xBF)
# Every valid multi-byte UTF-8 sequence (no overlongs, no surrogates, nothing above U+10FFFF).
_UTF8_MULTIBYTE = [
    ("seq", [_rng(0xC2, 0xDF), _CONT]),
    ("seq", [_rng(0xE0, 0xE0), _rng(0xA0, 0xBF), _CONT]),
    ("seq", [("bytes", frozenset([*range(0xE1, 0xED), 0xEE, 0xEF])), _CONT, _CONT]),
    ("seq", [_rng(0xED, 0xED), _rng(0x80, 0x9F), _CONT]),
    ("seq", [_rng(0xF0, 0xF0), _rng(0x90, 0xBF), _CONT, _CONT]),
    ("seq", [_rng(0xF1, 0xF3), _CONT, _CONT, _CONT]),
    ("seq", [_rng(0xF4, 0xF4), _rng(0x80, 0x8F), _CONT, _CONT]),
]


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def error(self, why: str) -> ValueError:
        return ValueError(f"regex {self.p!r}: {why} at position {self.i}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> tuple:
        node = self.alt()
        if self.i != len(self.p):
            raise self.error(f"unbalanced {self.p[self.i]!r}")
        return node

    def alt(self) -> tuple:
        branches = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.seq())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def seq(self) -> tuple:
        items = []
        while self.peek() is not None and self.peek() not in "|)":
            items.append(self.quantified())
        return ("seq", items)

    def quantified(self) -> tuple:
        node = self.atom()
        while (c := self.peek()) is not None and c in "*+?{":
            if c == "{":
                bounds = self.braces()
                if bounds is None:
                    break
                node = ("repeat", node, *bounds)
                continue
            self.i += 1
            node = {"*": "star", "+": "plus", "?": "opt"}[c], node
            if self.peek() == "?":
                raise self.error("lazy quantifiers are not supported")
        return node

    def braces(self) -> tuple[int, int | None] | None:
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1:end] if end != -1 else ""
        lo, comma, hi = body.partition(",")
        if end == -1 or not lo.isdigit() or (hi and not hi.isdigit()):
            return None  # not a quantifier: "{" is a literal, as in Python's re
        m, n = int(lo), (int(hi) if hi else (None if comma else int(lo)))
        if n is not None and n < m:
            raise self.error(f"{{{m},{n}}}: min exceeds max")
        if max(m, n or 0) > _MAX_REPEAT:
            raise self.error(f"repeat counts above {_MAX_REPEAT} are not supported")
        self.i = end + 1
        return m, n

    def atom(self) -> tuple:
        c = self.p[self.i]
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("only (?:...) groups are supported")
            node = self.alt()
            if self.peek() != ")":
                raise self.error("missing )")
            self.i += 1
            return node
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c in "^$":
            raise self.error("anchors are not supported (the whole output must match)")
        if c == "[":
            return _charset_node(self.char_class())
        if c == ".":
            self.i += 1
            return _charset_node(_CharSet(_ASCII - {ord("\n")}, any_non_ascii=True))
        if c == "\\":
            return _charset_node(self.escape())
        self.i += 1
        return ("seq", [("bytes", frozenset([b])) for b in c.encode("utf-8")])

    def escape(self) -> _CharSet:
        if self.i + 1 >= len(self.p):
            raise self.error("trailing backslash")
        c = self.p[self.i + 1]
        self.i += 2
        sets = {"d": _DIGITS, "w": _WORD, "s": _SPACE}
        if c in sets:
            return _CharSet(sets[c])
        if c in "DWS":  # ASCII only, like \d \w \s: a subset of what Python's re matches
            return _CharSet(_ASCII - sets[c.lower()])
        if c in "nrtfv":
            return _CharSet(frozenset([ord({"n": "\n", "r": "\r", "t": "\t", "f": "\f",
                                            "v": "\v"}[c])]))
        if c.isalnum():
            raise self.error(f"escape \\{c} is not supported")
        return self.single(c)

    @staticmethod
    def single(c: str) -> _CharSet:
        return _CharSet(frozenset([ord(c)])) if ord(c) < 128 else _CharSet(frozenset(), {c})

    def char_class(self) -> _CharSet:
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ascii_set: set[int] = set()
        chars: set[str] = set()
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("missing ]")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "\\":
                member = self.escape()
                ascii_set |= member.ascii
                chars |= member.chars
                if member.any_non_ascii:
                    raise self.error("\\D, \\W, \\S inside a class are not supported")
                continue
            self.i += 1
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                hi = self.p[self.i + 1]
                self.i += 2
                if ord(hi) < ord(c):
                    raise self.error(f"bad range {c}-{hi}")
                if ord(hi) >= 128:
                    if hi != c and ord(c) < 128:
                        raise self.error("ranges across ASCII and non-ASCII are not supported")
                    chars |= {chr(o) for o in range(ord(c), ord(hi) + 1)}
                else:
                    ascii_set |= set(range(ord(c), ord(hi) + 1))
                continue
            if ord(c) < 128:
                ascii_set.add(ord(c))
            else:
                chars.add(c)
        if negate:
            if chars:
                raise self.error("negated classes with non-ASCII members are not supported")
            return _CharSet(_ASCII - ascii_set, any_non_ascii=True)
        return _CharSet(frozenset(ascii_set), frozenset(chars))


# -- NFA (Thompson) -----------------------------------------------------------------------------


@dataclass
class _NFA:
    eps: list[list[int]] = field(default_factory=list)
    edges: list[list[tuple[frozenset[int], int]]] = field(default_factory=list)

    def new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node: tuple) -> tuple[int, int]:
        """Fragment (start, end) for ``node``."""
        kind = node[0]
        if kind == "bytes":
            s, e = self.new(), self.new()
            self.edges[s].append((node[1], e))
            return s, e
        if kind == "seq":
            s = e = self.new()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[e].append(cs)
                e = ce
            return s, e
        if kind == "alt":
            s, e = self.new(), self.new()
            for child in node[1]:
                cs, ce = self.build(child)
                self.eps[s].append(cs)
                self.eps[ce].append(e)
            return s, e
        if kind in ("star", "plus", "opt"):
            s, e = self.new(), self.new()
            cs, ce = self.build(node[1])
            self.eps[s].append(cs)
            self.eps[ce].append(e)
            if kind != "plus":
                self.eps[s].append(e)
            if kind != "opt":
                self.eps[ce].append(cs)
            return s, e
        if kind == "repeat":
            _, child, m, n = node
            parts: list[tuple] = [child] * m
            if n is None:
                parts.append(("star", child))
            else:
                parts.extend([("opt", child)] * (n - m))
            return self.build(("seq", parts))
        raise AssertionError(kind)

    def closure(self, states: set[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


# -- DFA ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DFA:
    """``transitions[state, byte]`` -> next state, ``-1`` = dead; state 0 is the start.

    Every state can still reach an accepting one (dead states are pruned), so a walk that
    never hits ``-1`` is always a prefix of some match.
    """

    pattern: str
    transitions: np.ndarray  # int32 [num_states, 256]
    accepting: np.ndarray  # bool [num_states]

    @property
    def num_states(self) -> int:
        return int(self.accepting.size)

    def walk(self, state: int, data: bytes) -> int:
        """The state after ``data`` from ``state``; ``-1`` as soon as a byte dies."""
        for b in data:
            state = int(self.transitions[state, b])
            if state < 0:
                return -1
        return state

    def fullmatch(self, data: bytes) -> bool:
        end = self.walk(0, data)
        return end >= 0 and bool(self.accepting[end])


@lru_cache(maxsize=64)
def compile_regex(pattern: str) -> DFA:
    """The pruned byte DFA of ``pattern`` (``ValueError`` for unsupported or bad syntax, or a
    pattern that matches nothing)."""
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a str, got {pattern!r}")
    nfa = _NFA()
    start, end = nfa.build(_Parser(pattern).parse())
    first = nfa.closure({start})
    index = {first: 0}
    order = [first]
    rows: list[list[int]] = []
    while len(rows) < len(order):
        current = order[len(rows)]
        targets: list[set[int]] = [set() for _ in range(256)]
        for s in current:
            for byte_set, t in nfa.edges[s]:
                for b in byte_set:
                    targets[b].add(t)
        row = []
        for b in range(256):
            if not targets[b]:
                row.append(-1)
                continue
            nxt = nfa.closure(targets[b])
            if nxt not in index:
                index[nxt] = len(order)
                order.append(nxt)
            row.append(index[nxt])
        rows.append(row)
    table = np.array(rows, dtype=np.int32)
    accepting = np.array([end in s for s in order], dtype=bool)
    # Prune: keep the states from which an accepting state is reachable.
    live = accepting.copy()
    changed = True
    while changed:
        reach = np.array([live[r[r >= 0]].any() for r in table]) | live
        changed = bool((reach != live).any())
        live = reach
    if not live[0]:
        raise ValueError(f"regex {pattern!r} matches nothing")
    keep = np.flatnonzero(live)
    remap = np.full(len(order), -1, dtype=np.int32)
    remap[keep] = np.arange(keep.size, dtype=np.int32)
    pruned = np.where(table[keep] >= 0, remap[np.maximum(table[keep], 0)], -1).astype(np.int32)
    return DFA(pattern, pruned, accepting[keep])


# -- lifting: per-state token masks ----------------------------------------------------------


@dataclass(frozen=True)
class _VocabMatrix:
    """The vocabulary sorted by length, bytes padded: what the parallel walk iterates over."""

    lengths: np.ndarray  # int [V]
    order: np.ndarray  # token ids, longest first
    padded: np.ndarray  # uint8 [V, max_len] in ``order``
    counts: list[int]  # counts[j]: how many tokens (a prefix of ``order``) have > j bytes


_VOCAB_CACHE: dict[int, tuple[Sequence[bytes], _VocabMatrix]] = {}


def _vocab_matrix(vocab: Sequence[bytes]) -> _VocabMatrix:
    hit = _VOCAB_CACHE.get(id(vocab))
    if hit is not None and hit[0] is vocab:
        return hit[1]
    lengths = np.fromiter((len(t) for t in vocab), dtype=np.int64, count=len(vocab))
    order = np.argsort(-lengths, kind="stable")
    max_len = int(lengths.max(initial=0))
    padded = np.zeros((len(vocab), max(max_len, 1)), dtype=np.uint8)
    for row, token_id in enumerate(order):
        data = vocab[token_id]
        if not data:
            break
        padded[row, :len(data)] = np.frombuffer(data, dtype=np.uint8)
    sorted_lengths = lengths[order]
    counts = [int(np.count_nonzero(sorted_lengths > j)) for j in range(max_len)]
    matrix = _VocabMatrix(lengths, order, padded, counts)
    if len(_VOCAB_CACHE) > 8:
        _VOCAB_CACHE.clear()
    _VOCAB_CACHE[id(vocab)] = (vocab, matrix)  # keeps ``vocab`` alive, so its id stays valid
    return matrix


def token_mask_table(dfa: DFA, vocab: Sequence[bytes], eos_token_id: int) -> np.ndarray:
    """bool ``[num_states, len(vocab)]``: row ``s`` holds the tokens legal in state ``s``.

    A token is legal iff walking all of its bytes from ``s`` never dies; an empty token never
    is; EOS is legal exactly in accepting states. All states and tokens walk in parallel.
    """
    vm = _vocab_matrix(vocab)
    n_states = dfa.num_states
    sink = n_states
    table = np.vstack([np.where(dfa.transitions >= 0, dfa.transitions, sink),
                       np.full((1, 256), sink, dtype=np.int32)]).astype(np.int32)
    current = np.repeat(np.arange(n_states, dtype=np.int32)[:, None], len(vocab), axis=1)
    for j, count in enumerate(vm.counts):
        current[:, :count] = table[current[:, :count], vm.padded[:count, j]]
    alive_sorted = current != sink
    alive_sorted[:, vm.lengths[vm.order] == 0] = False
    mask = np.empty_like(alive_sorted)
    mask[:, vm.order] = alive_sorted
    if not 0 <= eos_token_id < len(vocab):
        raise ValueError(f"eos_token_id must be a token id in [0, {len(vocab)}), "
                         f"got {eos_token_id!r}")
    mask[:, eos_token_id] = dfa.accepting
    return mask


_TABLE_CACHE: dict[tuple[str, int, int], tuple[Sequence[bytes], np.ndarray]] = {}


def _cached_table(dfa: DFA, vocab: Sequence[bytes], eos_token_id: int) -> np.ndarray:
    key = (dfa.pattern, id(vocab), eos_token_id)
    hit = _TABLE_CACHE.get(key)
    if hit is not None and hit[0] is vocab:
        return hit[1]
    table = token_mask_table(dfa, vocab, eos_token_id)
    table.setflags(write=False)
    if len(_TABLE_CACHE) > 32:
        _TABLE_CACHE.clear()
    _TABLE_CACHE[key] = (vocab, table)
    return table


class RegexMatcher:
    """One request's regex constraint: a :class:`mini_vllm.structured_output.GrammarMatcher`.

    ``RegexMatcher(pattern, vocab_bytes, eos_token_id)``; ``vocab_bytes`` is
    ``mini_vllm.structured_output.token_bytes(tokenizer)``. The DFA is compiled once per pattern
    and the mask table once per (pattern, vocabulary), so a second matcher for the same pattern
    costs nothing. ``rollback(n)`` un-advances ``n`` tokens (upstream's spec-decode hook).
    """

    def __init__(self, pattern: str, vocab_bytes: Sequence[bytes], eos_token_id: int) -> None:
        self.dfa = compile_regex(pattern)
        self.vocab_bytes = vocab_bytes
        self.eos_token_id = int(eos_token_id)
        self.masks = _cached_table(self.dfa, vocab_bytes, self.eos_token_id)
        self.state = 0
        self._terminated = False
        self._history: list[int] = []
        self._nothing = np.zeros(len(vocab_bytes), dtype=bool)

    @property
    def pattern(self) -> str:
        return self.dfa.pattern

    def allowed_tokens(self) -> np.ndarray:
        if self._terminated:
            return self._nothing.copy()
        return self.masks[self.state].copy()

    def accept_token(self, token_id: int) -> None:
        token_id = int(token_id)
        if self._terminated:
            raise ValueError(f"token {token_id}: the match already ended with EOS")
        if not 0 <= token_id < len(self.vocab_bytes) or not self.masks[self.state, token_id]:
            raise ValueError(f"token {token_id} ({self._show(token_id)}) is not allowed by "
                             f"{self.pattern!r} in DFA state {self.state}")
        self._history.append(self.state)
        if token_id == self.eos_token_id:
            self._terminated = True
            return
        self.state = self.dfa.walk(self.state, self.vocab_bytes[token_id])

    def _show(self, token_id: int) -> str:
        if 0 <= token_id < len(self.vocab_bytes):
            return repr(self.vocab_bytes[token_id])
        return "out of range"

    def is_terminated(self) -> bool:
        return self._terminated

    def is_accepting(self) -> bool:
        """Whether the text accepted so far is a complete match (EOS would be legal)."""
        return bool(self.dfa.accepting[self.state])

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted tokens (``ValueError`` if fewer were)."""
        if not 0 <= num_tokens <= len(self._history):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {len(self._history)} "
                             "were accepted")
        for _ in range(num_tokens):
            self.state = self._history.pop()
            self._terminated = False
