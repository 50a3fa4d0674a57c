"""Kata 00-03 — from logits to a token. Your work goes here.

Build the sampler one knob at a time: a stable softmax, top-k and top-p masks, then ``sample``,
which chains them in the engine's order so that your sampler agrees token for token with
``mini_vllm``'s. Work in float64; never modify the caller's array.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Turn a 1-D row of logits into probabilities that sum to 1.

    Subtract the row's maximum before ``np.exp`` so that logits of 1000 or more do not
    overflow; the result is mathematically unchanged. ``-inf`` logits get probability 0.
    """
    raise NotImplementedError("softmax: exp(logits - max) / sum, in float64")


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Return a copy of ``logits`` with everything outside the ``k`` largest set to ``-inf``.

    Logits equal to the k-th largest value all survive (as upstream). ``k <= 0`` or
    ``k >= len(logits)`` disables the filter: return the logits unchanged.
    Hint: ``np.partition`` finds the k-th largest value without a full sort.
    """
    raise NotImplementedError("apply_top_k: keep logits >= the k-th largest, -inf elsewhere")


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Return a copy of ``logits`` keeping only the nucleus: the fewest tokens whose mass >= p.

    Take the softmax, order tokens by descending probability (stable: equal probabilities keep
    index order), and keep the shortest prefix whose running sum reaches ``p`` — the token that
    crosses ``p`` is kept. Everything else becomes ``-inf``. At least one token always survives.
    ``p >= 1`` disables the filter: return the logits unchanged.
    """
    raise NotImplementedError("apply_top_p: keep the fewest top tokens whose mass reaches p")


def sample(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> int:
    """Pick one token id from ``logits``.

    The order is part of the contract:

    1. ``temperature == 0``: return ``argmax`` (lowest index on ties) — no RNG at all, and
       ``top_k``, ``top_p`` and ``seed`` are ignored whatever their values.
    2. A negative temperature is an error (``ValueError``).
    3. Divide the logits by ``temperature``; apply top-k, then top-p; take the softmax.
    4. Draw exactly once: ``np.random.default_rng(seed).choice(len(probs), p=probs)``.
    """
    raise NotImplementedError("sample: greedy at T=0, else /T -> top-k -> top-p -> softmax -> draw")
