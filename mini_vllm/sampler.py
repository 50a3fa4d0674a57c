"""Sampler: one logits row -> one token id, with temperature, top-k, top-p and (phase 09)
min-p, penalties, bad words, min_tokens and logit bias.

Upstream twin: ``vllm/v1/sample/sampler.py: Sampler`` (batched on the GPU; the top-k/top-p
semantics live in ``vllm/v1/sample/ops/topk_topp_sampler.py``). Ours is scalar and readable.

The pipeline, in an order that is observable and therefore part of the contract (lab 00-03's
learner sampler must agree with this one token for token):

0. Logits processing (phase 09; every knob defaults to off, and then the row is untouched), in
   vLLM's order (``Sampler.apply_logits_processors``): bad words -> min_tokens -> logit bias ->
   penalties (repetition, frequency, presence; see ``mini_vllm/sample/``). These run for greedy
   requests too. Bad words, min_tokens and the penalties read the request's tokens, so they
   need ``sample(..., request=...)``, which the engine passes to any sampler whose ``sample``
   accepts a ``request`` keyword (a 2-argument sampler keeps working and never sees it).
0b. Structured outputs (phase 12; only for a request with a grammar matcher): the logits of
   every token the matcher does not allow become ``-inf`` (:func:`apply_token_mask`), before
   temperature / top-k / top-p, as upstream applies its grammar bitmask. The engine applies it
   (``mini_vllm/engine.py: sample_request``) so that every sampler, a learner's included, sees
   the masked row; each logits processor above maps ``-inf`` to ``-inf`` token by token, so
   masking before or after them gives the same row.
1. ``temperature == 0``: ``argmax`` (numpy picks the lowest index on ties). No RNG is created or
   consumed, and top_k / top_p / min_p / seed are ignored.
2. ``logits / temperature``.
2b. min-p (``apply_min_p``), on the tempered distribution and *before* top-k / top-p, where
   vLLM runs it (an argmax-invariant logits processor). Disabled when ``min_p == 0``.
3. top-k: keep every logit ``>=`` the k-th largest (ties at the boundary survive, as upstream);
   the rest become ``-inf``. Disabled when ``k <= 0`` or ``k >= vocab``.
4. top-p over the softmax of what survived top-k: sort by descending probability (stable, so
   equal probabilities keep index order), keep the shortest prefix whose cumulative sum reaches
   ``p``; the token that crosses ``p`` is kept. Disabled when ``p >= 1``.
5. softmax (max-subtracted, so logits of 1000+ do not overflow) over the survivors.
6. exactly one draw: ``int(np.random.default_rng(seed).choice(len(probs), p=probs))``, or
   ``int(generator.choice(len(probs), p=probs))`` when a ``generator`` is passed.

Trap, stated once: by default the generator is created per call from ``params.seed``. With a fixed
seed every step of a request reuses the same uniform number; that is reproducible (what the tests
need) but not a proper per-request random stream. Real vLLM keeps one generator per request:
``LLMEngine(generators="per_request")`` does too, and hands it to ``sample(..., generator=...)``
(``mini_vllm/sample/generators.py``). Without ``generator`` nothing changes.

Not covered: speculative decoding's draft verification (``RejectionSampler``) does not apply the
phase 09 knobs, so an engine with ``speculative_config`` refuses a request that sets any of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mini_vllm.sample import (
    apply_bad_words,
    apply_logit_bias,
    apply_min_p,
    apply_min_tokens,
    apply_penalties,
)


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


def apply_token_mask(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``logits`` with every token where ``allowed`` is False set to ``-inf`` (a new array).

    Upstream: ``vllm/v1/structured_output/utils.py: apply_grammar_bitmask`` (one packed row per
    request, applied in place by xgrammar's kernel).
    """
    return np.where(allowed, np.asarray(logits, dtype=np.float64), -np.inf)


class Sampler:
    """``sample(logits, params, request=None, generator=None) -> int``.

    ``params`` needs temperature, top_k, top_p, seed; the phase 09 knobs (min_p, penalties,
    bad_words, min_tokens, logit_bias) are read with their "off" defaults when absent.
    ``request`` (anything with ``prompt_token_ids``, ``output_token_ids``, ``eos_token_id``) is
    needed only by the knobs that read tokens; ``ValueError`` if one of those is on without it.
    ``generator``: draw from it (advancing it by one draw) instead of building
    ``default_rng(params.seed)``; ignored at temperature 0, where nothing is drawn.
    """

    def sample(self, logits: np.ndarray, params: Any, request: Any = None,
               generator: np.random.Generator | None = None) -> int:
        x = self.apply_logits_processors(np.asarray(logits, dtype=np.float64), params, request)
        if params.temperature == 0.0:
            return int(np.argmax(x))
        x = x / params.temperature
        x = apply_min_p(x, getattr(params, "min_p", 0.0))
        x = apply_top_k(x, params.top_k)
        x = apply_top_p(x, params.top_p)
        probs = softmax(x)
        rng = generator if generator is not None else np.random.default_rng(params.seed)
        return int(rng.choice(probs.size, p=probs))

    __call__ = sample

    @staticmethod
    def apply_logits_processors(x: np.ndarray, params: Any, request: Any) -> np.ndarray:
        """Bad words -> min_tokens -> logit bias -> penalties; ``x`` itself when all are off."""
        bad_words = getattr(params, "bad_words", None)
        min_tokens = getattr(params, "min_tokens", 0)
        logit_bias = getattr(params, "logit_bias", None)
        repetition = getattr(params, "repetition_penalty", 1.0)
        frequency = getattr(params, "frequency_penalty", 0.0)
        presence = getattr(params, "presence_penalty", 0.0)
        penalties = repetition != 1.0 or frequency != 0.0 or presence != 0.0
        if request is None and (bad_words or min_tokens or penalties):
            raise ValueError(
                "bad_words, min_tokens and the penalties read the request's tokens: "
                "call sample(logits, params, request=request)"
            )
        if bad_words:
            x = apply_bad_words(x, bad_words, request.output_token_ids)
        if min_tokens:
            x = apply_min_tokens(x, min_tokens, len(request.output_token_ids),
                                 [request.eos_token_id])
        if logit_bias:
            x = apply_logit_bias(x, logit_bias)
        if penalties:
            x = apply_penalties(x, request.prompt_token_ids, request.output_token_ids,
                                repetition_penalty=repetition, frequency_penalty=frequency,
                                presence_penalty=presence)
        return x
