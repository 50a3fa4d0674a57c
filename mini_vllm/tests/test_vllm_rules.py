"""vLLM 0.32's four control-plane rules as mini_vllm options (``mini_vllm/config.py``).

Each rule has one small example with two known answers, the course's and vLLM 0.32's. Every
option gives vLLM 0.32's answer on its own example and changes no other example; the ``"course"``
default gives the course's answers everywhere and ``"vllm-0.32"`` gives vLLM's everywhere. The
engine's master invariants (chunking, caching and a cramped pool change no token) hold under the
preset too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from mini_vllm import BlockPool, KVCacheManager, LLMEngine, Request
from mini_vllm.config import PRESETS, ControlPlanePolicy, get_policy
from mini_vllm.tests.builders import greedy, output_ids, record_schedules
from mini_vllm.tests.test_block_pool import BlockPoolMachine
from pytest_vllm_katas.invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
    check_kv_covers_schedule,
)

COURSE = PRESETS["course"]
VLLM_032 = PRESETS["vllm-0.32"]
OPTIONS = [f.name for f in fields(ControlPlanePolicy)]
PROMPTS = ["hello world", "goodbye", "The quick brown fox jumps over the lazy dog", "S" * 40]


def kv_manager(policy: ControlPlanePolicy, num_blocks: int = 6, **kwargs: Any) -> KVCacheManager:
    return KVCacheManager(num_blocks=num_blocks, block_size=4, **kwargs,
                          **policy.block_pool_options())


def free_queue_ids(kv: KVCacheManager) -> list[int]:
    return [b.block_id for b in kv.block_pool.free_queue.get_all_free_blocks()]


# -- the four examples ---------------------------------------------------------------------------


def free_queue_after_two_requests(policy: ControlPlanePolicy) -> list[int]:
    """Pool of 6, blocks of 4: A = 4 tokens (block 1, full, hashed), B = 6 tokens (block 2 full
    and hashed, block 3 partial, no hash); free A, then B (tail first)."""
    kv = kv_manager(policy)
    a, b = Request([1, 2, 3, 4], greedy()), Request([5, 6, 7, 8, 9, 10], greedy())
    kv.allocate_slots(a, 4)
    kv.allocate_slots(b, 6)
    assert (kv.get_block_ids(a.request_id), kv.get_block_ids(b.request_id)) == ([1], [2, 3])
    kv.free(a)
    kv.free(b)
    return free_queue_ids(kv)


def cached_tokens_after_evicting_the_first_twin(policy: ControlPlanePolicy) -> int:
    """Two identical 4-token prompts compute one block each (a 4-token prompt cannot hit: its
    last token is always computed). A finishes; C's 4 blocks then evict A's block 1, while B
    still holds block 2. How many tokens does a 5-token prompt starting like A find cached?"""
    kv = kv_manager(policy)
    a, b = Request([1, 2, 3, 4], greedy()), Request([1, 2, 3, 4], greedy())
    kv.allocate_slots(a, 4)
    kv.allocate_slots(b, 4)
    kv.free(a)
    c = Request([9] * 16, greedy())
    kv.allocate_slots(c, 16)
    assert 1 in kv.get_block_ids(c.request_id), "C must reuse (evict) A's block 1"
    return kv.get_computed_blocks(Request([1, 2, 3, 4, 5], greedy()))[1]


def steps_and_preemptions(engine: LLMEngine, prompts: list[str],
                          max_tokens: int) -> tuple[list[dict[str, int]], int]:
    """Each step's {request name: tokens} (names A, B, ... in prompt order) and the total
    number of preemptions, running the prompts to the end."""
    outputs = record_schedules(engine)
    names = {engine.add_request(p, greedy(max_tokens)): chr(ord("A") + i)
             for i, p in enumerate(prompts)}
    preemptions = 0
    while engine.has_unfinished_requests():
        preemptions += sum(r.num_preemptions for r in engine.step())
    steps = [{names[rid]: n for rid, n in out.num_scheduled_tokens.items()} for out in outputs]
    return steps, preemptions


def admission_of_a_prompt_that_fits_only_in_part(
        policy: ControlPlanePolicy) -> tuple[list[dict[str, int]], int]:
    """4 usable blocks of 4, 12-token budget: A (8 tokens) takes 2 blocks and 8 of the budget,
    B (12 tokens, 3 blocks) has 4 of the budget left and 2 free blocks: its first chunk fits,
    its whole prompt does not."""
    engine = LLMEngine(num_blocks=5, block_size=4, max_num_batched_tokens=12, policy=policy)
    return steps_and_preemptions(engine, ["abcdefgh", "ijklmnopqrst"], max_tokens=2)


def steps_of_a_lone_long_prompt(policy: ControlPlanePolicy) -> list[dict[str, int]]:
    """One 10-token prompt, long_prefill_token_threshold=4."""
    engine = LLMEngine(long_prefill_token_threshold=4, policy=policy)
    return steps_and_preemptions(engine, ["abcdefghij"], max_tokens=2)[0]


# option -> (its example, the course's answer, vLLM 0.32's answer)
EXAMPLES: dict[str, tuple[Callable[[ControlPlanePolicy], Any], Any, Any]] = {
    "free_unhashed_blocks_first": (
        free_queue_after_two_requests,
        [4, 5, 1, 3, 2],  # every freed block appended: next 3 allocations evict A's prefix
        [3, 4, 5, 1, 2],  # B's unhashed block 3 in front: A's and B's prefixes evicted last
    ),
    "cache_duplicate_blocks": (cached_tokens_after_evicting_the_first_twin, 0, 4),
    "scheduler_reserve_full_isl": (
        admission_of_a_prompt_that_fits_only_in_part,
        # admitted with its first chunk, preempted the next step, re-admitted with a 4-token hit
        ([{"A": 8, "B": 4}, {"A": 1}, {"B": 8}, {"B": 1}], 1),
        ([{"A": 8}, {"A": 1}, {"B": 12}, {"B": 1}], 0),  # waits until all 12 tokens fit
    ),
    "lone_request_ignores_long_prefill_threshold": (
        steps_of_a_lone_long_prompt,
        [{"A": 4}, {"A": 4}, {"A": 2}, {"A": 1}],
        [{"A": 10}, {"A": 1}],
    ),
}

POLICIES = [
    pytest.param(COURSE, id="course"),
    pytest.param(VLLM_032, id="vllm-0.32"),
    *(pytest.param(ControlPlanePolicy(**{name: True}), id=f"only-{name}") for name in OPTIONS),
]


def test_every_option_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(OPTIONS), "each ControlPlanePolicy option needs an example"


@pytest.mark.parametrize("policy", POLICIES)
def test_each_option_moves_exactly_its_own_example(policy: ControlPlanePolicy) -> None:
    for option, (example, course, vllm) in EXAMPLES.items():
        on = getattr(policy, option)
        expected = vllm if on else course
        got = example(policy)
        assert got == expected, (
            f"{example.__name__} with {option}={'on' if on else 'off'} ({policy}): expected "
            f"{'vLLM 0.32' if on else 'the course'}'s {expected}, got {got}"
        )


def test_presets_and_the_default() -> None:
    assert get_policy("course") == ControlPlanePolicy(), "the course preset is all options off"
    assert all(getattr(VLLM_032, name) for name in OPTIONS), f"vllm-0.32 is all on: {VLLM_032}"
    assert LLMEngine().policy == COURSE, "the engine's default policy must be the course"
    assert LLMEngine(policy="vllm-0.32").policy == VLLM_032
    one = ControlPlanePolicy(scheduler_reserve_full_isl=True)
    engine = LLMEngine(policy=one)
    assert engine.scheduler.scheduler_reserve_full_isl is True
    assert engine.kv_cache_manager.block_pool.free_unhashed_blocks_first is False
    with pytest.raises(ValueError, match="vllm-0.32"):
        LLMEngine(policy="vllm-0.31")


class CourseOnlyPool(BlockPool):
    """A pool with the course's constructor, like a learner's from kata 02-01."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        super().__init__(num_blocks, enable_caching)


