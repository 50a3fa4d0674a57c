"""Spec for kata 02-05: the biography of a cached block, told in block ids and ref counts.

Blocks of 4 tokens; the main prompt is 32 tokens, 8 full blocks. Block ids are never
hardcoded: expectations are built from the tables the requests really got. After every
operation the shared checkers confirm the pool and the block tables agree.
"""

from __future__ import annotations

import pytest

from mini_vllm import KVCacheManager, Request, Scheduler
from pytest_vllm_katas.invariants import check_block_pool, check_block_tables

pytestmark = pytest.mark.cpu_ok

BLOCK_SIZE = 4
PROMPT = list(range(100, 132))  # 32 tokens = 8 full blocks
DIVERGING = PROMPT[:16] + list(range(200, 216))  # same first 4 blocks, then different
UNRELATED = [7] * 8  # 2 blocks that hit nothing


def manager(num_blocks: int = 32, enable_caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks=num_blocks, block_size=BLOCK_SIZE,
                          enable_caching=enable_caching)


def checked(kv: KVCacheManager) -> KVCacheManager:
    check_block_pool(kv.block_pool)
    check_block_tables(kv.block_pool, kv.req_to_blocks)
    return kv


def table(kv: KVCacheManager, request: Request) -> list[int]:
    return kv.get_block_ids(request.request_id)


def free_ids(kv: KVCacheManager) -> list[int]:
    return [b.block_id for b in kv.block_pool.free_queue.get_all_free_blocks()]


def test_first_request_populates_cold_cache(impl) -> None:
    kv = manager()
    a, cached = impl.prefill(kv, PROMPT)
    assert cached == 0, f"the first request finds nothing in a cold cache: cached 0, got {cached}"
    assert impl.ref_counts(kv, a) == [1] * 8, (
        f"A holds 8 fresh blocks, each with one reference; got {impl.ref_counts(kv, a)}"
    )
    assert a.num_computed_tokens == 32, (
        f"after prefill all 32 prompt tokens are computed, got {a.num_computed_tokens}"
    )
    blocks = kv.get_blocks(a.request_id)
    assert all(kv.block_pool.get_cached_block(b.block_hash) is b for b in blocks), (
        "all 8 of A's blocks are full, so all 8 are now in the prefix cache"
    )
    checked(kv)


def test_identical_prompt_shares_all_but_the_tail_block(impl) -> None:
    kv = manager()
    a, _ = impl.prefill(kv, PROMPT)
    free_before = kv.block_pool.get_num_free_blocks()
    b, cached = impl.prefill(kv, PROMPT)
    assert cached == 28, (
        f"B repeats A's 32 tokens but the hit stops at num_tokens - 1 = 31, i.e. 7 full blocks "
        f"= 28 tokens; got {cached}"
    )
    assert table(kv, b)[:7] == table(kv, a)[:7] and table(kv, b)[7] != table(kv, a)[7], (
        f"B's first 7 blocks are A's physical blocks, its 8th is its own: A {table(kv, a)}, "
        f"B {table(kv, b)}"
    )
    assert impl.ref_counts(kv, b) == [2, 2, 2, 2, 2, 2, 2, 1], (
        f"ref counts of B's table should be [2, 2, 2, 2, 2, 2, 2, 1], got {impl.ref_counts(kv, b)}"
    )
    assert impl.ref_counts(kv, a) == [2, 2, 2, 2, 2, 2, 2, 1], (
        f"A sees the same sharing: [2]*7 + [1], got {impl.ref_counts(kv, a)}"
    )
    spent = free_before - kv.block_pool.get_num_free_blocks()
    assert spent == 1, f"B's whole prompt cost the pool one block, not {spent}"
    checked(kv)


