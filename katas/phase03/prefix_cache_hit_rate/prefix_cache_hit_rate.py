"""Kata 03-03 — measure the real prefix-cache hit rate, and predict it from block arithmetic.

A workload of prompts sharing a long system prompt runs on a real vLLM with prefix caching on and
off. Predict, request by request, how many prompt tokens the cache serves; then measure what the
engine did and compare.
"""

from __future__ import annotations

from typing import Any

from katas.phase03.prefix_cache_hit_rate.scaffold import PrefixCacheRun  # noqa: F401


def predict_cached_tokens(
    prompts: list[list[int]], block_size: int, enable_caching: bool
) -> list[int]:
    """Prompt tokens each request takes from the prefix cache, for requests served in order.

    ``prompts`` are token-id lists, all submitted in one batch and served in list order; the
    answer has one entry per prompt. The rules of vLLM's prefix cache:

    - with caching off, nothing is ever served: every entry is 0;
    - only full blocks of ``block_size`` tokens are cached, and a block is cached as soon as a
      request holding it is admitted, so a later request in the same batch can hit it;
    - a block matches only if the whole prefix up to its end (every token from the start of the
      prompt) equals that of a cached block; the hit is the run of matching blocks from the
      first one, and it ends at the first block that does not match;
    - a request never takes its last prompt token from the cache (the engine must compute it to
      get the logits for the first output token);
    - nothing is evicted.

    Example, blocks of 16: three prompts sharing a 130-token prefix, then differing, give
    ``[0, 128, 128]``.
    """
    raise NotImplementedError("predict_cached_tokens: each request's prefix-cache hit, in tokens")


def hit_rate(hits: int, queries: int) -> float:
    """Hit tokens over queried tokens, as vLLM's prefix-cache meter reports it.

    0.0 when nothing was queried (vLLM does not look anything up with caching off).
    """
    raise NotImplementedError("hit_rate: the fraction of queried tokens the cache served")


def prefill_tokens_computed(prompt_lens: list[int], cached_tokens: list[int]) -> int:
    """Prompt tokens the engine really had to compute: those the cache did not serve."""
    raise NotImplementedError("prefill_tokens_computed: the prompt tokens really computed")


def measure_prefix_cache(llm: Any, prompts: list[str], sampling_params: Any) -> PrefixCacheRun:
    """Run ``prompts`` in one ``llm.generate`` call and report what the prefix cache did.

    Per request (in prompt order): ``RequestOutput.num_cached_tokens`` and
    ``outputs[0].token_ids``. For the whole run: the change in the counters
    ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` from ``llm.get_metrics()``
    (read them before and after: they count since the engine started; a counter that is absent
    counts as 0).
    """
    raise NotImplementedError("measure_prefix_cache: what one generate call did to the cache")
