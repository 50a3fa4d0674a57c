"""Reference for kata 03-03 — prefix-cache hits predicted from blocks, and measured on vLLM."""

from __future__ import annotations

from typing import Any

from katas.phase03.prefix_cache_hit_rate.scaffold import PrefixCacheRun

QUERIES = "vllm:prefix_cache_queries"
HITS = "vllm:prefix_cache_hits"


def predict_cached_tokens(
    prompts: list[list[int]], block_size: int, enable_caching: bool
) -> list[int]:
    """Prompt tokens each request takes from the prefix cache, for requests served in order."""
    if not enable_caching:
        return [0] * len(prompts)
    # A block's identity is its whole prefix, not just its own tokens: upstream chains each
    # block's hash through its parent's, and a tuple of every token so far is that chain spelled
    # out. Two equal blocks after different histories are different blocks.
    stored: set[tuple[int, ...]] = set()
    cached = []
    for tokens in prompts:
        hits = 0
        lookup_blocks = (len(tokens) - 1) // block_size  # the last token is always recomputed
        while hits < lookup_blocks and tuple(tokens[: (hits + 1) * block_size]) in stored:
            hits += 1
        cached.append(hits * block_size)
        # vLLM caches a block as soon as it is full of prompt tokens (at allocation), so a
        # request scheduled later in the same step already hits it.
        for end in range(block_size, len(tokens) + 1, block_size):
            stored.add(tuple(tokens[:end]))
    return cached


def hit_rate(hits: int, queries: int) -> float:
    """Hit tokens over queried tokens; 0.0 when nothing was queried (caching off)."""
    return hits / queries if queries else 0.0


def prefill_tokens_computed(prompt_lens: list[int], cached_tokens: list[int]) -> int:
    """Prompt tokens the engine really had to compute."""
    return sum(n - c for n, c in zip(prompt_lens, cached_tokens, strict=True))


def _counters(llm: Any) -> dict[str, int]:
    return {m.name: int(m.value) for m in llm.get_metrics() if m.name in (QUERIES, HITS)}


def measure_prefix_cache(llm: Any, prompts: list[str], sampling_params: Any) -> PrefixCacheRun:
    """Run ``prompts`` in one ``llm.generate`` call and report what the prefix cache did."""
    # The counters are cumulative over the engine's life: only the difference is this run.
    before = _counters(llm)
    outputs = llm.generate(prompts, sampling_params, use_tqdm=False)
    after = _counters(llm)
    return PrefixCacheRun(
        cached_tokens=[o.num_cached_tokens or 0 for o in outputs],
        queries=after.get(QUERIES, 0) - before.get(QUERIES, 0),
        hits=after.get(HITS, 0) - before.get(HITS, 0),
        output_token_ids=[list(o.outputs[0].token_ids) for o in outputs],
    )