def test_diverging_prompt_shares_only_the_common_prefix(impl) -> None:
    kv = manager()
    a, _ = impl.prefill(kv, PROMPT)
    c, cached = impl.prefill(kv, DIVERGING)
    assert cached == 16, (
        f"C matches A's first 16 tokens and then differs: the hit stops at the first miss, "
        f"cached 16; got {cached}"
    )
    assert table(kv, c)[:4] == table(kv, a)[:4] and not set(table(kv, c)[4:]) & set(table(kv, a)), (
        f"C shares exactly A's first 4 blocks: A {table(kv, a)}, C {table(kv, c)}"
    )
    assert impl.ref_counts(kv, c) == [2, 2, 2, 2, 1, 1, 1, 1], (
        f"C's ref counts should be [2, 2, 2, 2, 1, 1, 1, 1], got {impl.ref_counts(kv, c)}"
    )
    b, _ = impl.prefill(kv, PROMPT)
    assert impl.ref_counts(kv, a) == [3, 3, 3, 3, 2, 2, 2, 1], (
        f"with A, B and C live, A's blocks are held [3, 3, 3, 3, 2, 2, 2, 1] times; got "
        f"{impl.ref_counts(kv, a)}"
    )
    checked(kv)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        pytest.param(32, 28, id="32_tokens-hit_28"),
        pytest.param(33, 32, id="33_tokens-hit_32"),
        pytest.param(31, 28, id="31_tokens-hit_28"),
        pytest.param(5, 4, id="5_tokens-hit_4"),
        pytest.param(4, 0, id="4_tokens-hit_0"),
        pytest.param(1, 0, id="1_token-hit_0"),
    ],
)
def test_hit_stops_one_token_short_of_the_prompt(impl, length: int, expected: int) -> None:
    kv = manager()
    prompt = list(range(100, 100 + length))
    impl.prefill(kv, prompt)
    _, cached = impl.prefill(kv, prompt)
    assert cached == expected, (
        f"a repeated {length}-token prompt reuses the full blocks within its first {length - 1} "
        f"tokens (the last token is recomputed for its logits): cached {expected}, got {cached}"
    )
    checked(kv)


def test_exactly_sized_pool_fits_both_requests(impl) -> None:
    kv = manager(num_blocks=10)  # the null block + A's 8 + B's tail
    impl.prefill(kv, PROMPT)
    impl.prefill(kv, PROMPT)
    assert kv.block_pool.get_num_free_blocks() == 0, (
        f"A and B need exactly 9 usable blocks; {kv.block_pool.get_num_free_blocks()} left over"
    )
    checked(kv)


def test_prefill_that_does_not_fit_raises_and_takes_nothing(impl) -> None:
    kv = manager(num_blocks=10)
    a, _ = impl.prefill(kv, PROMPT)
    impl.prefill(kv, PROMPT)
    holders = dict(kv.req_to_blocks)
    with pytest.raises(MemoryError):
        impl.prefill(kv, PROMPT)  # 7 hits, but its tail block has nowhere to go
    assert dict(kv.req_to_blocks) == holders, "a refused prefill must leave no block table behind"
    assert impl.ref_counts(kv, a) == [2, 2, 2, 2, 2, 2, 2, 1], (
        "a refused prefill must take no reference on the hit blocks"
    )
    checked(kv)


def test_free_order_evicts_tails_before_shared_prefix(impl) -> None:
    kv = manager(num_blocks=10)
    a, _ = impl.prefill(kv, PROMPT)
    b, _ = impl.prefill(kv, PROMPT)
    a_ids, b_ids = table(kv, a), table(kv, b)
    a_hashes = [blk.block_hash for blk in kv.get_blocks(a.request_id)]
    kv.free(a)
    kv.free(b)  # both free their tables tail first
    expected_queue = [a_ids[7], b_ids[7], *reversed(a_ids[:7])]
    assert free_ids(kv) == expected_queue, (
        f"after freeing A then B the queue is A's tail, B's tail, then the shared blocks from the "
        f"deepest to the head: expected {expected_queue}, got {free_ids(kv)}"
    )
    assert [kv.block_pool.get_cached_block(h) is not None for h in a_hashes] == [True] * 8, (
        "freed blocks stay in the prefix cache until they are reused"
    )
    checked(kv)

    newcomer, cached = impl.prefill(kv, UNRELATED)  # demands 2 blocks
    assert cached == 0 and table(kv, newcomer) == [a_ids[7], b_ids[7]], (
        f"an unrelated 8-token prompt takes the front of the queue: the two private tails "
        f"{[a_ids[7], b_ids[7]]}; got {table(kv, newcomer)}"
    )
    assert kv.block_pool.get_cached_block(a_hashes[7]) is None, "A's tail was really evicted"
    survivors = [kv.block_pool.get_cached_block(h) for h in a_hashes[:7]]
    assert [s.block_id if s else None for s in survivors] == a_ids[:7], (
        "the 7 shared prefix blocks are all still cached after the eviction"
    )
    assert free_ids(kv)[-1] == a_ids[0], "the prefix's head block is the last in line to go"
    checked(kv)

    kv.free(newcomer)
    d, cached = impl.prefill(kv, PROMPT)
    assert cached == 28 and table(kv, d)[:7] == a_ids[:7], (
        f"the prefix survived the pressure: a new copy of the prompt hits 28 tokens on A's blocks; "
        f"got cached={cached}, table {table(kv, d)}"
    )
    checked(kv)


