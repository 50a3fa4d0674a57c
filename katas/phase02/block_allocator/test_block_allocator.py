"""Spec for kata 02-01: the free queue, the chained hash and the block pool keep I1–I4.

Every test that mutates a pool re-checks the shared invariant checkers
(``pytest_vllm_katas.invariants``) afterwards, so a test fails at the first operation that
breaks a rule, with the rule's name in the message.
"""

from __future__ import annotations

import linecache
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import mini_vllm
from mini_vllm import KVCacheBlock, KVCacheManager, LLMEngine, Request, SamplingParams
from pytest_vllm_katas import expect_raises, first_step_difference
from pytest_vllm_katas.invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
)
from pytest_vllm_katas.live import vllm_twins
from pytest_vllm_katas.live.fixtures import require_vllm

pytestmark = pytest.mark.cpu_ok

ROOT = Path(__file__).resolve().parents[3]


# -- tiny builders ----------------------------------------------------------------------------


def ids(blocks) -> list[int]:
    return [b.block_id for b in blocks]


def link_ids(block) -> tuple:
    """(prev_free, next_free) of ``block`` as ids (None where unlinked), for messages."""
    return tuple(None if b is None else b.block_id for b in (block.prev_free, block.next_free))


def free_ids(pool) -> list[int]:
    return ids(pool.free_queue.get_all_free_blocks())


def take_one(pool):
    """``pool.get_new_blocks(1)``'s one block, or a failure saying what came back instead."""
    got = pool.get_new_blocks(1)
    assert isinstance(got, list) and len(got) == 1, (
        f"get_new_blocks(1) returns a list of one block, got {got!r}"
    )
    return got[0]


def checked(pool, tables=None):
    """Run the shared checkers on ``pool`` (and on ``tables``: owner -> blocks); return it."""
    check_block_pool(pool)
    if tables is not None:
        check_block_tables(pool, tables)
    return pool


def link_counting_blocks(n: int) -> tuple[list[KVCacheBlock], list[int]]:
    """``n`` blocks that count every read or write of their ``prev_free`` / ``next_free``."""
    counter = [0]

    class LinkCountingBlock(KVCacheBlock):
        def __getattribute__(self, name: str):
            if name in ("prev_free", "next_free"):
                counter[0] += 1
            return object.__getattribute__(self, name)

        def __setattr__(self, name: str, value) -> None:
            if name in ("prev_free", "next_free"):
                counter[0] += 1
            object.__setattr__(self, name, value)

    return [LinkCountingBlock(block_id=i) for i in range(n)], counter


# -- the free queue ---------------------------------------------------------------------------


def test_new_queue_holds_the_blocks_in_the_order_given(impl) -> None:
    blocks = [KVCacheBlock(block_id=i) for i in (3, 0, 4, 1)]
    queue = impl.FreeKVCacheBlockQueue(blocks)
    assert ids(queue.get_all_free_blocks()) == [3, 0, 4, 1], (
        f"a new queue keeps the order it was given; got {ids(queue.get_all_free_blocks())}"
    )
    assert queue.num_free_blocks == 4, f"num_free_blocks should be 4, got {queue.num_free_blocks}"
    assert ids(impl.FreeKVCacheBlockQueue([]).get_all_free_blocks()) == [], (
        "an empty queue holds nothing: the sentinels must never appear in get_all_free_blocks()"
    )


def test_popleft_takes_the_front_and_unlinks_it(impl) -> None:
    blocks = [KVCacheBlock(block_id=i) for i in range(4)]
    queue = impl.FreeKVCacheBlockQueue(blocks)
    first = queue.popleft()
    assert first is blocks[0], f"popleft should return the front block 0, got {first.block_id}"
    assert first.prev_free is None and first.next_free is None, (
        f"a popped block must have prev_free and next_free reset to None, got "
        f"{link_ids(first)}"
    )
    assert ids(queue.get_all_free_blocks()) == [1, 2, 3] and queue.num_free_blocks == 3, (
        f"after one popleft the queue should be [1, 2, 3] with num_free_blocks 3; got "
        f"{ids(queue.get_all_free_blocks())} with {queue.num_free_blocks}"
    )


def test_popleft_on_an_empty_queue_raises_value_error(impl) -> None:
    queue = impl.FreeKVCacheBlockQueue([KVCacheBlock(block_id=7)])
    queue.popleft()
    with expect_raises(ValueError, "popleft on an empty queue has no block to give"):
        queue.popleft()
    assert queue.num_free_blocks == 0, (
        f"a failed popleft must not change num_free_blocks: 0, got {queue.num_free_blocks}"
    )