def test_a_course_only_pool_still_drives_the_default_engine() -> None:
    stock = output_ids(LLMEngine(block_size=4), PROMPTS, greedy(6))
    learner = output_ids(LLMEngine(block_size=4, block_pool_cls=CourseOnlyPool), PROMPTS,
                         greedy(6))
    assert_same_outputs(stock, learner, labels=("stock pool", "course-only pool"))
    with pytest.raises(TypeError, match="free_unhashed_blocks_first"):
        LLMEngine(block_pool_cls=CourseOnlyPool, policy="vllm-0.32")


# -- each rule's exact condition -----------------------------------------------------------------


def test_unhashed_first_keeps_the_given_order_and_covers_caching_off() -> None:
    # Upstream puts a block first when it has no hash *or* caching is off; with caching off no
    # block ever gets a hash, so every freed block goes to the front, in the order freed.
    kv = kv_manager(VLLM_032, enable_caching=False)
    a, b = Request([1, 2, 3, 4], greedy()), Request([5, 6, 7, 8, 9, 10], greedy())
    kv.allocate_slots(a, 4)
    kv.allocate_slots(b, 6)
    kv.free(a)
    kv.free(b)
    assert free_queue_ids(kv) == [3, 2, 1, 4, 5], free_queue_ids(kv)
    check_block_pool(kv.block_pool)


