"""Sampler: one logits row -> one token id, with temperature, top-k and top-p.

Upstream twin: ``vllm/v1/sample/sampler.py: Sampler`` (batched on the GPU; the top-k/top-p
semantics live in ``vllm/v1/sample/ops/topk_topp_sampler.py``). Ours is scalar and readable.

The pipeline, in an order that is observable and therefore part of the contract (lab 00-03's
learner sampler must agree with this one token for token):

1. ``temperature == 0``: ``argmax`` (numpy picks the lowest index on ties). No RNG is created or
   consumed, and top_k / top_p / seed are ignored.
2. ``logits / temperature``.
3. top-k: keep every logit ``>=`` the k-th largest (ties at the boundary survive, as upstream);
   the rest become ``-inf``. Disabled when ``k <= 0`` or ``k >= vocab``.
4. top-p over the softmax of what survived top-k: sort by descending probability (stable, so
   equal probabilities keep index order), keep the shortest prefix whose cumulative sum reaches
   ``p``; the token that crosses ``p`` is kept. Disabled when ``p >= 1``.
5. softmax (max-subtracted, so logits of 1000+ do not overflow) over the survivors.
6. exactly one draw: ``int(np.random.default_rng(seed).choice(len(probs), p=probs))``.

Trap, stated once: the generator is created per call from ``params.seed``. With a fixed seed every
step of a request reuses the same uniform number; that is reproducible (what the tests need) but
not a proper per-request random stream. Real vLLM keeps one generator per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """A probability vector; subtracting the max first keeps ``exp`` finite."""
    x = np.asarray(logits, dtype=np.float64)
    z = np.exp(x - np.max(x))
    return z / z.sum()


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Mask all but the k largest logits with -inf (boundary ties survive)."""
    x = np.asarray(logits, dtype=np.float64)
    if k <= 0 or k >= x.size:
        return x
    # np.partition is O(vocab); a full sort would be O(vocab log vocab) per token.
    kth_largest = np.partition(x, x.size - k)[x.size - k]
    return np.where(x >= kth_largest, x, -np.inf)


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Mask all but the smallest nucleus whose probability mass reaches p (crossing token kept)."""
    x = np.asarray(logits, dtype=np.float64)
    if p >= 1.0:
        return x
    probs = softmax(x)
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    # First index whose running mass is >= p; rounding can leave the total a hair under p,
    # in which case everything is kept (the clamp), never nothing.
    cut = min(int(np.searchsorted(cumulative, p, side="left")), x.size - 1)
    keep = np.zeros(x.size, dtype=bool)
    keep[order[: cut + 1]] = True
    return np.where(keep, x, -np.inf)


class Sampler:
    """``sample(logits, params) -> int``; ``params`` needs temperature, top_k, top_p, seed."""

    def sample(self, logits: np.ndarray, params: Any) -> int:
        x = np.asarray(logits, dtype=np.float64)
        if params.temperature == 0.0:
            return int(np.argmax(x))
        x = x / params.temperature
        x = apply_top_k(x, params.top_k)
        x = apply_top_p(x, params.top_p)
        probs = softmax(x)
        rng = np.random.default_rng(params.seed)
        return int(rng.choice(probs.size, p=probs))

    __call__ = sample
