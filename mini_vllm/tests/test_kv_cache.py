"""KVCacheManager, driven directly as lab 02-05 does (block_size 4, 32-token prompts)."""

from __future__ import annotations

from mini_vllm import KVCacheManager, Request
from pytest_vllm_katas.invariants import check_block_pool, check_block_tables

PROMPT = list(range(32))  # 8 full blocks of 4


def prefill(kv: KVCacheManager, token_ids: list[int]) -> tuple[Request, int]:
    """The scheduler's admission dance: look up, adopt the hits, allocate, mark computed."""
    request = Request(token_ids)
    hits, num_cached = kv.get_computed_blocks(request)
    request.num_computed_tokens = num_cached
    assert kv.allocate_slots(request, request.num_tokens - num_cached, hits) is not None
    request.num_computed_tokens = request.num_tokens
    check_block_pool(kv.block_pool)
    check_block_tables(kv.block_pool, kv.req_to_blocks)
    return request, num_cached


def ref_counts(kv: KVCacheManager, request: Request) -> list[int]:
    return [b.ref_cnt for b in kv.get_blocks(request.request_id)]


def test_first_request_populates_cold_cache() -> None:
    kv = KVCacheManager(num_blocks=64, block_size=4)
    a, cached = prefill(kv, PROMPT)
    assert cached == 0
    assert ref_counts(kv, a) == [1] * 8
    assert len(kv.block_pool.cached_block_hash_to_block) == 8


def test_identical_prompt_shares_all_but_the_tail_block() -> None:
    kv = KVCacheManager(num_blocks=64, block_size=4)
    a, _ = prefill(kv, PROMPT)
    free_before = kv.block_pool.get_num_free_blocks()
    b, cached = prefill(kv, PROMPT)
    assert cached == 28, "hits are capped at (num_tokens - 1) // block_size full blocks"
    assert kv.get_block_ids(b.request_id)[:7] == kv.get_block_ids(a.request_id)[:7]
    assert ref_counts(kv, b) == [2] * 7 + [1]
    assert free_before - kv.block_pool.get_num_free_blocks() == 1


def test_diverging_prompt_shares_only_the_common_prefix() -> None:
    kv = KVCacheManager(num_blocks=64, block_size=4)
    prefill(kv, PROMPT)
    _, cached = prefill(kv, PROMPT[:16] + [200] * 16)
    assert cached == 16


def test_free_order_evicts_tails_before_shared_prefix() -> None:
    kv = KVCacheManager(num_blocks=10, block_size=4)  # null + A's 8 + B's private tail
    a, _ = prefill(kv, PROMPT)
    b, _ = prefill(kv, PROMPT)
    assert kv.get_block_ids(a.request_id) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert kv.get_block_ids(b.request_id) == [1, 2, 3, 4, 5, 6, 7, 9]
    kv.free(a)
    kv.free(b)
    queue = kv.block_pool.free_queue.get_all_free_blocks()
    assert [blk.block_id for blk in queue] == [8, 9, 7, 6, 5, 4, 3, 2, 1]
    evicted = kv.block_pool.get_new_blocks(2)
    assert [blk.block_id for blk in evicted] == [8, 9], "private tails go first"
    head = kv.block_pool.free_queue.get_all_free_blocks()[-1]
    assert head.block_id == 1 and head.block_hash is not None, "the prefix head survives longest"
    check_block_pool(kv.block_pool)


def test_cached_free_blocks_are_revived_not_recomputed() -> None:
    kv = KVCacheManager(num_blocks=10, block_size=4)
    a, _ = prefill(kv, PROMPT)
    kv.free(a)
    d, cached = prefill(kv, PROMPT)
    assert cached == 28
    assert ref_counts(kv, d) == [1] * 8
    assert kv.get_block_ids(d.request_id)[:7] == [1, 2, 3, 4, 5, 6, 7]


def test_caching_disabled_means_no_sharing() -> None:
    kv = KVCacheManager(num_blocks=64, block_size=4, enable_caching=False)
    prefill(kv, PROMPT)
    _, cached = prefill(kv, PROMPT)
    assert cached == 0
    assert not kv.block_pool.cached_block_hash_to_block


def test_allocate_slots_returns_none_under_pressure_and_changes_nothing() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)  # 3 usable blocks
    a = Request(list(range(12)))
    assert kv.allocate_slots(a, 12) is not None
    b = Request(list(range(50, 54)))
    free_before = kv.block_pool.get_num_free_blocks()
    assert kv.allocate_slots(b, 4) is None
    assert kv.block_pool.get_num_free_blocks() == free_before
    assert kv.get_block_ids(b.request_id) == []


def test_reviving_hits_counts_against_the_free_pool() -> None:
    # 3 usable blocks. A's two full blocks are cached and free; C needs them plus 2 new blocks
    # (4 in all) — touching the hits uses up free blocks, so this must be refused up front.
    kv = KVCacheManager(num_blocks=4, block_size=4)
    a, _ = prefill(kv, list(range(8)))
    kv.free(a)
    c = Request(list(range(16)))
    hits, cached = kv.get_computed_blocks(c)
    assert cached == 8
    c.num_computed_tokens = cached
    assert kv.allocate_slots(c, 8, hits) is None
    check_block_pool(kv.block_pool)


def test_newly_full_blocks_are_cached_at_allocation_time() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    a = Request(list(range(10)))
    kv.allocate_slots(a, 6)  # 1 full block + a partial one
    assert len(kv.block_pool.cached_block_hash_to_block) == 1
    a.num_computed_tokens = 6
    kv.allocate_slots(a, 2)  # second block becomes full
    assert len(kv.block_pool.cached_block_hash_to_block) == 2
