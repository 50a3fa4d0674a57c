"""Provided for kata 09-04: the broken shared-generator sampler (the control the tests run) and
an adapter that plugs a per-request sampler into mini_vllm's engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _draw(rng: np.random.Generator, logits: np.ndarray, temperature: float) -> int:
    """One token: argmax at temperature 0, else one ``choice`` draw from softmax(logits / T)."""
    row = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(row))
    z = row / temperature
    probs = np.exp(z - np.max(z))
    probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


class SharedRngSampler:
    """The natural first attempt, kept broken on purpose: one generator for every request.

    Same API as the kata's ``PerRequestSampler``. It reproduces a seeded request only when the
    whole batch reproduces: whoever samples before you in a step takes numbers from your
    stream. The ``seed`` arguments are accepted and ignored; the generator is seeded once.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, request_id: str, logits: np.ndarray, temperature: float,
               seed: int | None = None) -> int:
        return _draw(self.rng, logits, temperature)

    def sample_batch(self, request_ids: Sequence[str], logits: np.ndarray,
                     temperatures: Sequence[float], seeds: Sequence[int | None]) -> list[int]:
        return [_draw(self.rng, row, t) for row, t in zip(logits, temperatures, strict=True)]

    def finish(self, request_id: str) -> None:
        pass


class EngineSampler:
    """Adapts a ``PerRequestSampler`` to ``LLMEngine(sampler=...)``.

    The engine calls ``sample(logits, params, request=request)`` once for every request that
    samples in a step (a request in the middle of a chunked prefill, or waiting after a
    preemption, is not called). This forwards the request's id, temperature and seed. Only
    temperature and seed are supported: any other sampling knob raises ``ValueError``.
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.num_calls = 0

    def sample(self, logits: Any, params: Any, request: Any = None) -> int:
        if request is None:
            raise ValueError("EngineSampler needs the request: sample(logits, params, request=...)")
        off = {"top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
               "presence_penalty": 0.0, "frequency_penalty": 0.0, "bad_words": None,
               "min_tokens": 0, "logit_bias": None}
        on = [k for k, v in off.items() if getattr(params, k, v) != v]
        if getattr(params, "top_k", 0) > 0:
            on.append("top_k")
        if on:
            raise ValueError(f"this kata's sampler handles temperature and seed only; set {on}")
        self.num_calls += 1
        return int(self.sampler.sample(request.request_id, logits, params.temperature,
                                       params.seed))
