"""Reference for kata 02-05 — admit prompts into mini_vllm's KVCacheManager by hand and watch
their blocks get shared, freed, evicted and revived.
"""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm import KVCacheManager, Request


def prefill(kv: KVCacheManager, token_ids: Sequence[int]) -> tuple[Request, int]:
    """Admit a prompt the way the scheduler does; return (request, tokens found in the cache)."""
    request = Request(token_ids)
    hits, num_cached = kv.get_computed_blocks(request)
    # Adopt the head start *before* allocating: allocate_slots sizes the request from
    # num_computed_tokens + the new tokens, and counts the hit blocks as already held.
    request.num_computed_tokens = num_cached
    new_blocks = kv.allocate_slots(request, request.num_tokens - num_cached, hits)
    if new_blocks is None:
        request.num_computed_tokens = 0  # not admitted: adopt nothing (allocate_slots took nothing)
        raise MemoryError(
            f"not enough free blocks to prefill {request.num_tokens} tokens "
            f"({num_cached} cached, {kv.block_pool.get_num_free_blocks()} blocks free)"
        )
    # The prompt's forward pass has run: every prompt token now has its K/V in the cache.
    request.num_computed_tokens = request.num_tokens
    return request, num_cached


def ref_counts(kv: KVCacheManager, request: Request) -> list[int]:
    """The reference count of each block in ``request``'s block table, in logical order."""
    return [block.ref_cnt for block in kv.get_blocks(request.request_id)]
