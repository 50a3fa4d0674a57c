"""Reference for kata 02-05 — the prefix-cache lookup, the admission that shares what it found,
the tail-first release, and the scheduler's admission dance that strings them together.
"""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm import BlockPool, KVCacheBlock, KVCacheManager, Request, hash_block_tokens


def find_longest_cache_hit(
    pool: BlockPool, token_ids: Sequence[int], block_size: int
) -> list[KVCacheBlock]:
    """The cached blocks that hold the longest prefix of ``token_ids``, in order."""
    # The last token is never served from the cache: its forward pass yields the logits for
    # the next token. So only full blocks within the first len - 1 tokens can hit.
    max_blocks = (len(token_ids) - 1) // block_size
    hits: list[KVCacheBlock] = []
    parent = None
    for i in range(max_blocks):
        # Chained: a block's hash covers every token before it, so equal tokens after a
        # different history are a different block.
        parent = hash_block_tokens(parent, token_ids[i * block_size : (i + 1) * block_size])
        block = pool.get_cached_block(parent)
        if block is None:
            break  # a hit after a miss would be K/V without the K/V it was computed from
        hits.append(block)
    return hits


def share_and_allocate(
    pool: BlockPool, hits: Sequence[KVCacheBlock], num_tokens: int, block_size: int
) -> list[KVCacheBlock] | None:
    """A block table for ``num_tokens`` tokens: the shared hits, then fresh blocks; or None."""
    num_new = -(-num_tokens // block_size) - len(hits)
    # A hit nobody holds is sitting in the free queue; taking it makes it unavailable for the
    # fresh blocks, so it counts against the free pool. Check before touching anything.
    num_reviving = sum(1 for block in hits if block.ref_cnt == 0)
    if num_new > pool.get_num_free_blocks() - num_reviving:
        return None
    # Hits first: a fresh allocation pops the queue's front, which may be one of our hits.
    for block in hits:
        if block.ref_cnt == 0:
            pool.free_queue.remove(block)  # revive: out of the middle of the queue, in O(1)
        block.ref_cnt += 1
    return [*hits, *pool.get_new_blocks(num_new)]


def release(pool: BlockPool, table: Sequence[KVCacheBlock]) -> None:
    """Drop the table's references, tail first, so the queue evicts tails before the head."""
    pool.free_blocks(reversed(table))


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