def test_append_goes_to_the_back(impl) -> None:
    blocks = [KVCacheBlock(block_id=i) for i in range(4)]
    queue = impl.FreeKVCacheBlockQueue(blocks[:2])
    queue.append(blocks[3])
    queue.append(blocks[2])
    assert ids(queue.get_all_free_blocks()) == [0, 1, 3, 2], (
        f"append adds at the back: expected [0, 1, 3, 2], got {ids(queue.get_all_free_blocks())}"
    )
    assert queue.num_free_blocks == 4, f"num_free_blocks should be 4, got {queue.num_free_blocks}"


@pytest.mark.parametrize("position", ["front", "middle", "back"])
def test_remove_keeps_the_rest_in_order(impl, position: str) -> None:
    blocks = [KVCacheBlock(block_id=i) for i in range(5)]
    queue = impl.FreeKVCacheBlockQueue(blocks)
    victim = {"front": 0, "middle": 2, "back": 4}[position]
    queue.remove(blocks[victim])
    expected = [i for i in range(5) if i != victim]
    assert ids(queue.get_all_free_blocks()) == expected, (
        f"removing block {victim} should leave {expected}, got {ids(queue.get_all_free_blocks())}"
    )
    assert queue.num_free_blocks == 4, f"num_free_blocks should be 4, got {queue.num_free_blocks}"
    assert blocks[victim].prev_free is None and blocks[victim].next_free is None, (
        f"a removed block must have prev_free and next_free reset to None, got "
        f"{link_ids(blocks[victim])}"
    )
    queue.append(blocks[victim])
    assert ids(queue.get_all_free_blocks()) == [*expected, victim], (
        f"a removed block can be appended again, at the back: expected {[*expected, victim]}, "
        f"got {ids(queue.get_all_free_blocks())}"
    )


