"""Kata 12-03 — JSON needs a stack: a pushdown recogniser over bytes, lifted to a token mask.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase12/json_pushdown_mask``.

The language (the JSON subset of this kata), over BYTES:

* a value is an object ``{"k": v, ...}``, an array ``[v, ...]``, a string, a number, ``true``,
  ``false`` or ``null``;
* strings: any byte ``>= 0x20`` except ``"`` and ``\\``, plus the escapes ``\\" \\\\ \\/ \\b
  \\f \\n \\r \\t`` and ``\\uXXXX`` (four hex digits); bytes ``>= 0x80`` pass unchecked;
* numbers: ``-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`` — no ``01``, no ``1.``,
  no ``.5``, no ``+1``;
* depth: at most ``max_depth`` containers open at once; an opener that would go deeper is
  illegal;
* whitespace: only a space or a newline, and at most ``WS_MAX`` (one) of them in a row, only
  where JSON allows whitespace (before and after ``{ } [ ] , :`` and around values), never
  after the top-level value is complete: once it closes, only EOS may follow.

Schema mode (``schema`` not ``None``): the document is one object whose keys are exactly the
schema's properties, in the order the schema lists them, written as ``json.dumps(key)``; each
value has the property's type: ``"string"``, ``"integer"`` (a number without fraction or
exponent), ``"number"``, ``"boolean"``, or ``{"enum": [str, ...]}`` (one of those strings,
written as ``json.dumps`` writes it). Every property must be required. Anything else
(nested types, optional keys, non-string enums) is a ``ValueError`` at construction.

Length budget (``max_len`` not ``None``): the whole text may be at most ``max_len`` bytes, and a
byte is legal only if the document can still be completed within the budget after it. So the
budget forces the output to close in time, and every path the mask leaves open ends in a
complete document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: The end-of-sequence symbol of the byte-level machine (not a byte: bytes are 0..255).
EOS: int = 256
#: Whitespace bytes allowed in a gap (between structural bytes), and how many in a row.
WS_BYTES: frozenset[int] = frozenset(b" \n")
WS_MAX: int = 1


class JsonMachine:
    """A pushdown recogniser for the language above, fed one byte at a time.

    ``JsonMachine(schema=None, max_depth=8, max_len=None)``. ``ValueError`` for a negative
    ``max_depth``, an unsupported schema, or a ``max_len`` too small for the shortest document
    (for example 39 bytes for a schema with keys name/age/ok/c of types string/integer/
    boolean/enum["red", "green"]).
    """

    def __init__(self, schema: dict | None = None, max_depth: int = 8,
                 max_len: int | None = None) -> None:
        raise NotImplementedError("JsonMachine: a pushdown recogniser for JSON")

    @property
    def depth(self) -> int:
        """How many containers are open right now (0 before the first ``{`` / ``[``)."""
        raise NotImplementedError("JsonMachine.depth: the height of the stack")

    def allowed(self) -> frozenset[int]:
        """Every byte legal next (within the budget, if any), plus ``EOS`` exactly when the text
        so far is a complete document. Empty after EOS was fed."""
        raise NotImplementedError("JsonMachine.allowed: the bytes legal next")

    def feed(self, byte: int) -> None:
        """Advance by one byte (0..255) or ``EOS``.

        ``ValueError`` if the byte is not in ``allowed()`` (the machine doubles as a
        validator); a rejected feed leaves the machine unchanged.
        """
        raise NotImplementedError("JsonMachine.feed: advance by one byte")

    def accepting(self) -> bool:
        """True when the text so far is a complete document (EOS would be legal)."""
        raise NotImplementedError("JsonMachine.accepting: is the document complete")

    def min_to_close(self) -> int:
        """The fewest bytes that complete the document from here (0 when accepting).

        Worked numbers: after ``{"`` it is 4 (``":0}``); after ``[{"a":[`` it is 3 (``]}]``);
        after ``"\\u0`` it is 4 (three hex digits and the quote).
        """
        raise NotImplementedError("JsonMachine.min_to_close: the shortest completion")

    def copy(self) -> JsonMachine:
        """An independent machine in the same state (a checkpoint: feeding one never moves
        the other)."""
        raise NotImplementedError("JsonMachine.copy: checkpoint the machine")


class JsonMatcher:
    """One request's JSON constraint over a token vocabulary: mini_vllm's ``GrammarMatcher``.

    ``vocab_bytes[i]`` is token ``i``'s bytes; ``b""`` marks a special token, which is never
    allowed except ``eos_token_id``. A token is allowed exactly when ALL its bytes, fed in
    order from the current state, are legal (budget included); EOS exactly when the text so
    far is a complete document. ``ValueError`` for an ``eos_token_id`` outside the vocabulary
    and for the same bad arguments as :class:`JsonMachine`.

    ``JsonMatcher(schema, vocab_bytes, eos_token_id, max_depth=8, max_len=None)``.
    """

    def __init__(self, schema: dict | None, vocab_bytes: Sequence[bytes], eos_token_id: int,
                 max_depth: int = 8, max_len: int | None = None) -> None:
        raise NotImplementedError("JsonMatcher: lift the byte machine to tokens")

    def allowed_tokens(self) -> np.ndarray:
        """bool ``[len(vocab_bytes)]``: the tokens legal next; all False once terminated."""
        raise NotImplementedError("JsonMatcher.allowed_tokens: the mask for the next token")

    def accept_token(self, token_id: int) -> None:
        """Advance by one token; ``ValueError`` if it is not allowed (state unchanged)."""
        raise NotImplementedError("JsonMatcher.accept_token: advance by one token")

    def is_terminated(self) -> bool:
        """True once EOS was accepted."""
        raise NotImplementedError("JsonMatcher.is_terminated: was EOS accepted")


def constrained_generate(
    matcher: JsonMatcher,
    scores: Callable[[list[int]], np.ndarray],
    max_tokens: int,
) -> tuple[list[int], str]:
    """Greedy decoding under the mask, the engine loop in miniature.

    ``scores(tokens_so_far)`` returns one score per vocabulary token (a fake model). Each step
    picks the highest-scoring ALLOWED token (ties: the lowest id) and advances the matcher.
    Returns ``(token ids without the EOS, finish_reason)``: ``"stop"`` when EOS was picked,
    ``"length"`` after ``max_tokens`` tokens without it (EOS counts as a token). ``ValueError``
    for ``max_tokens < 1``.
    """
    raise NotImplementedError("constrained_generate: greedy decoding under the mask")
