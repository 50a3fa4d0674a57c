"""Spec for kata 02-05: the biography of a cached block, told in block ids and ref counts.

Blocks of 4 tokens; the main prompt is 32 tokens, 8 full blocks. Every manager here is
mini_vllm's ``KVCacheManager`` with your lookup, admission and release inside
(``scaffold.make_manager``). Block ids are never hardcoded: expectations are built from the
tables the requests really got. After every operation the shared checkers confirm the pool and
the block tables agree.
"""

from __future__ import annotations

import pytest

from katas.phase02.share_and_evict.scaffold import kv_cache_manager_cls, make_manager
from mini_vllm import KVCacheManager, LLMEngine, Request, SamplingParams, Scheduler
from pytest_vllm_katas import expect_raises, first_step_difference
from pytest_vllm_katas.invariants import assert_same_outputs, check_block_pool, check_block_tables

pytestmark = pytest.mark.cpu_ok

BLOCK_SIZE = 4
PROMPT = list(range(100, 132))  # 32 tokens = 8 full blocks
DIVERGING = PROMPT[:16] + list(range(200, 216))  # same first 4 blocks, then different
UNRELATED = [7] * 8  # 2 blocks that hit nothing


def manager(impl, num_blocks: int = 32, enable_caching: bool = True):
    return make_manager(impl, num_blocks=num_blocks, block_size=BLOCK_SIZE,
                        enable_caching=enable_caching)


def checked(kv: KVCacheManager) -> KVCacheManager:
    check_block_pool(kv.block_pool)
    check_block_tables(kv.block_pool, kv.req_to_blocks)
    return kv


def table(kv: KVCacheManager, request: Request) -> list[int]:
    return kv.get_block_ids(request.request_id)


def table_of(kv: KVCacheManager, request: Request, length: int, who: str) -> list[int]:
    """The request's block ids, after checking the table has the length the story needs."""
    ids = table(kv, request)
    assert len(ids) == length, (
        f"{who}'s {request.num_tokens}-token prompt needs a table of {length} blocks of "
        f"{BLOCK_SIZE}; got {len(ids)}: {ids}"
    )
    return ids


def free_ids(kv: KVCacheManager) -> list[int]:
    return [b.block_id for b in kv.block_pool.free_queue.get_all_free_blocks()]


def ids_of(blocks) -> list[int]:
    return [b.block_id for b in blocks]


def refused(impl, kv: KVCacheManager, prompt: list[int], why: str) -> None:
    """``prefill`` must refuse with MemoryError; any other exception is named, not dumped."""
    try:
        with expect_raises(MemoryError, why):
            impl.prefill(kv, prompt)
    except (MemoryError, pytest.fail.Exception):
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's mistake, reported in words
        pytest.fail(f"expected MemoryError ({why}); prefill raised {type(exc).__name__}: {exc}",
                    pytrace=False)


# --- the story -----------------------------------------------------------------------------


