"""Per-request random generators, opt-in: ``LLMEngine(generators="per_request")``.

Upstream twins: ``vllm/v1/worker/gpu_input_batch.py: InputBatch.generators`` (one
``torch.Generator`` per seeded row of the persistent batch) and
``vllm/v1/worker/gpu_model_runner.py: GPUModelRunner._update_states``, which makes the generator
once, from ``SamplingParams.seed``, when a request with ``SamplingType.RANDOM_SEED`` first
arrives (``CachedRequestState.generator``), keeps it in the cached state while the request is
preempted or simply not scheduled (only the persistent-batch row is removed), and drops it with
the cached state when the request finishes. ``vllm/v1/sample/ops/topk_topp_sampler.py:
random_sample`` then draws each seeded row from its own generator and every other row from the
global one.

Here: :class:`RequestGenerators` is that state, keyed by request id (upstream keys the batch's
copy by row and moves it when rows move; an id cannot be forgotten in a move).
:class:`GeneratorSampler` plugs it into the engine's sampler: the engine calls
``sample(logits, params, request=...)`` for each request that samples in a step, and the wrapped
sampler gets ``generator=`` the request's own generator (seeded, temperature > 0), the engine's
shared generator (unseeded, temperature > 0) or ``None`` (greedy: nothing is drawn).

What follows, and what ``mini_vllm/tests/test_generators.py`` proves on the tiny Llama:

* a seeded request's tokens are a function of its seed and its own logits only: the same alone
  or in any batch, in any arrival order, chunked or not, with prefix hits or not;
* preemption (recompute) does not change them: the recomputed tokens are not sampled again, and
  the generator waits, unadvanced, until the request samples its next token (as upstream, whose
  cached request state outlives a preemption);
* two draws of one request come from one stream (the per-call sampler instead reuses its first
  uniform number at every step).

Unseeded requests are reproducible only together with the batch around them, as upstream.
The draw itself stays mini_vllm's ``generator.choice(vocab, p=probs)`` (one uniform number per
token), not upstream's exponential race, so tokens do not match vLLM's seed for seed.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np


def _is_seeded_random(params: Any) -> bool:
    """Upstream's ``SamplingType.RANDOM_SEED``: temperature > 0 and a seed."""
    return params.temperature != 0.0 and params.seed is not None


class RequestGenerators:
    """One ``np.random.Generator`` per live seeded request, plus the engine's shared one.

    ``generators``: request id -> its generator (seeded requests at temperature > 0 only).
    ``shared``: ``np.random.default_rng(seed)``, drawn by every unseeded request in the order the
    engine samples them.
    """

    def __init__(self, seed: int = 0) -> None:
        self.generators: dict[str, np.random.Generator] = {}
        self.shared = np.random.default_rng(seed)

    def add(self, request_id: str, params: Any) -> None:
        """The request was accepted: make its generator now if it is a seeded random one.

        An id that comes back after its request finished gets a fresh generator.
        """
        if _is_seeded_random(params):
            self.generators[request_id] = np.random.default_rng(params.seed)

    def get(self, request_id: str, params: Any) -> np.random.Generator | None:
        """The generator this request draws from now; ``None`` at temperature 0."""
        if params.temperature == 0.0:
            return None
        if params.seed is None:
            return self.shared
        generator = self.generators.get(request_id)
        if generator is None:  # a request queued behind the engine's back (scheduler.add_request)
            generator = self.generators[request_id] = np.random.default_rng(params.seed)
        return generator

    def finish(self, request_id: str) -> None:
        """Drop a finished (or aborted) request's generator; unknown ids are ignored."""
        self.generators.pop(request_id, None)


def _accepts(method: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


class GeneratorSampler:
    """The engine's sampler under ``generators="per_request"``: wraps ``sampler``, whose
    ``sample`` must accept a ``generator`` keyword (the stock :class:`mini_vllm.Sampler` does),
    and hands it the request's generator from ``generators``.

    ``sample(logits, params, request=None)``: ``request`` is needed for any row that draws
    (temperature > 0), because the generator belongs to the request; ``ValueError`` without it.
    """

    def __init__(self, sampler: Any, generators: RequestGenerators) -> None:
        if not _accepts(sampler.sample, "generator"):
            raise ValueError(
                f"generators='per_request' hands each request's generator to the sampler as "
                f"sample(..., generator=...); {sampler!r} does not accept it: use the stock "
                f"Sampler, or a sampler that keeps its own per-request state under 'per_call'"
            )
        self.sampler = sampler
        self.generators = generators
        self._takes_request = _accepts(sampler.sample, "request")

    def sample(self, logits: Any, params: Any, request: Any = None) -> int:
        if request is None:
            if params.temperature != 0.0:
                raise ValueError("a per-request generator needs the request: call "
                                 "sample(logits, params, request=request)")
            generator = None
        else:
            generator = self.generators.get(request.request_id, params)
        kwargs: dict[str, Any] = {"generator": generator}
        if self._takes_request and request is not None:
            kwargs["request"] = request
        return self.sampler.sample(logits, params, **kwargs)

    __call__ = sample