def test_twins_lookup_the_oldest_and_eviction_drops_only_that_block() -> None:
    # Upstream's BlockHashToBlockMap: {block_id: block} in insertion order, get_one_block takes
    # the first, pop(hash, block_id) removes that block alone.
    pool = BlockPool(num_blocks=7, cache_duplicate_blocks=True)
    a, b, c, d = pool.get_new_blocks(4)
    for block in (a, b, c, d):
        pool.cache_full_blocks([block], [77])
    assert [blk.block_hash for blk in (a, b, c, d)] == [77] * 4, "every twin carries the hash"
    assert pool.get_cached_block(77) is a, "a lookup returns the earliest registered twin"
    pool.free_blocks([b, a, c, d])  # queue: 5, 6, b, a, c, d
    pool.get_new_blocks(3)  # 5, 6 and b: b evicted
    assert b.block_hash is None and pool.get_cached_block(77) is a, "evicting b keeps a"
    assert list(pool.duplicate_cached_blocks[77].values()) == [c, d]
    pool.get_new_blocks(1)  # a evicted
    assert pool.get_cached_block(77) is c, "when a goes, the next oldest twin (c) takes over"
    assert list(pool.duplicate_cached_blocks[77].values()) == [d]
    pool.get_new_blocks(1)  # c evicted
    assert pool.get_cached_block(77) is d and 77 not in pool.duplicate_cached_blocks
    pool.get_new_blocks(1)  # d evicted
    assert pool.get_cached_block(77) is None and not pool.duplicate_cached_blocks
    check_block_pool(pool)


def test_full_input_reservation_counts_prefix_hits() -> None:
    # 4 usable blocks; A (8 tokens) holds 2. B = A's 8 tokens + 4 more (3 blocks) hits A's 2
    # blocks, so its whole input needs 1 free block; D (12 new tokens) needs 3, and 2 are free.
    kv = kv_manager(VLLM_032, num_blocks=5)
    a = Request(list(range(1, 9)), greedy())
    kv.allocate_slots(a, 8)
    d = Request(list(range(50, 62)), greedy())
    assert kv.allocate_slots(d, 4) is not None, "without the gate the first chunk fits"
    kv.free(d)
    assert kv.allocate_slots(d, 4, full_sequence_must_fit=True) is None, (
        "D's 12 tokens need 3 blocks and only 2 are free: the whole-input gate must refuse"
    )
    b = Request(list(range(1, 13)), greedy())
    hits, num_cached = kv.get_computed_blocks(b)
    assert num_cached == 8
    b.num_computed_tokens = num_cached
    assert kv.allocate_slots(b, 4, hits, full_sequence_must_fit=True) is not None, (
        "B's hit blocks are held by A already: its whole input needs just 1 of the 2 free blocks"
    )