def test_first_request_populates_cold_cache(impl) -> None:
    kv = manager(impl)
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
    kv = manager(impl)
    a, _ = impl.prefill(kv, PROMPT)
    free_before = kv.block_pool.get_num_free_blocks()
    b, cached = impl.prefill(kv, PROMPT)
    assert cached == 28, (
        f"B repeats A's 32 tokens but the hit stops at num_tokens - 1 = 31, i.e. 7 full blocks "
        f"= 28 tokens; got {cached}"
    )
    a_ids, b_ids = table_of(kv, a, 8, "A"), table_of(kv, b, 8, "B")
    assert b_ids[:7] == a_ids[:7] and b_ids[7] != a_ids[7], (
        f"B's first 7 blocks are A's physical blocks, its 8th is its own: A {a_ids}, B {b_ids}"
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
    kv = manager(impl)
    a, _ = impl.prefill(kv, PROMPT)
    c, cached = impl.prefill(kv, DIVERGING)
    assert cached == 16, (
        f"C matches A's first 16 tokens and then differs: the hit stops at the first miss, "
        f"cached 16; got {cached}"
    )
    a_ids, c_ids = table_of(kv, a, 8, "A"), table_of(kv, c, 8, "C")
    assert c_ids[:4] == a_ids[:4] and not set(c_ids[4:]) & set(a_ids), (
        f"C shares exactly A's first 4 blocks: A {a_ids}, C {c_ids}"
    )
    assert impl.ref_counts(kv, c) == [2, 2, 2, 2, 1, 1, 1, 1], (
        f"C's ref counts should be [2, 2, 2, 2, 1, 1, 1, 1], got {impl.ref_counts(kv, c)}"
    )
    impl.prefill(kv, PROMPT)  # B, another copy of A
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
    kv = manager(impl)
    prompt = list(range(100, 100 + length))
    impl.prefill(kv, prompt)
    again, cached = impl.prefill(kv, prompt)
    assert cached == expected, (
        f"a repeated {length}-token prompt reuses the full blocks within its first {length - 1} "
        f"tokens (the last token is recomputed for its logits): cached {expected}, got {cached}"
    )
    table_of(kv, again, -(-length // BLOCK_SIZE), "the repeat")
    checked(kv)


def test_lookup_stops_at_the_first_miss(impl) -> None:
    # A real hole in the cache. A and B hold the same 32 tokens; B's copy of the 8th block is
    # never indexed (the index keeps one block per hash: A's). B decodes 4 tokens, filling a
    # 9th block that *is* indexed. Then A leaves and its 8th block is evicted: the cache now
    # knows blocks 1-7 and 9 of this token sequence, but not block 8.
    kv = manager(impl, num_blocks=13)  # null + A's 8 + B's 2 + 2 spare
    a, _ = impl.prefill(kv, PROMPT)
    b, _ = impl.prefill(kv, PROMPT)
    for token in (1, 2, 3, 4):
        b.append_output_token(token)
    assert kv.allocate_slots(b, 4) is not None, "B's 9th block must fit"
    b.num_computed_tokens = 36
    a_ids, b_ids = table_of(kv, a, 8, "A"), table(kv, b)
    kv.free(a)
    pressure, _ = impl.prefill(kv, [7] * 12)  # 3 blocks: the 2 spare ones, then A's tail
    assert table(kv, pressure)[-1] == a_ids[7], (
        f"setup: memory pressure should have evicted A's tail block {a_ids[7]}; the newcomer "
        f"got {table(kv, pressure)}"
    )
    kv.free(pressure)
    checked(kv)

    query = PROMPT + [1, 2, 3, 4, 5]  # B's tokens and one more: 9 full blocks to look up
    hits = ids_of(impl.find_longest_cache_hit(kv.block_pool, query, BLOCK_SIZE))
    assert hits == a_ids[:7], (
        f"block 8 of this sequence is no longer cached, so the hit is blocks 1-7 {a_ids[:7]}; "
        f"B's block 9 ({b_ids[8]}) is cached too, but K/V after a missing block is useless. "
        f"Got {hits}"
    )
    q, cached = impl.prefill(kv, query)
    assert cached == 28, f"the newcomer adopts the 7 blocks before the hole: 28, got {cached}"
    checked(kv)


def test_a_block_matches_only_after_its_whole_prefix(impl) -> None:
    kv = manager(impl)
    impl.prefill(kv, [1] * 4 + [2] * 4 + [9])  # caches block [1,1,1,1] and [1,1,1,1][2,2,2,2]
    impl.prefill(kv, [3] * 4 + [9])  # caches block [3,3,3,3] as the *first* block of a prompt
    query = [1] * 4 + [3] * 4 + [9]
    hits = impl.find_longest_cache_hit(kv.block_pool, query, BLOCK_SIZE)
    assert len(hits) == 1, (
        f"{query}: its first block [1, 1, 1, 1] is cached; its second holds [3, 3, 3, 3], "
        f"which is cached only as the first block of another prompt. A block's hash chains its "
        f"parent's, so that is a different block: 1 hit, got {len(hits)} ({ids_of(hits)})"
    )
    checked(kv)


def test_exactly_sized_pool_fits_both_requests(impl) -> None:
    kv = manager(impl, num_blocks=10)  # the null block + A's 8 + B's tail
    impl.prefill(kv, PROMPT)
    try:
        impl.prefill(kv, PROMPT)
    except MemoryError:
        pytest.fail("B needs 1 new block and 1 is free (its 7 hits are held by A, not free): "
                    "prefill must fit B in the exactly sized pool", pytrace=False)
    assert kv.block_pool.get_num_free_blocks() == 0, (
        f"A and B need exactly 9 usable blocks; {kv.block_pool.get_num_free_blocks()} left over"
    )
    checked(kv)


def test_prefill_that_does_not_fit_raises_and_takes_nothing(impl) -> None:
    kv = manager(impl, num_blocks=10)
    a, _ = impl.prefill(kv, PROMPT)
    impl.prefill(kv, PROMPT)
    holders = {rid: ids_of(t) for rid, t in kv.req_to_blocks.items()}
    refused(impl, kv, PROMPT, "a third copy has 7 hits but no block left for its tail")
    assert {rid: ids_of(t) for rid, t in kv.req_to_blocks.items()} == holders, (
        "a refused prefill must leave no block table behind"
    )
    assert impl.ref_counts(kv, a) == [2, 2, 2, 2, 2, 2, 2, 1], (
        f"a refused prefill must take no reference on the hit blocks: A's ref counts stay "
        f"[2]*7 + [1], got {impl.ref_counts(kv, a)}"
    )
    checked(kv)


def test_revived_blocks_count_against_the_free_pool(impl) -> None:
    kv = manager(impl, num_blocks=10)
    a, _ = impl.prefill(kv, PROMPT)
    impl.prefill(kv, [7] * 4)  # holds the 9th usable block
    a_ids = table_of(kv, a, 8, "A")
    kv.free(a)
    impl.prefill(kv, [8] * 4)  # takes the queue's front: A's tail, evicted
    assert free_ids(kv) == list(reversed(a_ids[:7])), (
        f"setup: the only free blocks are A's cached prefix {list(reversed(a_ids[:7]))}; queue "
        f"{free_ids(kv)}"
    )
    refused(impl, kv, PROMPT,
            "7 blocks are free, but all 7 are the hits themselves: reviving them leaves none "
            "for the tail block")
    assert free_ids(kv) == list(reversed(a_ids[:7])), (
        f"a refused prefill must leave the free queue as it was: {list(reversed(a_ids[:7]))}, "
        f"got {free_ids(kv)}"
    )
    checked(kv)


def test_free_order_evicts_tails_before_shared_prefix(impl) -> None:
    kv = manager(impl, num_blocks=10)
    a, _ = impl.prefill(kv, PROMPT)
    b, _ = impl.prefill(kv, PROMPT)
    a_ids, b_ids = table_of(kv, a, 8, "A"), table_of(kv, b, 8, "B")
    a_hashes = [blk.block_hash for blk in kv.get_blocks(a.request_id)]
    kv.free(a)
    kv.free(b)  # both release their tables
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
    kv = manager(impl, num_blocks=16)
    a, _ = impl.prefill(kv, PROMPT)
    u, _ = impl.prefill(kv, UNRELATED)
    a_ids, u_ids = table_of(kv, a, 8, "A"), table_of(kv, u, 2, "U")
    kv.free(a)
    kv.free(u)  # A's blocks now sit in the middle of the queue, U's behind them
    free_before = kv.block_pool.get_num_free_blocks()
    d, cached = impl.prefill(kv, PROMPT)
    assert cached == 28, f"nobody holds A's blocks but the cache does: cached 28, got {cached}"
    d_ids = table_of(kv, d, 8, "D")
    assert d_ids[:7] == a_ids[:7], f"D reuses A's physical blocks {a_ids[:7]}, got {d_ids[:7]}"
    assert impl.ref_counts(kv, d) == [1] * 8, (
        f"revived blocks go from 0 back to 1 reference: [1]*8, got {impl.ref_counts(kv, d)}"
    )
    queue = free_ids(kv)
    assert not set(a_ids[:7]) & set(queue) and queue[-2:] == list(reversed(u_ids)), (
        f"reviving takes A's 7 blocks out of the middle of the queue and leaves U's behind them: "
        f"queue {queue}"
    )
    spent = free_before - kv.block_pool.get_num_free_blocks()
    assert spent == 8, f"7 revived blocks plus 1 new tail leave the queue: 8, got {spent}"
    checked(kv)


def test_hits_are_taken_before_fresh_blocks_are_popped(impl) -> None:
    head, tail_a, tail_b = [1] * 4, [2] * 4, [3] * 4
    kv = manager(impl, num_blocks=4)  # 3 usable blocks
    a, _ = impl.prefill(kv, head + tail_a)
    b, _ = impl.prefill(kv, head + tail_b)  # shares A's head block
    (h, ta), (_, tb) = table_of(kv, a, 2, "A"), table_of(kv, b, 2, "B")
    kv.free(a)
    kv.free(b)
    assert free_ids(kv) == [ta, tb, h], (
        f"setup: the queue is A's tail, B's tail, the shared head: {[ta, tb, h]}, got "
        f"{free_ids(kv)}"
    )
    # C repeats A's two blocks: one of its hits (A's tail) is at the front of the queue.
    c, cached = impl.prefill(kv, head + tail_a + [0])
    assert cached == 8, f"C repeats A's two blocks and adds a token: cached 8, got {cached}"
    c_ids = table_of(kv, c, 3, "C")
    assert c_ids == [h, ta, tb], (
        f"C's table is the head and A's tail, both revived, then the only other free block, B's "
        f"tail: {[h, ta, tb]}; got {c_ids}. Popping a fresh block before taking the hits pops "
        f"(and evicts) the hit at the front of the queue"
    )
    assert impl.ref_counts(kv, c) == [1, 1, 1], (
        f"each of C's blocks is held once, got {impl.ref_counts(kv, c)}"
    )
    checked(kv)


def test_caching_disabled_means_no_sharing(impl) -> None:
    kv = manager(impl, enable_caching=False)
    a, cached_a = impl.prefill(kv, PROMPT)
    b, cached_b = impl.prefill(kv, PROMPT)
    assert (cached_a, cached_b) == (0, 0), (
        f"with enable_caching=False nothing is ever found: (0, 0), got {(cached_a, cached_b)}"
    )
    assert not set(table(kv, a)) & set(table(kv, b)), "without caching no block is shared"
    assert impl.ref_counts(kv, b) == [1] * 8, f"every block held once, got {impl.ref_counts(kv, b)}"
    assert kv.block_pool.get_num_free_blocks() == 31 - 16, "B costs 8 blocks of its own"
    checked(kv)


# --- against mini_vllm ---------------------------------------------------------------------


def test_prefill_admits_like_the_scheduler(impl) -> None:
    prompts = [PROMPT, PROMPT, DIVERGING, UNRELATED, PROMPT[:17]]
    kv_mine = manager(impl)
    mine = [impl.prefill(kv_mine, p) for p in prompts]

    kv_stock = KVCacheManager(num_blocks=32, block_size=BLOCK_SIZE)
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
            f"prompt #{i}: mini_vllm's scheduler and manager found {expected[0]} cached tokens "
            f"and built the table {expected[1]}; your prefill found {got[0]} and built {got[1]}"
        )
    checked(kv_mine)


SYSTEM = "You are terse. "  # 15 bytes: 3 full blocks and 3 tokens
WAVES = [
    [SYSTEM + "Hello", SYSTEM + "Hello", SYSTEM + "Name a prime."],  # 20 tokens: 5 full blocks
    [SYSTEM + "Hello", SYSTEM + "Why?", SYSTEM + "Name a prime."],  # later: hits on freed blocks
]


def run_engine(num_blocks: int, kv_cls=None, check: bool = False):
    """Run the two waves; return (outputs, per-step trace, preemptions, cached tokens).

    Every step records who was scheduled for how many tokens, who was preempted, how many
    tokens each admission found in the prefix cache, and every block table. Request ids are
    p0, p1... in arrival order.
    """
    engine = LLMEngine(num_blocks=num_blocks, block_size=BLOCK_SIZE, max_num_batched_tokens=24,
                       max_num_seqs=3, kv_cache_manager_cls=kv_cls)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    trace: list[dict] = []
    original = engine.scheduler.schedule

    def probe():
        out = original()
        trace.append({
            "scheduled": dict(out.num_scheduled_tokens),
            "preempted": list(out.preempted_req_ids),
            # At admission num_computed_tokens is exactly the prefix-cache hit.
            "cached": {r.request_id: r.num_computed_tokens for r in out.scheduled_requests
                       if r.request_id in out.scheduled_new_req_ids},
        })
        return out

    engine.scheduler.schedule = probe
    outputs: dict[str, list[int]] = {}
    preemptions = 0
    count = 0
    for wave_index, wave in enumerate(WAVES):
        for prompt in wave:
            engine.add_request(prompt, params, request_id=f"p{count}")
            count += 1
        steps = 8 if wave_index < len(WAVES) - 1 else 200  # bounded: a stuck engine fails
        while steps and engine.has_unfinished_requests():
            steps -= 1
            for request in engine.step():
                outputs[request.request_id] = list(request.output_token_ids)
                preemptions += request.num_preemptions
            kv = engine.kv_cache_manager
            trace[-1]["block_tables"] = {r: ids_of(t) for r, t in sorted(kv.req_to_blocks.items())}
            if check:
                check_block_pool(kv.block_pool)
                check_block_tables(kv.block_pool, kv.req_to_blocks)
    assert not engine.has_unfinished_requests(), (
        f"the engine did not finish the workload in a bounded number of steps; still running "
        f"{[r.request_id for r in engine.scheduler.running]}, waiting "
        f"{[r.request_id for r in engine.scheduler.waiting]}"
    )
    cached = sum(sum(step["cached"].values()) for step in trace)
    return outputs, trace, preemptions, cached


@pytest.fixture(scope="module")
def stock_runs() -> dict[int, tuple]:
    return {}


@pytest.mark.parametrize(
    "num_blocks",
    [pytest.param(64, id="roomy_pool"), pytest.param(12, id="cramped_pool-eviction_preemption")],
)
def test_your_kv_functions_drive_the_engine(impl, stock_runs, num_blocks: int) -> None:
    mine = run_engine(num_blocks, kv_cache_manager_cls(impl), check=True)
    if num_blocks not in stock_runs:
        stock_runs[num_blocks] = run_engine(num_blocks)
    stock = stock_runs[num_blocks]
    assert_same_outputs(stock[0], mine[0], labels=("stock", "yours"))
    assert mine[1] == stock[1], (
        "with your lookup, admission and release the engine made different decisions than "
        "with mini_vllm's: " + first_step_difference(stock[1], mine[1])
    )
    # The comparison is only worth something if the cache was really exercised.
    _, _, preemptions, cached = stock
    assert cached > 0, "workload check: the prefix cache should have been hit"
    if num_blocks == 12:
        assert preemptions > 0, "workload check: the cramped pool should have forced preemption"