def test_free_queue_o1_middle_removal(impl) -> None:
    touches = {}
    for n in (8, 1024):
        blocks, counter = link_counting_blocks(n)
        queue = impl.FreeKVCacheBlockQueue(blocks)
        counter[0] = 0
        queue.remove(blocks[n // 2])
        touches[n] = counter[0]
        walked = queue.get_all_free_blocks()
        assert len(walked) == n - 1 and blocks[n // 2] not in walked, (
            f"remove() left the block in the queue or lost others ({len(walked)} of {n - 1})"
        )
    assert touches[8] == touches[1024] and touches[1024] <= 12, (
        f"remove() read or wrote prev_free/next_free {touches[8]} times in an 8-block queue and "
        f"{touches[1024]} times in a 1024-block queue: it must relink only the two neighbours "
        "(O(1)), never walk the queue"
    )


# -- the chained hash -------------------------------------------------------------------------


def test_prefix_hash_is_chained(impl) -> None:
    cd = [3, 4]
    first = impl.hash_block_tokens(None, cd)
    again = impl.hash_block_tokens(None, cd)
    assert again == first, f"the same block must hash the same twice, got {first} then {again}"
    assert impl.hash_block_tokens(None, tuple(cd)) == first, (
        "a list and a tuple of the same tokens must hash the same"
    )
    after_ab = impl.hash_block_tokens(impl.hash_block_tokens(None, [1, 2]), cd)
    after_xy = impl.hash_block_tokens(impl.hash_block_tokens(None, [9, 9]), cd)
    assert after_ab != after_xy, (
        "the block [3, 4] after [1, 2] must not hash like [3, 4] after [9, 9]: put the parent's "
        "hash inside, or a request inherits KV computed under a different prefix"
    )
    assert impl.hash_block_tokens(None, [4, 3]) != first, (
        "token order inside a block matters: [3, 4] and [4, 3] hashed the same"
    )
    assert isinstance(first, int), f"a block hash is an int, got {type(first).__name__}"


# Runs the module under test from its source text (the learner's file, the reference, or a
# variant compiled in memory alike) and prints one chained hash.
HASH_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, ".")
namespace = {"__name__": "hashed_elsewhere"}
exec(compile(sys.stdin.read(), "module_under_test", "exec"), namespace)
t = [104, 101, 108, 108]
h = namespace["hash_block_tokens"]
print(h(h(None, t), t))
"""


def test_hash_is_the_same_in_every_process(impl) -> None:
    tokens = [104, 101, 108, 108]
    here = impl.hash_block_tokens(impl.hash_block_tokens(None, tokens), tokens)
    source = "".join(linecache.getlines(impl.__file__))
    assert source, f"test setup: cannot read the source of {impl.__name__}"
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", HASH_IN_A_FRESH_PROCESS], input=source, cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, (
            f"could not run hash_block_tokens in a fresh process:\n{done.stderr[-2000:]}"
        )
        seen.add(int(done.stdout.strip()))
    assert seen == {here}, (
        f"the same two blocks hashed to {sorted(seen)} in fresh processes (PYTHONHASHSEED 1 and "
        f"2) and to {here} here: hash only ints and tuples of ints (Python salts the hash of a "
        "str or bytes per process, and before 3.12 hash(None) is derived from an address: give "
        "the first block a fixed int parent instead of None)"
    )


# -- the pool ---------------------------------------------------------------------------------


def test_new_pool_reserves_block_zero_as_the_null_block(impl) -> None:
    pool = checked(impl.BlockPool(num_blocks=6))
    assert pool.null_block.block_id == 0 and pool.null_block.is_null, (
        f"block 0 is the null block (is_null=True), got {pool.null_block}"
    )
    assert free_ids(pool) == [1, 2, 3, 4, 5], (
        f"a new pool's queue holds blocks 1..5 in id order, got {free_ids(pool)}"
    )
    assert pool.get_num_free_blocks() == 5, f"5 usable blocks, got {pool.get_num_free_blocks()}"
    assert pool.get_usage() == 0.0, f"nothing is used yet: usage 0.0, got {pool.get_usage()}"


def test_get_new_blocks_pops_from_the_front_with_one_reference(impl) -> None:
    pool = impl.BlockPool(num_blocks=8)
    got = pool.get_new_blocks(3)
    assert ids(got) == [1, 2, 3], f"the first 3 blocks handed out are [1, 2, 3], got {ids(got)}"
    assert [b.ref_cnt for b in got] == [1, 1, 1], (
        f"new blocks start with ref_cnt 1, got {[b.ref_cnt for b in got]}"
    )
    assert free_ids(pool) == [4, 5, 6, 7], f"the queue should be [4..7], got {free_ids(pool)}"
    checked(pool, {"a": got})


def test_get_new_blocks_beyond_free_raises_and_changes_nothing(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    held = pool.get_new_blocks(1)
    with expect_raises(ValueError, "3 blocks were asked for and only 2 are free"):
        pool.get_new_blocks(3)
    assert free_ids(pool) == [2, 3] and pool.get_num_free_blocks() == 2, (
        f"a refused allocation must take nothing: expected free [2, 3], got {free_ids(pool)}"
    )
    checked(pool, {"a": held})


def test_free_blocks_appends_in_the_order_given(impl) -> None:
    pool = impl.BlockPool(num_blocks=8)
    got = pool.get_new_blocks(3)
    pool.free_blocks(reversed(got))
    assert free_ids(pool) == [4, 5, 6, 7, 3, 2, 1], (
        f"freeing [3, 2, 1] appends them in that order behind the untouched blocks: expected "
        f"[4, 5, 6, 7, 3, 2, 1], got {free_ids(pool)}"
    )
    assert all(b.ref_cnt == 0 for b in got), (
        f"freed blocks are back to ref_cnt 0, got {[b.ref_cnt for b in got]}"
    )
    checked(pool, {})


def test_a_shared_block_stays_out_of_the_queue_until_its_last_holder_frees_it(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    block = take_one(pool)
    pool.touch([block])
    assert block.ref_cnt == 2, f"touch on a held block adds a reference: 2, got {block.ref_cnt}"
    pool.free_blocks([block])
    assert block.ref_cnt == 1 and block.block_id not in free_ids(pool), (
        f"after one of two holders frees it the block has ref_cnt 1 and stays out of the queue "
        f"(I1); got ref_cnt {block.ref_cnt}, free queue {free_ids(pool)}"
    )
    checked(pool, {"b": [block]})
    pool.free_blocks([block])
    assert free_ids(pool)[-1:] == [block.block_id], (
        f"the last free puts block {block.block_id} at the back of the queue, got {free_ids(pool)}"
    )
    checked(pool, {})


def test_freeing_a_free_block_raises_value_error(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    block = take_one(pool)
    pool.free_blocks([block])
    with expect_raises(ValueError, "the block's ref_cnt is already 0: this free has no holder"):
        pool.free_blocks([block])
    assert free_ids(pool).count(block.block_id) == 1, (
        f"a double free must not queue a block twice, got free queue {free_ids(pool)}"
    )
    checked(pool, {})


def test_usage_excludes_the_null_block(impl) -> None:
    pool = impl.BlockPool(num_blocks=5)
    usages = [pool.get_usage()]
    first = pool.get_new_blocks(2)
    usages.append(pool.get_usage())
    pool.get_new_blocks(2)
    usages.append(pool.get_usage())
    pool.free_blocks(first[:1])
    usages.append(pool.get_usage())
    assert usages == [0.0, 0.5, 1.0, 0.75], (
        f"4 usable blocks (the null block does not count): usage after holding 0, 2, 4, 3 "
        f"blocks is [0.0, 0.5, 1.0, 0.75]; got {usages}"
    )


def test_null_block_is_never_handed_out_freed_queued_or_cached(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    null = pool.null_block
    pool.free_blocks([null])
    pool.touch([null])
    pool.cache_full_blocks([null], [impl.hash_block_tokens(None, [1])])
    assert null.block_id not in free_ids(pool), (
        f"the null block must never enter the free queue, got {free_ids(pool)}"
    )
    assert pool.get_cached_block(impl.hash_block_tokens(None, [1])) is None, (
        "the null block must never be cached"
    )
    assert pool.get_num_free_blocks() == 3 and null.ref_cnt == 0, (
        f"free/touch on the null block must change no count: 3 free and null ref_cnt 0, got "
        f"{pool.get_num_free_blocks()} free and null ref_cnt {null.ref_cnt}"
    )
    handed = pool.get_new_blocks(3)
    assert null not in handed, f"the null block must never be handed out, got {ids(handed)}"
    checked(pool, {"a": handed})


def test_identical_content_is_never_deduplicated(impl) -> None:
    pool = impl.BlockPool(num_blocks=5)
    a = take_one(pool)
    b = take_one(pool)
    h = impl.hash_block_tokens(None, [1, 2, 3, 4])
    pool.cache_full_blocks([a], [h])
    pool.cache_full_blocks([b], [h])
    assert a is not b and (a.ref_cnt, b.ref_cnt) == (1, 1), (
        f"two requests that wrote the same tokens keep two different blocks (I2), each with "
        f"ref_cnt 1; got blocks {a.block_id} and {b.block_id} with {a.ref_cnt} and {b.ref_cnt}"
    )
    owner = pool.get_cached_block(h)
    assert owner is a, (
        f"the first block registered (block {a.block_id}) keeps the index entry, got "
        f"{None if owner is None else owner.block_id}"
    )
    assert b.block_hash is None, (
        f"the twin of an indexed block stays unhashed (one block per hash), got {b.block_hash}"
    )
    checked(pool, {"a": [a], "b": [b]})


def test_cache_full_blocks_skips_blocks_that_already_have_a_hash(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    block = take_one(pool)
    first, second = impl.hash_block_tokens(None, [1]), impl.hash_block_tokens(None, [2])
    pool.cache_full_blocks([block], [first])
    pool.cache_full_blocks([block], [second])
    assert block.block_hash == first and pool.get_cached_block(second) is None, (
        "a block that already carries a hash (a prefix hit) is skipped, not re-registered"
    )
    checked(pool, {"a": [block]})


def test_caching_disabled_pool_indexes_nothing(impl) -> None:
    pool = impl.BlockPool(num_blocks=4, enable_caching=False)
    blocks = pool.get_new_blocks(2)
    hashes = [impl.hash_block_tokens(None, [i]) for i in range(2)]
    pool.cache_full_blocks(blocks, hashes)
    assert [pool.get_cached_block(h) for h in hashes] == [None, None], (
        "with enable_caching=False cache_full_blocks must do nothing"
    )
    checked(pool, {"a": blocks})


def test_freed_block_keeps_its_hash_until_reused(impl) -> None:
    pool = impl.BlockPool(num_blocks=4)
    blocks = pool.get_new_blocks(2)
    hashes = [impl.hash_block_tokens(None, [i]) for i in range(2)]
    pool.cache_full_blocks(blocks, hashes)
    pool.free_blocks(blocks)
    assert [pool.get_cached_block(h) for h in hashes] == blocks, (
        "a freed block is still a prefix-cache hit target until it is reused (I4: cached is "
        "not unusable)"
    )
    checked(pool, {})


def test_touch_revives_a_cached_free_block_from_the_middle(impl) -> None:
    pool = impl.BlockPool(num_blocks=6)
    blocks = pool.get_new_blocks(3)
    hashes = [impl.hash_block_tokens(None, [i]) for i in range(3)]
    pool.cache_full_blocks(blocks, hashes)
    pool.free_blocks(blocks)
    assert free_ids(pool) == [4, 5, 1, 2, 3], f"setup: queue [4, 5, 1, 2, 3], got {free_ids(pool)}"
    hit = pool.get_cached_block(hashes[1])
    assert hit is blocks[1] and hit.ref_cnt == 0, (
        f"the hit is block 2, free (ref_cnt 0) and still cached; got {hit}"
    )
    pool.touch([hit])
    assert hit.ref_cnt == 1, f"touch takes a reference: ref_cnt 1, got {hit.ref_cnt}"
    assert free_ids(pool) == [4, 5, 1, 3], (
        f"touch pulls the block out of the middle of the queue: expected [4, 5, 1, 3], got "
        f"{free_ids(pool)}"
    )
    assert pool.get_cached_block(hashes[1]) is hit, (
        f"a revived block stays cached, got {pool.get_cached_block(hashes[1])}"
    )
    checked(pool, {"reviver": [hit]})


def test_reusing_a_cached_free_block_evicts_its_index_entry(impl) -> None:
    pool = impl.BlockPool(num_blocks=3)
    blocks = pool.get_new_blocks(2)
    h = impl.hash_block_tokens(None, [1])
    pool.cache_full_blocks(blocks[:1], [h])
    pool.free_blocks(blocks)
    reused = pool.get_new_blocks(2)
    assert blocks[0] in reused and blocks[0].block_hash is None, (
        f"get_new_blocks must clear the hash of a cached block it hands out (lazy eviction); "
        f"handed out {ids(reused)}, block 1 now {blocks[0]}"
    )
    stale = pool.get_cached_block(h)
    assert stale is None, (
        f"the index entry must go with it, or a later prompt 'hits' KV that is being "
        f"overwritten; the index still maps the hash to {stale}"
    )
    checked(pool, {"a": reused})


def test_eviction_follows_the_free_queue_order(impl) -> None:
    pool = impl.BlockPool(num_blocks=6)
    blocks = pool.get_new_blocks(5)
    hashes = [impl.hash_block_tokens(None, [i]) for i in range(5)]
    pool.cache_full_blocks(blocks, hashes)
    order = [2, 0, 4, 1, 3]
    pool.free_blocks([blocks[i] for i in order])
    survivors = []
    for _ in range(3):
        pool.get_new_blocks(1)
        survivors.append(sorted(i for i, h in enumerate(hashes) if pool.get_cached_block(h)))
    assert survivors == [[0, 1, 3, 4], [1, 3, 4], [1, 3]], (
        f"blocks freed in the order {order} are evicted in that order; cached survivors after "
        f"each allocation should be [[0, 1, 3, 4], [1, 3, 4], [1, 3]], got {survivors}"
    )
    checked(pool)


def test_partial_blocks_are_never_cached(impl) -> None:
    # The pool cannot know whether a block is full: mini_vllm's KVCacheManager, which knows the
    # block size, passes it only full blocks. Here it runs on your pool.
    kv = KVCacheManager(num_blocks=8, block_size=4, block_pool=impl.BlockPool(num_blocks=8))
    request = Request(list(range(10)), SamplingParams(max_tokens=4))
    kv.allocate_slots(request, 10)
    table = kv.get_blocks(request.request_id)
    hashed = [b.block_hash is not None for b in table]
    assert hashed == [True, True, False], (
        f"10 tokens in blocks of 4 fill 2 blocks; only those are cached: expected "
        f"[True, True, False], got {hashed}"
    )
    checked(kv.block_pool, kv.req_to_blocks)
    request.num_computed_tokens = 10
    request.append_output_token(1)
    request.append_output_token(2)
    kv.allocate_slots(request, 2)
    assert table[2].block_hash is not None, (
        "the third block is cached the moment its 12th token makes it full; it has no hash"
    )
    checked(kv.block_pool, kv.req_to_blocks)


# -- random operations against mini_vllm's pool ----------------------------------------------


class PoolAgainstMiniVllm(RuleBasedStateMachine):
    """Random allocate / free / cache / hit sequences, applied to your pool and to mini_vllm's.

    After every step the shared invariants must hold on yours, and the two pools must agree on
    everything observable: queue order, reference counts and the prefix index.
    """

    def __init__(self, impl) -> None:
        super().__init__()
        self.impl = impl
        self.pool = impl.BlockPool(num_blocks=9)
        self.model = mini_vllm.BlockPool(num_blocks=9)
        self.tables: dict[str, list[int]] = {}
        self.next_owner = 0

    def _adopt(self, block_ids: list[int]) -> None:
        self.tables[f"owner{self.next_owner}"] = block_ids
        self.next_owner += 1

    @rule(n=st.integers(min_value=1, max_value=4))
    def allocate(self, n: int) -> None:
        if n > self.model.get_num_free_blocks():
            with expect_raises(ValueError, f"get_new_blocks({n}) with only "
                               f"{self.model.get_num_free_blocks()} blocks free"):
                self.pool.get_new_blocks(n)
            return
        got = ids(self.pool.get_new_blocks(n))
        expected = ids(self.model.get_new_blocks(n))
        assert got == expected, f"get_new_blocks({n}) handed out {got}, expected {expected}"
        self._adopt(got)

    @precondition(lambda self: bool(self.tables))
    @rule(data=st.data(), reverse=st.booleans())
    def free(self, data: st.DataObject, reverse: bool) -> None:
        owner = data.draw(st.sampled_from(sorted(self.tables)))
        table = self.tables.pop(owner)
        order = list(reversed(table)) if reverse else table
        self.pool.free_blocks([self.pool.blocks[i] for i in order])
        self.model.free_blocks([self.model.blocks[i] for i in order])

    @precondition(lambda self: bool(self.tables))
    @rule(data=st.data())
    def cache(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.tables)))
        table = self.tables[owner]
        # Few distinct contents, so twins (the same hash on two blocks) happen often.
        contents = data.draw(st.lists(st.integers(0, 3), min_size=len(table), max_size=len(table)))
        hashes = [mini_vllm.hash_block_tokens(None, [c]) for c in contents]
        self.pool.cache_full_blocks([self.pool.blocks[i] for i in table], hashes)
        self.model.cache_full_blocks([self.model.blocks[i] for i in table], hashes)

    @precondition(lambda self: bool(self.model.cached_block_hash_to_block))
    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        block_hash = data.draw(st.sampled_from(sorted(self.model.cached_block_hash_to_block)))
        expected = self.model.get_cached_block(block_hash)
        got = self.pool.get_cached_block(block_hash)
        assert got is not None and got.block_id == expected.block_id, (
            f"get_cached_block should find block {expected.block_id}, got "
            f"{None if got is None else got.block_id}"
        )
        self.pool.touch([got])
        self.model.touch([expected])
        self._adopt([got.block_id])

    @invariant()
    def agrees_with_mini_vllm(self) -> None:
        tables = {o: [self.pool.blocks[i] for i in t] for o, t in self.tables.items()}
        checked(self.pool, tables)
        for what, probe in (
            ("free queue (front first)", free_ids),
            ("ref counts by block id", lambda p: [b.ref_cnt for b in p.blocks[1:]]),
            ("prefix index (hash -> block id)",
             lambda p: sorted((h, b.block_id) for h, b in p.cached_block_hash_to_block.items())),
            ("get_num_free_blocks()", lambda p: p.get_num_free_blocks()),
            ("get_usage()", lambda p: round(p.get_usage(), 9)),
        ):
            got, expected = probe(self.pool), probe(self.model)
            assert got == expected, f"{what}: got {got}, expected {expected}"


def test_random_operations_keep_every_invariant(impl) -> None:
    run_state_machine_as_test(
        lambda: PoolAgainstMiniVllm(impl),
        settings=settings(
            max_examples=60, stateful_step_count=25, deadline=None, database=None,
            derandomize=True,
        ),
    )


# -- your pool against vLLM's own BlockPool (live tier) ---------------------------------------

# Contents a cached block may stand for; more than the pool's 8 usable blocks, so a fresh one is
# always available.
CONTENTS = range(16)


class PoolAgainstVllm(RuleBasedStateMachine):
    """Your pool and vLLM 0.32's ``BlockPool`` under the same random operations.

    The course's rules and vLLM 0.32's differ in two places (README, "How vLLM 0.32 differs"): a
    freed block that holds no hash goes to the *front* of vLLM's free queue, and vLLM indexes
    several blocks under one hash. The operations stay where the rules agree, which is how a KV
    cache manager with prefix caching mostly uses a pool: every block is cached (it is full)
    before it is freed, and a content is cached only while no block holds it yet. There, after
    every operation, the two must agree on the free queue's order, every ref count, the prefix
    index and each block's hash.
    """

    def __init__(self, impl) -> None:
        super().__init__()
        self.pool = impl.BlockPool(num_blocks=9)
        self.vllm = vllm_twins.build_vllm_block_pool(9)
        self.tables: dict[str, list[int]] = {}
        self.next_owner = 0
        # One content, two spellings: your pool's int hash, vLLM's bytes hash.
        self.ours = {c: mini_vllm.hash_block_tokens(None, [c]) for c in CONTENTS}
        self.theirs = {c: f"content-{c}".encode() for c in CONTENTS}
        self.content_of = {**{h: c for c, h in self.ours.items()},
                           **{h: c for c, h in self.theirs.items()}}

    def _indexed(self) -> dict[int, int]:
        """content -> block id, as vLLM's index has it (the reference for what is cached)."""
        return {c: b.block_id for c in CONTENTS
                if (b := vllm_twins.vllm_cached_block(self.vllm, self.theirs[c])) is not None}

    def _unhashed(self, owner: str) -> list[int]:
        return [i for i in self.tables[owner] if self.vllm.blocks[i].block_hash is None]

    @rule(n=st.integers(min_value=1, max_value=4))
    def allocate(self, n: int) -> None:
        free = self.vllm.get_num_free_blocks()
        if n > free:
            with expect_raises(ValueError, f"get_new_blocks({n}) with only {free} blocks free"):
                self.pool.get_new_blocks(n)
            return
        got = ids(self.pool.get_new_blocks(n))
        expected = ids(self.vllm.get_new_blocks(n))
        assert got == expected, f"get_new_blocks({n}) handed out {got}; vLLM's gave {expected}"
        self.tables[f"owner{self.next_owner}"] = got
        self.next_owner += 1

    @precondition(lambda self: any(self._unhashed(o) for o in self.tables))
    @rule(data=st.data())
    def cache(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(o for o in self.tables if self._unhashed(o))))
        unhashed = self._unhashed(owner)
        k = data.draw(st.integers(min_value=1, max_value=len(unhashed)))
        fresh = sorted(set(CONTENTS) - set(self._indexed()))
        contents = data.draw(st.lists(st.sampled_from(fresh), min_size=k, max_size=k,
                                      unique=True))
        self.pool.cache_full_blocks([self.pool.blocks[i] for i in unhashed[:k]],
                                    [self.ours[c] for c in contents])
        vllm_twins.vllm_cache_blocks(self.vllm, [self.vllm.blocks[i] for i in unhashed[:k]],
                                     [self.theirs[c] for c in contents])

    @precondition(lambda self: any(not self._unhashed(o) for o in self.tables))
    @rule(data=st.data(), reverse=st.booleans())
    def free(self, data: st.DataObject, reverse: bool) -> None:
        owner = data.draw(st.sampled_from(sorted(o for o in self.tables if not self._unhashed(o))))
        table = self.tables.pop(owner)
        order = list(reversed(table)) if reverse else table
        self.pool.free_blocks([self.pool.blocks[i] for i in order])
        self.vllm.free_blocks([self.vllm.blocks[i] for i in order])

    @precondition(lambda self: bool(self._indexed()))
    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        content = data.draw(st.sampled_from(sorted(self._indexed())))
        expected = vllm_twins.vllm_cached_block(self.vllm, self.theirs[content])
        got = self.pool.get_cached_block(self.ours[content])
        assert got is not None and got.block_id == expected.block_id, (
            f"get_cached_block finds block {None if got is None else got.block_id} for a "
            f"content vLLM has cached in block {expected.block_id}"
        )
        self.pool.touch([got])
        self.vllm.touch([expected])
        self.tables[f"owner{self.next_owner}"] = [got.block_id]
        self.next_owner += 1

    @invariant()
    def agrees_with_vllm(self) -> None:
        checked(self.pool, {o: [self.pool.blocks[i] for i in t] for o, t in self.tables.items()})
        hash_of = {"yours": lambda b: b.block_hash, "vLLM": vllm_twins.vllm_block_hash}
        for what, probe in (
            ("free queue (front first)",
             lambda p: ids(p.free_queue.get_all_free_blocks() if p is self.pool
                           else p.free_block_queue.get_all_free_blocks())),
            ("ref counts of blocks 1..8", lambda p: [b.ref_cnt for b in p.blocks[1:]]),
            ("get_num_free_blocks()", lambda p: p.get_num_free_blocks()),
            ("get_usage()", lambda p: round(p.get_usage(), 9)),
            ("each block's hash (block id -> content)",
             lambda p: {b.block_id: self.content_of[h] for b in p.blocks[1:]
                        if (h := hash_of["yours" if p is self.pool else "vLLM"](b)) is not None}),
        ):
            got, expected = probe(self.pool), probe(self.vllm)
            assert got == expected, f"{what}: yours {got}, vLLM's {expected}"
        ours = {self.content_of[h]: b.block_id
                for h, b in self.pool.cached_block_hash_to_block.items()}
        assert ours == self._indexed(), (
            f"prefix index (content -> block id): yours {ours}, vLLM's {self._indexed()}"
        )


