"""What the lab gives you: a KV work meter and a deterministic stand-in for the model.

Neither piece is your work. ``KVWork`` counts how many times a token's keys and values are
computed; ``next_token`` plays the model, mapping a whole context to the next token id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

VOCAB_SIZE = 1024
"""Token ids produced by :func:`next_token` lie in ``range(VOCAB_SIZE)``."""

# A Mersenne prime modulus and an odd multiplier: a polynomial hash over the token ids.
# Python's built-in hash() is salted per process for str; this one is the same everywhere.
_MODULUS = (1 << 61) - 1
_MULTIPLIER = 1_000_003


@dataclass
class KVWork:
    """Counts K/V computations: one unit each time a token's keys and values are produced.

    ``units`` is the running total. ``computed`` records every call as ``(token, position)``
    in call order, so a test can check *which* K/V were computed, not only how many.
    """

    units: int = 0
    computed: list[tuple[int, int]] = field(default_factory=list)

    def compute_kv(self, token: int, position: int) -> None:
        """Compute (and pay for) the keys and values of ``token`` at ``position``."""
        self.units += 1
        self.computed.append((token, position))


def next_token(tokens: Sequence[int]) -> int:
    """The model: the next token id for this context, a pure function of the whole list.

    Deterministic across calls and processes, so two generation strategies that feed it the
    same contexts produce the same tokens.
    """
    h = 0
    for t in tokens:
        h = (h * _MULTIPLIER + int(t) + 1) % _MODULUS
    return h % VOCAB_SIZE
