"""Reference for kata 00-03 — greedy, temperature, top-k and top-p over one logits row.

Written independently of ``mini_vllm/sampler.py`` but to the same contract, so the kata's
agreement test cross-checks two implementations rather than one against itself.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, stable for large magnitudes; ``-inf`` maps to exactly 0."""
    x = np.asarray(logits, dtype=np.float64)
    # exp(x - max) / sum(...) equals exp(x) / sum(exp(x)) but never overflows: the largest
    # exponent is exp(0) = 1.
    shifted = np.exp(x - x.max())
    return shifted / shifted.sum()


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest logits (ties at the k-th value included); mask the rest."""
    x = np.array(logits, dtype=np.float64)  # a copy: the caller's row is never touched
    vocab = x.size
    if k <= 0 or k >= vocab:
        return x
    # np.partition places the k-th largest value at index vocab - k in O(vocab) time.
    threshold = np.partition(x, vocab - k)[vocab - k]
    x[x < threshold] = -np.inf
    return x


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most-likely tokens whose probability mass reaches ``p``."""
    x = np.array(logits, dtype=np.float64)
    if p >= 1.0:
        return x
    probs = softmax(x)
    # Stable sort on -probs: most likely first, equal probabilities in index order.
    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order])
    # The first position whose running mass is >= p is the crossing token, and it is kept.
    # Rounding can leave the total a hair below p; then keep all (never none).
    crossing = min(int(np.searchsorted(mass, p, side="left")), x.size - 1)
    x[order[crossing + 1 :]] = -np.inf
    return x


def sample(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> int:
    """One token id: greedy at ``temperature == 0``, otherwise one seeded draw."""
    x = np.asarray(logits, dtype=np.float64)
    if temperature == 0.0:
        # Checked before anything else so that greedy is exact, consumes no randomness, and
        # cannot be disturbed by any other knob. np.argmax returns the lowest tied index.
        return int(np.argmax(x))
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    # Temperature before the filters: it reshapes the distribution top-p measures.
    x = x / temperature
    x = apply_top_k(x, top_k)
    x = apply_top_p(x, top_p)  # the nucleus is taken over what top-k left
    probs = softmax(x)
    # Exactly one draw from a fresh generator: the same call mini_vllm's Sampler makes, so a
    # given seed picks the same token in both.
    return int(np.random.default_rng(seed).choice(probs.size, p=probs))