@pytest.mark.live
def test_your_pool_agrees_with_vllms_block_pool(impl) -> None:
    require_vllm()  # skips, with the install command, where vLLM cannot run
    run_state_machine_as_test(
        lambda: PoolAgainstVllm(impl),
        settings=settings(
            max_examples=100, stateful_step_count=30, deadline=None, database=None,
            report_multiple_bugs=False,
            derandomize=True,
        ),
    )


# -- your part drives the engine --------------------------------------------------------------

SYSTEM_PROMPT = "You are terse. "  # shared by every prompt: 15 bytes, 3 full blocks of 4
WAVES = [
    ["Why is the sky blue?", "Name a prime.", "Why is the sky blue?"],
    ["What is KV?", "Name a prime.", "Hello"],  # arrive later: hits on cached, freed blocks
]


def run_engine(num_blocks: int, enable_caching: bool, block_pool_cls=None, check=None,
               model=None):
    """Run the two waves; return (outputs, per-step trace, preemptions, cached tokens).

    The trace records, every step: who was scheduled for how many tokens, who was preempted,
    how many tokens each admission found in the prefix cache, and every block table. Request
    ids are renamed p0, p1... in arrival order (ids are process-global).
    """
    engine = LLMEngine(
        num_blocks=num_blocks, block_size=4, enable_caching=enable_caching,
        max_num_batched_tokens=32, max_num_seqs=4, block_pool_cls=block_pool_cls, model=model,
    )
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    names: dict[str, str] = {}
    trace: list[dict] = []
    original = engine.scheduler.schedule

    def probe():
        out = original()
        trace.append({
            "scheduled": {names[r]: n for r, n in out.num_scheduled_tokens.items()},
            "preempted": [names[r] for r in out.preempted_req_ids],
            # At admission num_computed_tokens is exactly the prefix-cache hit.
            "cached": {names[r.request_id]: r.num_computed_tokens for r in out.scheduled_requests
                       if r.request_id in out.scheduled_new_req_ids},
        })
        return out

    engine.scheduler.schedule = probe
    outputs: dict[str, list[int]] = {}
    preemptions = 0
    for wave_index, wave in enumerate(WAVES):
        for question in wave:
            names[engine.add_request(SYSTEM_PROMPT + question, params)] = f"p{len(names)}"
        steps = 6 if wave_index < len(WAVES) - 1 else 10_000
        while steps and engine.has_unfinished_requests():
            steps -= 1
            for request in engine.step():
                outputs[names[request.request_id]] = request.output_token_ids
                preemptions += request.num_preemptions
            kv = engine.kv_cache_manager
            trace[-1]["block_tables"] = {names[r]: ids(t) for r, t in kv.req_to_blocks.items()}
            if check is not None:
                check(kv.block_pool, kv.req_to_blocks)
    cached = sum(sum(step["cached"].values()) for step in trace)
    return outputs, trace, preemptions, cached