def test_cached_free_blocks_are_revived_not_recomputed(impl) -> None:
    kv = manager(num_blocks=16)
    a, _ = impl.prefill(kv, PROMPT)
    u, _ = impl.prefill(kv, UNRELATED)
    a_ids, u_ids = table(kv, a), table(kv, u)
    kv.free(a)
    kv.free(u)  # A's blocks now sit in the middle of the queue, U's behind them
    free_before = kv.block_pool.get_num_free_blocks()
    d, cached = impl.prefill(kv, PROMPT)
    assert cached == 28, f"nobody holds A's blocks but the cache does: cached 28, got {cached}"
    assert table(kv, d)[:7] == a_ids[:7], (
        f"D reuses A's physical blocks {a_ids[:7]}, got {table(kv, d)[:7]}"
    )
    assert impl.ref_counts(kv, d) == [1] * 8, (
        f"revived blocks go from 0 back to 1 reference: [1]*8, got {impl.ref_counts(kv, d)}"
    )
    queue = free_ids(kv)
    assert not set(a_ids[:7]) & set(queue) and queue[-2:] == list(reversed(u_ids)), (
        f"touch pulled A's 7 blocks out of the middle of the queue and left U's behind them: "
        f"queue {queue}"
    )
    spent = free_before - kv.block_pool.get_num_free_blocks()
    assert spent == 8, f"7 revived blocks plus 1 new tail leave the queue: 8, got {spent}"
    checked(kv)


def test_caching_disabled_means_no_sharing(impl) -> None:
    kv = manager(enable_caching=False)
    a, cached_a = impl.prefill(kv, PROMPT)
    b, cached_b = impl.prefill(kv, PROMPT)
    assert (cached_a, cached_b) == (0, 0), (
        f"with enable_caching=False nothing is ever found: (0, 0), got {(cached_a, cached_b)}"
    )
    assert not set(table(kv, a)) & set(table(kv, b)), "without caching no block is shared"
    assert impl.ref_counts(kv, b) == [1] * 8, f"every block held once, got {impl.ref_counts(kv, b)}"
    assert kv.block_pool.get_num_free_blocks() == 31 - 16, "B costs 8 blocks of its own"
    checked(kv)


def test_prefill_admits_like_the_scheduler(impl) -> None:
    prompts = [PROMPT, PROMPT, DIVERGING, UNRELATED, PROMPT[:17]]
    kv_mine = manager()
    mine = [impl.prefill(kv_mine, p) for p in prompts]

    kv_stock = manager()
    scheduler = Scheduler(kv_stock, max_num_batched_tokens=4096)
    stock = [Request(p) for p in prompts]
    for request in stock:
        scheduler.add_request(request)
    out = scheduler.schedule()  # admits all five in one step, in order
    for i, ((request, cached), reference) in enumerate(zip(mine, stock, strict=True)):
        expected_cached = len(prompts[i]) - out.num_scheduled_tokens[reference.request_id]
        got = (cached, table(kv_mine, request))
        expected = (expected_cached, table(kv_stock, reference))
        assert got == expected, (
            f"prompt #{i}: the scheduler's admission found {expected[0]} cached tokens and built "
            f"the table {expected[1]}; your prefill found {got[0]} and built {got[1]}"
        )
    checked(kv_mine)