def test_the_threshold_applies_while_others_are_in_the_step() -> None:
    # vLLM 0.32 counts running + waiting once, at the start of each step: with A (4 tokens,
    # 1 output) there, B (10 tokens) is capped; A finishes in step 1, so step 2 finds B alone.
    for policy, expected in [("course", [{"A": 4, "B": 4}, {"B": 4}, {"B": 2}]),
                             ("vllm-0.32", [{"A": 4, "B": 4}, {"B": 6}])]:
        engine = LLMEngine(long_prefill_token_threshold=4, policy=policy)
        steps, _ = steps_and_preemptions(engine, ["abcd", "klmnopqrst"], max_tokens=1)
        assert steps == expected, f"{policy}: expected steps {expected}, got {steps}"


# -- reset_prefix_cache --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [COURSE, VLLM_032], ids=["course", "vllm-0.32"])
def test_reset_prefix_cache_refuses_while_blocks_are_in_use(policy: ControlPlanePolicy) -> None:
    kv = kv_manager(policy)
    a, b = Request([1, 2, 3, 4, 5], greedy()), Request([1, 2, 3, 4, 6], greedy())
    kv.allocate_slots(a, 5)
    kv.allocate_slots(b, 5)
    hashed = {blk.block_id: blk.block_hash for blk in kv.block_pool.blocks}
    index = dict(kv.block_pool.cached_block_hash_to_block)
    assert kv.reset_prefix_cache() is False, "blocks are in use: the reset must be refused"
    assert {blk.block_id: blk.block_hash for blk in kv.block_pool.blocks} == hashed
    assert kv.block_pool.cached_block_hash_to_block == index, "a refused reset changes nothing"
    kv.free(a)
    assert kv.block_pool.reset_prefix_cache() is False, "b still holds blocks"
    kv.free(b)
    assert kv.reset_prefix_cache() is True, "every block is free: the reset must succeed"
    assert not kv.block_pool.cached_block_hash_to_block
    assert not kv.block_pool.duplicate_cached_blocks
    assert all(blk.block_hash is None for blk in kv.block_pool.blocks)
    assert kv.get_computed_blocks(Request([1, 2, 3, 4, 5], greedy()))[1] == 0
    check_block_pool(kv.block_pool)


def test_double_free_is_still_refused_and_leaves_the_queue_whole() -> None:
    pool = BlockPool(num_blocks=6, free_unhashed_blocks_first=True)
    first, second = pool.get_new_blocks(2)
    pool.free_blocks([first])
    with pytest.raises(ValueError, match="freed more times"):
        pool.free_blocks([second, first])
    # `second` was released before the error: it must be queued, not leaked.
    check_block_pool(pool)
    assert pool.get_num_free_blocks() == 5


# -- the master invariants under the preset ------------------------------------------------------


def test_preset_chunked_matches_unchunked_and_the_course() -> None:
    params = greedy(12)
    course = output_ids(LLMEngine(), PROMPTS, params)
    plain = output_ids(LLMEngine(policy="vllm-0.32"), PROMPTS, params)
    chunked_engine = LLMEngine(long_prefill_token_threshold=3, max_num_batched_tokens=7,
                               policy="vllm-0.32")
    outputs = record_schedules(chunked_engine)
    chunked = output_ids(chunked_engine, PROMPTS, params)
    assert max(o.total_num_scheduled_tokens for o in outputs) <= 7, "chunking really happened"
    assert_same_outputs(plain, chunked, labels=("unchunked", "chunked"))
    assert_same_outputs(course, plain, labels=("course", "vllm-0.32"))


