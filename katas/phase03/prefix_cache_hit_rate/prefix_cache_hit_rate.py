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

    With caching off every entry is 0. With caching on, walk the requests in order. A request's
    leading full blocks are hits while each block's whole prefix (every token from the start of
    the prompt to the end of that block) was stored by an earlier request; the first miss ends
    the run of hits. A request never takes its last prompt token from the cache, so at most the
    full blocks of its first ``len - 1`` tokens can hit. Then it stores all of its own full
    prompt blocks. Assume nothing is evicted.
    """
    raise NotImplementedError("predict_cached_tokens: leading full blocks already stored, capped")


def hit_rate(hits: int, queries: int) -> float:
    """Hit tokens over queried tokens, as vLLM's prefix-cache meter reports it.

    0.0 when nothing was queried (vLLM does not look anything up with caching off).
    """
    raise NotImplementedError("hit_rate: hits / queries, 0.0 when nothing was queried")


def prefill_tokens_computed(prompt_lens: list[int], cached_tokens: list[int]) -> int:
    """Prompt tokens the engine really had to compute: those the cache did not serve."""
    raise NotImplementedError("prefill_tokens_computed: sum of prompt_len - cached per request")


def measure_prefix_cache(llm: Any, prompts: list[str], sampling_params: Any) -> PrefixCacheRun:
    """Run ``prompts`` in one ``llm.generate`` call and report what the prefix cache did.

    Per request (in prompt order): ``RequestOutput.num_cached_tokens`` and
    ``outputs[0].token_ids``. For the whole run: the change in the counters
    ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` from ``llm.get_metrics()``
    (read them before and after: they count since the engine started; a counter that is absent
    counts as 0).
    """
    raise NotImplementedError("measure_prefix_cache: generate, num_cached_tokens, metric deltas")
