"""Reference for kata 12-03: a pushdown recogniser for JSON, lifted to a token mask.

The machine's whole state is one immutable tuple ``(mode, aux, ws, stack)``:

* ``mode``: where we are inside the current production (a gap before a value, inside a string,
  inside a number, part-way through a literal, ...); ``aux`` carries the mode's details.
* ``ws``: whitespace bytes used in the current gap (at most one: see ``WS_MAX``).
* ``stack``: the open containers, innermost last: ``"{"``, ``"["``, or ``("S", i)`` for the
  schema's object while it is at field ``i``. This is the pushdown part: a closer must match
  the top, and closing resumes whatever the new top says.

``step(state, byte)`` is a pure function (``None`` = illegal), so copying a machine is copying a
tuple, and the token matcher can walk a trie of the vocabulary from one state without undo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The end-of-sequence symbol of the byte-level machine (not a byte: bytes are 0..255).
EOS: int = 256
#: Whitespace bytes allowed in a gap (between structural bytes), and how many in a row.
WS_BYTES: frozenset[int] = frozenset(b" \n")
WS_MAX: int = 1

_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_LITERALS = (b"true", b"false", b"null")
_NUM_COMPLETE = frozenset({"zero", "int", "frac", "exp"})
_SCHEMA_TYPES = ("string", "integer", "number", "boolean")

# modes
VALUE, ARR_FIRST, OBJ_FIRST, KEY, SKEY, COLON, AFTER = (
    "value", "arr_first", "obj_first", "key", "skey", "colon", "after")
STR, NUM, LIT = "str", "num", "lit"

State = tuple  # (mode, aux, ws, stack)


# -- the schema subset ------------------------------------------------------------------------


def _compile_schema(schema: dict | None) -> tuple[tuple[bytes, Any], ...] | None:
    """``((key literal bytes, kind), ...)`` in the schema's property order, or ``None``.

    ``kind`` is ``"string" | "integer" | "number" | "boolean"`` or ``("enum", literals)``.
    """
    if schema is None:
        return None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError(f"schema: only {{'type': 'object', ...}} is supported, got {schema!r}")
    props = schema.get("properties", {})
    required = schema.get("required", list(props))
    if not isinstance(props, dict) or sorted(required) != sorted(props):
        raise ValueError("schema: every property must be required (and every required key a "
                         f"property); got properties {list(props)} and required {required}")
    fields = []
    for key, spec in props.items():
        if not isinstance(spec, dict):
            raise ValueError(f"schema: property {key!r} must be a dict, got {spec!r}")
        if "enum" in spec:
            options = spec["enum"]
            if (not isinstance(options, list) or not options
                    or not all(isinstance(o, str) for o in options)):
                raise ValueError(f"schema: property {key!r}: enum must be a non-empty list of "
                                 f"strings, got {options!r}")
            kind: Any = ("enum", tuple(sorted({json.dumps(o).encode() for o in options})))
        elif spec.get("type") in _SCHEMA_TYPES:
            kind = spec["type"]
        else:
            raise ValueError(f"schema: property {key!r} has unsupported type "
                             f"{spec.get('type')!r}; supported: {', '.join(_SCHEMA_TYPES)}, "
                             "or an enum of strings")
        fields.append((json.dumps(key).encode(), kind))
    return tuple(fields)


def _min_value(kind: Any, fields) -> int:
    """Bytes of the shortest value of ``kind``."""
    if kind is None or kind in ("integer", "number"):
        return 1
    if kind == "string":
        return 2
    if kind == "boolean":
        return 4
    if kind == "schema":
        return 2 + sum(len(k) + 1 + _min_value(t, fields) for k, t in fields) + max(
            len(fields) - 1, 0)
    return min(len(o) for o in kind[1])  # enum


class _Grammar:
    """The transition function and the shortest-completion cost for one (schema, depth)."""

    def __init__(self, schema: dict | None, max_depth: int) -> None:
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 0:
            raise ValueError(f"max_depth must be an int >= 0, got {max_depth!r}")
        if schema is not None and max_depth < 1:
            raise ValueError("a schema's object needs max_depth >= 1")
        self.fields = _compile_schema(schema)
        self.max_depth = max_depth
        self.key = (json.dumps(schema, sort_keys=True), max_depth)

    def start(self) -> State:
        return (VALUE, None if self.fields is None else "schema", 0, ())

    # -- transitions ----------------------------------------------------------------------

    def _field_kind(self, stack: tuple) -> Any:
        top = stack[-1] if stack else None
        return self.fields[top[1]][1] if isinstance(top, tuple) else None

    def _close(self, stack: tuple) -> State:
        return (AFTER, None, 0, stack[:-1])

    def _start_value(self, kind: Any, stack: tuple, b: int) -> State | None:
        """The first byte ``b`` of a value of ``kind``."""
        if kind == "schema":
            if b != 0x7B:  # {
                return None
            if not self.fields:
                return (AFTER, None, 0, (("S", -1),))
            return (SKEY, None, 0, (("S", 0),))
        if kind is None:
            if b in (0x7B, 0x5B):  # { [
                if len(stack) >= self.max_depth:
                    return None
                return (OBJ_FIRST if b == 0x7B else ARR_FIRST, None, 0, stack + (chr(b),))
            if b == 0x22:
                return (STR, ("after", 0), 0, stack)
            if b == 0x2D or b in _DIGITS:
                return self._start_number(b, False, stack)
            options = tuple(o for o in _LITERALS if o[0] == b)
            return (LIT, (options, 1, "after"), 0, stack) if options else None
        if kind == "string":
            return (STR, ("after", 0), 0, stack) if b == 0x22 else None
        if kind in ("integer", "number"):
            if b == 0x2D or b in _DIGITS:
                return self._start_number(b, kind == "integer", stack)
            return None
        options = (b"true", b"false") if kind == "boolean" else kind[1]
        options = tuple(o for o in options if o[0] == b)
        return (LIT, (options, 1, "after"), 0, stack) if options else None

    @staticmethod
    def _start_number(b: int, int_only: bool, stack: tuple) -> State:
        sub = "minus" if b == 0x2D else "zero" if b == 0x30 else "int"
        return (NUM, (sub, int_only), 0, stack)

    def step(self, state: State, b: int) -> State | None:
        mode, aux, ws, stack = state
        if mode == STR:
            then, sub = aux
            if sub == 0:  # the body
                if b == 0x22:
                    return (COLON, None, 0, stack) if then == "colon" else (AFTER, None, 0, stack)
                if b == 0x5C:
                    return (STR, (then, -1), 0, stack)
                return state if b >= 0x20 else None
            if sub == -1:  # after a backslash
                if b == 0x75:  # u
                    return (STR, (then, 4), 0, stack)
                return (STR, (then, 0), 0, stack) if b in _ESCAPES else None
            return (STR, (then, sub - 1 if sub > 1 else 0), 0, stack) if b in _HEX else None
        if mode == NUM:
            sub, int_only = aux
            nxt = None
            if b in _DIGITS:
                nxt = {"minus": "zero" if b == 0x30 else "int", "int": "int", "dot": "frac",
                       "frac": "frac", "e": "exp", "esign": "exp", "exp": "exp"}.get(sub)
            elif b == 0x2E and not int_only and sub in ("zero", "int"):
                nxt = "dot"
            elif b in (0x65, 0x45) and not int_only and sub in ("zero", "int", "frac"):
                nxt = "e"
            elif b in (0x2B, 0x2D) and sub == "e":
                nxt = "esign"
            if nxt is not None:
                return (NUM, (nxt, int_only), 0, stack)
            if sub not in _NUM_COMPLETE:
                return None
            # the number ends here; the byte belongs to what follows it
            return self.step((AFTER, None, 0, stack), b)
        if mode == LIT:
            options, pos, then = aux
            options = tuple(o for o in options if o[pos] == b)
            if not options:
                return None
            if len(options) == 1 and len(options[0]) == pos + 1:
                return (COLON, None, 0, stack) if then == "colon" else (AFTER, None, 0, stack)
            return (LIT, (options, pos + 1, then), 0, stack)
        # the gap modes: whitespace first
        if b in WS_BYTES:
            if ws >= WS_MAX or (mode == AFTER and not stack):
                return None
            return (mode, aux, ws + 1, stack)
        if mode == VALUE:
            return self._start_value(aux, stack, b)
        if mode == ARR_FIRST:
            return self._close(stack) if b == 0x5D else self._start_value(None, stack, b)
        if mode == OBJ_FIRST:
            if b == 0x7D:
                return self._close(stack)
            return (STR, ("colon", 0), 0, stack) if b == 0x22 else None
        if mode == KEY:
            return (STR, ("colon", 0), 0, stack) if b == 0x22 else None
        if mode == SKEY:
            key = self.fields[stack[-1][1]][0]
            return (LIT, ((key,), 1, "colon"), 0, stack) if b == key[0] else None
        if mode == COLON:
            return (VALUE, self._field_kind(stack), 0, stack) if b == 0x3A else None
        if mode == AFTER:
            if not stack:
                return None  # the top-level value is complete: only EOS
            top = stack[-1]
            if top == "{":
                return (KEY, None, 0, stack) if b == 0x2C else (
                    self._close(stack) if b == 0x7D else None)
            if top == "[":
                return (VALUE, None, 0, stack) if b == 0x2C else (
                    self._close(stack) if b == 0x5D else None)
            i = top[1]
            if i + 1 < len(self.fields):
                return (SKEY, None, 0, stack[:-1] + (("S", i + 1),)) if b == 0x2C else None
            return self._close(stack) if b == 0x7D else None
        raise AssertionError(f"unknown mode {mode!r}")

    def accepting(self, state: State) -> bool:
        mode, aux, _, stack = state
        if stack:
            return False
        return mode == AFTER or (mode == NUM and aux[0] in _NUM_COMPLETE)

    # -- the shortest completion ---------------------------------------------------------

    def min_to_close(self, state: State) -> int:
        """Fewest bytes after which ``state`` is accepting (0 when it already is)."""
        mode, aux, _, stack = state
        fields = self.fields
        total = 0
        for frame in stack:
            if isinstance(frame, tuple):
                total += 1 + sum(1 + len(k) + 1 + _min_value(t, fields)
                                 for k, t in fields[frame[1] + 1:])
            else:
                total += 1
        if mode == VALUE:
            return total + _min_value(aux, fields)
        if mode in (ARR_FIRST, OBJ_FIRST, AFTER):
            return total
        if mode == KEY:
            return total + 4  # "":0
        if mode == SKEY:
            key, kind = fields[stack[-1][1]]
            return total + len(key) + 1 + _min_value(kind, fields)
        if mode == COLON:
            return total + 1 + _min_value(self._field_kind(stack), fields)
        if mode == STR:
            then, sub = aux
            local = 1 if sub == 0 else 2 if sub == -1 else sub + 1
            return total + local + (2 if then == "colon" else 0)
        if mode == NUM:
            return total + (0 if aux[0] in _NUM_COMPLETE else 1)
        if mode == LIT:
            options, pos, then = aux
            local = min(len(o) for o in options) - pos
            if then == "colon":
                local += 1 + _min_value(self._field_kind(stack), fields)
            return total + local
        raise AssertionError(f"unknown mode {mode!r}")


# -- the byte-level machine --------------------------------------------------------------------


class JsonMachine:
    """A pushdown recogniser for JSON over bytes (see the stub for the contract)."""

    def __init__(self, schema: dict | None = None, max_depth: int = 8,
                 max_len: int | None = None) -> None:
        self._grammar = _Grammar(schema, max_depth)
        self._state = self._grammar.start()
        self._len = 0
        self._done = False
        if max_len is not None:
            shortest = self._grammar.min_to_close(self._state)
            if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < shortest:
                raise ValueError(f"max_len={max_len!r} cannot hold the shortest document "
                                 f"({shortest} bytes)")
        self.max_len = max_len

    @property
    def depth(self) -> int:
        return len(self._state[3])

    def _fits(self, state: State, extra: int) -> bool:
        if self.max_len is None:
            return True
        return self._len + extra + self._grammar.min_to_close(state) <= self.max_len

    def allowed(self) -> frozenset[int]:
        if self._done:
            return frozenset()
        out = {b for b in range(256)
               if (s := self._grammar.step(self._state, b)) is not None and self._fits(s, 1)}
        if self._grammar.accepting(self._state):
            out.add(EOS)
        return frozenset(out)

    def feed(self, byte: int) -> None:
        if self._done:
            raise ValueError("feed: the machine already accepted EOS")
        if byte == EOS:
            if not self._grammar.accepting(self._state):
                raise ValueError("feed: EOS before the JSON value is complete")
            self._done = True
            return
        if not isinstance(byte, int) or not 0 <= byte < 256:
            raise ValueError(f"feed: expected a byte 0..255 or EOS, got {byte!r}")
        nxt = self._grammar.step(self._state, byte)
        if nxt is None:
            raise ValueError(f"feed: byte {bytes([byte])!r} is illegal here")
        if not self._fits(nxt, 1):
            raise ValueError(f"feed: byte {bytes([byte])!r} leaves too few of the "
                             f"{self.max_len} bytes to close the document")
        self._state = nxt
        self._len += 1

    def accepting(self) -> bool:
        return not self._done and self._grammar.accepting(self._state)

    def min_to_close(self) -> int:
        return 0 if self._done else self._grammar.min_to_close(self._state)

    def copy(self) -> JsonMachine:
        twin = object.__new__(JsonMachine)
        twin.__dict__.update(self.__dict__)
        return twin


# -- lifting to tokens ------------------------------------------------------------------------

_PLAIN = frozenset(b for b in range(0x20, 256) if b not in (0x22, 0x5C))
_VOCABS: dict[int, tuple] = {}
_MASKS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _build_trie(tokens: list[tuple[int, bytes]]) -> dict:
    """Nested dicts ``{byte: child}``; key ``-1`` lists the token ids that end at a node."""
    root: dict = {}
    for tid, tok in tokens:
        node = root
        for b in tok:
            node = node.setdefault(b, {})
        node.setdefault(-1, []).append(tid)
    return root


def _index(vocab_bytes: Sequence[bytes]) -> tuple:
    """Per vocabulary, built once: ``(vocab, full trie, trie of the tokens that are not plain
    string text, plain ids, plain lengths)``. A plain token (no quote, backslash or control
    byte) leaves a string body exactly where it found it: the context-independent part."""
    cached = _VOCABS.get(id(vocab_bytes))
    if cached is not None and cached[0] is vocab_bytes:
        return cached
    tokens = [(tid, tok) for tid, tok in enumerate(vocab_bytes) if tok]  # specials spell nothing
    plain = [(tid, tok) for tid, tok in tokens if _PLAIN.issuperset(tok)]
    plain_ids = {tid for tid, _ in plain}
    entry = (
        vocab_bytes,
        _build_trie(tokens),
        _build_trie([(tid, tok) for tid, tok in tokens if tid not in plain_ids]),
        np.asarray([tid for tid, _ in plain], dtype=np.int64),
        np.asarray([len(tok) for _, tok in plain], dtype=np.int64),
    )
    _VOCABS[id(vocab_bytes)] = entry
    return entry


class JsonMatcher:
    """One request's JSON constraint over a token vocabulary (the ``GrammarMatcher`` protocol)."""

    def __init__(self, schema: dict | None, vocab_bytes: Sequence[bytes], eos_token_id: int,
                 max_depth: int = 8, max_len: int | None = None) -> None:
        if not 0 <= eos_token_id < len(vocab_bytes):
            raise ValueError(f"eos_token_id {eos_token_id} is outside the vocabulary of "
                             f"{len(vocab_bytes)} tokens")
        self.machine = JsonMachine(schema, max_depth, max_len)
        self.vocab_bytes = vocab_bytes
        self.eos_token_id = eos_token_id
        self._index = _index(vocab_bytes)
        self._cache_key = (id(vocab_bytes), self.machine._grammar.key)
        self.walks = 0  # states walked through the whole trie (cache misses)

    def _walk(self, state: State) -> tuple[np.ndarray, np.ndarray]:
        """Every token that survives from ``state``: ids, and bytes it commits the output to
        (its own length plus the shortest completion after it)."""
        key = self._cache_key + (state,)
        hit = _MASKS.get(key)
        if hit is not None:
            return hit
        self.walks += 1
        grammar = self.machine._grammar
        step, cost = grammar.step, grammar.min_to_close
        _, trie, rest_trie, plain_ids, plain_lens = self._index
        ids: list[int] = []
        need: list[int] = []
        head_ids, head_need = [], []
        if state[0] == STR and state[1][1] == 0:
            # a string body: every plain token loops back to this very state
            head_ids, head_need = [plain_ids], [plain_lens + cost(state)]
            trie = rest_trie
        todo = [(trie, state, 0)]
        while todo:
            node, s, depth = todo.pop()
            for b, child in node.items():
                if b == -1:
                    c = depth + cost(s)
                    ids.extend(child)
                    need.extend([c] * len(child))
                    continue
                s2 = step(s, b)
                if s2 is not None:
                    todo.append((child, s2, depth + 1))
        result = (np.concatenate(head_ids + [np.asarray(ids, dtype=np.int64)]),
                  np.concatenate(head_need + [np.asarray(need, dtype=np.int64)]))
        _MASKS[key] = result
        return result

    def allowed_tokens(self) -> np.ndarray:
        mask = np.zeros(len(self.vocab_bytes), dtype=bool)
        m = self.machine
        if m._done:
            return mask
        ids, need = self._walk(m._state)
        if m.max_len is not None:
            ids = ids[need <= m.max_len - m._len]
        mask[ids] = True
        if m.accepting():
            mask[self.eos_token_id] = True
        return mask

    def accept_token(self, token_id: int) -> None:
        if not self.allowed_tokens()[token_id]:
            raise ValueError(f"accept_token: token {token_id} "
                             f"({self.vocab_bytes[token_id]!r}) is not allowed here")
        if token_id == self.eos_token_id:
            self.machine.feed(EOS)
            return
        for b in self.vocab_bytes[token_id]:
            self.machine.feed(b)

    def is_terminated(self) -> bool:
        return self.machine._done


# -- a tiny engine loop -----------------------------------------------------------------------


def constrained_generate(
    matcher: JsonMatcher,
    scores: Callable[[list[int]], np.ndarray],
    max_tokens: int,
) -> tuple[list[int], str]:
    """Greedy decoding under the mask: ``(token ids, finish_reason)``."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    out: list[int] = []
    for _ in range(max_tokens):
        mask = matcher.allowed_tokens()
        if not mask.any():
            raise RuntimeError("constrained_generate: the matcher allows no token (dead end)")
        logits = np.where(mask, np.asarray(scores(out), dtype=np.float64), -np.inf)
        token = int(np.argmax(logits))
        matcher.accept_token(token)
        if token == matcher.eos_token_id:
            return out, "stop"
        out.append(token)
    return out, "length"