def test_preset_caching_on_matches_caching_off() -> None:
    prompts = ["S" * 64 + str(i) for i in range(8)] + PROMPTS + PROMPTS  # repeats make twins
    params = greedy(12)
    off = output_ids(LLMEngine(block_size=4, enable_caching=False, policy="vllm-0.32"), prompts,
                     params)
    on_engine = LLMEngine(block_size=4, policy="vllm-0.32")
    on = output_ids(on_engine, prompts, params)
    assert on_engine.kv_cache_manager.block_pool.duplicate_cached_blocks, (
        "identical prompts in one batch should leave twin blocks registered"
    )
    assert_same_outputs(off, on, labels=("caching off", "caching on"))


def test_preset_cramped_pool_matches_roomy_pool() -> None:
    prompts = ["abcdefgh", "ijklmnop", "abcdefgh"]  # 8 + 8 - 1 = 15 slots <= 16 usable
    roomy = LLMEngine(num_blocks=256, block_size=4, policy="vllm-0.32").generate(
        prompts, greedy(8))
    cramped = LLMEngine(num_blocks=5, block_size=4, policy="vllm-0.32").generate(
        prompts, greedy(8))
    assert sum(r.num_preemptions for r in cramped) > 0, "the cramped pool must preempt"
    assert sum(r.num_preemptions for r in roomy) == 0
    assert_same_outputs(
        [r.output_token_ids for r in roomy],
        [r.output_token_ids for r in cramped],
        labels=("roomy", "cramped"),
    )


def check_twins(pool: BlockPool) -> None:
    """Every registered twin carries its hash and is not also the block lookups return."""
    for block_hash, twins in pool.duplicate_cached_blocks.items():
        assert twins, f"empty twin map left behind for hash {block_hash!r}"
        owner = pool.cached_block_hash_to_block.get(block_hash)
        assert owner is not None, f"hash {block_hash!r} has twins but no block lookups return"
        for block_id, block in twins.items():
            assert block.block_id == block_id and block.block_hash == block_hash, (
                f"twin {block_id} under hash {block_hash!r} holds hash {block.block_hash!r}"
            )
            assert block is not owner, f"block {block_id} is both owner and twin"


def test_preset_keeps_pool_invariants_every_step() -> None:
    engine = LLMEngine(num_blocks=9, block_size=4, max_num_batched_tokens=10,
                       long_prefill_token_threshold=3, policy="vllm-0.32")
    kv = engine.kv_cache_manager
    for prompt in ["abcdefgh", "abcdefgh", "abcdefghijkl", "xyzw", "xyzw", "abcdefgh"]:
        engine.add_request(prompt, greedy(6))
    original = engine.scheduler.schedule

    def checked_schedule() -> Any:
        out = original()
        check_kv_covers_schedule(out, kv.req_to_blocks, kv.block_size)
        return out

    engine.scheduler.schedule = checked_schedule  # type: ignore[method-assign]
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
        check_block_pool(kv.block_pool)
        check_block_tables(kv.block_pool, kv.req_to_blocks)
        check_twins(kv.block_pool)
    assert steps > 6 and kv.block_pool.get_num_free_blocks() == 8


class PresetBlockPoolMachine(BlockPoolMachine):
    """The block pool's random-sequence machine with both pool options on, plus twins."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(num_blocks=9, **VLLM_032.block_pool_options())

    @precondition(lambda self: bool(self.tables) and bool(self.pool.cached_block_hash_to_block))
    @rule(data=st.data())
    def cache_a_twin(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.tables)))
        block_hash = data.draw(st.sampled_from(sorted(self.pool.cached_block_hash_to_block)))
        self.pool.cache_full_blocks(self.tables[owner][:1], [block_hash])

    @invariant()
    def twins_are_consistent(self) -> None:
        check_twins(self.pool)


TestPresetBlockPoolMachine = PresetBlockPoolMachine.TestCase
TestPresetBlockPoolMachine.settings = settings(max_examples=60, stateful_step_count=30,
                                               deadline=None)