@pytest.mark.parametrize(
    ("num_blocks", "enable_caching"),
    [
        pytest.param(64, True, id="prefix_sharing-roomy_pool"),
        pytest.param(16, True, id="prefix_sharing-cramped_pool"),
        pytest.param(16, False, id="no_caching-cramped_pool"),
    ],
)
def test_your_pool_drives_the_engine(impl, num_blocks: int, enable_caching: bool) -> None:
    mine = run_engine(num_blocks, enable_caching, block_pool_cls=impl.BlockPool, check=checked)
    stock = run_engine(num_blocks, enable_caching)
    assert_same_outputs(stock[0], mine[0], labels=("stock", "yours"))
    assert mine[1] == stock[1], (
        "with your pool the engine made different decisions than with mini_vllm's: "
        + first_step_difference(stock[1], mine[1])
    )
    # The comparison is only worth something if the pool was really exercised.
    _, _, preemptions, cached = stock
    if enable_caching:
        assert cached > 0, "workload check: the prefix cache should have been hit"
    if num_blocks == 16:
        assert preemptions > 0, "workload check: the cramped pool should have forced preemption"


def test_your_pool_drives_a_real_model(impl, tiny_llama) -> None:
    # The same waves on a real network (mini_vllm's seeded tiny Llama) that reads its K/V back
    # through the block tables your pool fills: a block handed out twice, or freed while still
    # referenced, now changes tokens or stops the engine with the slot at fault.
    mine = run_engine(16, True, block_pool_cls=impl.BlockPool, check=checked, model=tiny_llama)
    stock = run_engine(16, True, model=tiny_llama)
    assert_same_outputs(stock[0], mine[0], labels=("stock", "yours"))
    assert mine[1] == stock[1], (
        "with your pool the engine made different decisions than with mini_vllm's: "
        + first_step_difference(stock[1], mine[1])
    )
    _, _, preemptions, cached = stock
    assert cached > 0 and preemptions > 0, "workload check: hits and preemption should happen"


# --- speed (timed only by pytest-benchmark; with --katas-speed, [speed] budget applies) --------


def test_speed_allocate_touch_free_cycle(kata_bench) -> None:
    sizes = [1 + (i * 7) % 31 for i in range(200)]  # built outside the timed call

    def workload(m) -> None:
        pool = m.BlockPool(num_blocks=4096, enable_caching=True)
        for n in sizes:
            blocks = pool.get_new_blocks(n)
            pool.touch(blocks)
            pool.free_blocks(blocks)
            pool.free_blocks(reversed(blocks))

    kata_bench(workload)
