"""Reference for kata 09-01: the sampling ops, a logits-processor pipeline, and the course's
ordered sampler.

Written independently of ``mini_vllm/sampler.py``. The order here is the course's (min-p last);
mini_vllm follows vLLM (min-p right after temperature). They agree unless top-p and min-p are
both switched on, which the kata's tests show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Processor = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits; ``-inf`` becomes exactly 0, large logits do not overflow."""
    x = np.asarray(logits, dtype=np.float64)
    z = np.exp(x - x.max())
    return z / z.sum()


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``logits / temperature`` as a new array (``temperature > 0``)."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0 to scale logits, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / temperature


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep every logit >= the k-th largest (boundary ties survive); mask the rest."""
    x = np.array(logits, dtype=np.float64)  # a copy: the caller's row is never touched
    if k <= 0 or k >= x.size:
        return x
    threshold = np.partition(x, x.size - k)[x.size - k]
    x[x < threshold] = -np.inf
    return x


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the shortest most-likely prefix whose mass reaches ``p`` (crossing token kept)."""
    x = np.array(logits, dtype=np.float64)
    if p >= 1.0:
        return x
    probs = softmax(x)
    order = np.argsort(-probs, kind="stable")  # equal probabilities stay in index order
    mass = np.cumsum(probs[order])
    # The first position whose running mass reaches p is the crossing token: kept. If rounding
    # leaves the total a hair below p, keep everything rather than nothing.
    crossing = min(int(np.searchsorted(mass, p, side="left")), x.size - 1)
    x[order[crossing + 1 :]] = -np.inf
    return x


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens whose probability is >= ``min_p`` times the largest one; mask the rest."""
    x = np.array(logits, dtype=np.float64)
    if min_p <= 0.0:
        return x
    probs = softmax(x)
    x[probs < min_p * probs.max()] = -np.inf
    return x


def apply_repetition_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Push down every distinct token in ``generated_token_ids`` once (CTRL's asymmetric form)."""
    x = np.array(logits, dtype=np.float64)
    if penalty == 1.0:
        return x
    seen = np.unique(np.asarray(list(generated_token_ids), dtype=np.int64))
    # Dividing a negative logit would raise it; multiplying pushes it down as well.
    x[seen] = np.where(x[seen] > 0, x[seen] / penalty, x[seen] * penalty)
    return x


def apply_presence_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Subtract ``penalty`` once from every token that appears in ``generated_token_ids``."""
    x = np.array(logits, dtype=np.float64)
    seen = np.unique(np.asarray(list(generated_token_ids), dtype=np.int64))
    x[seen] -= penalty
    return x


def apply_frequency_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Subtract ``penalty`` times its number of occurrences from every generated token."""
    x = np.array(logits, dtype=np.float64)
    counts = np.bincount(np.asarray(list(generated_token_ids), dtype=np.int64), minlength=x.size)
    return x - penalty * counts


class Pipeline:
    """An ordered list of ``(logits, ctx) -> logits`` processors, run first to last."""

    def __init__(self, processors: Sequence[Processor] = ()) -> None:
        self.processors = list(processors)

    def __call__(self, logits: np.ndarray, ctx: Mapping[str, Any]) -> np.ndarray:
        x = np.array(logits, dtype=np.float64)
        for processor in self.processors:
            x = np.asarray(processor(x, ctx), dtype=np.float64)  # each sees the previous output
        return x


class MinTokensProcessor:
    """Mask EOS while fewer than ``min_tokens`` tokens were generated."""

    def __init__(self, min_tokens: int, eos_token_id: int) -> None:
        self.min_tokens = min_tokens
        self.eos_token_id = eos_token_id

    def __call__(self, logits: np.ndarray, ctx: Mapping[str, Any]) -> np.ndarray:
        x = np.array(logits, dtype=np.float64)
        if len(ctx["generated"]) < self.min_tokens:
            x[self.eos_token_id] = -np.inf
        return x


def sampling_probs(
    logits: np.ndarray,
    params: Any,
    generated: Sequence[int] = (),
    processors: Sequence[Processor] = (),
) -> np.ndarray:
    """The distribution ``sample`` draws from, in the course's order (one-hot when greedy)."""
    ctx = {"generated": list(generated)}  # a private copy: nothing can reach the caller's list
    x = Pipeline(processors)(logits, ctx)
    x = apply_repetition_penalty(x, ctx["generated"], params.repetition_penalty)
    if params.temperature == 0.0:
        # Greedy comes after the processors and the penalty, before every truncation.
        probs = np.zeros(x.size)
        probs[int(np.argmax(x))] = 1.0
        return probs
    x = apply_temperature(x, params.temperature)
    x = apply_top_k(x, params.top_k)
    x = apply_top_p(x, params.top_p)
    x = apply_min_p(x, params.min_p)  # on what top-k and top-p left: the course's order
    return softmax(x)


def sample(
    logits: np.ndarray,
    params: Any,
    generated: Sequence[int] = (),
    processors: Sequence[Processor] = (),
) -> int:
    """One token id: the argmax when greedy, otherwise one seeded draw."""
    probs = sampling_probs(logits, params, generated, processors)
    if params.temperature == 0.0:
        return int(np.argmax(probs))
    return int(np.random.default_rng(params.seed).choice(probs.size, p=probs))
