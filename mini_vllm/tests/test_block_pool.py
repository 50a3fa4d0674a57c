from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mini_vllm import BlockPool, FreeKVCacheBlockQueue, KVCacheBlock, hash_block_tokens
from pytest_vllm_katas.invariants import check_block_pool, check_block_tables


def ids(blocks: list[KVCacheBlock]) -> list[int]:
    return [b.block_id for b in blocks]


def test_new_pool_reserves_block_zero_as_null() -> None:
    pool = BlockPool(num_blocks=6)
    assert pool.null_block.block_id == 0 and pool.null_block.is_null
    assert ids(pool.free_queue.get_all_free_blocks()) == [1, 2, 3, 4, 5]
    assert pool.get_num_free_blocks() == 5
    assert pool.get_usage() == 0.0
    check_block_pool(pool)


def test_free_queue_o1_middle_removal() -> None:
    blocks = [KVCacheBlock(i) for i in range(5)]
    queue = FreeKVCacheBlockQueue(blocks)
    queue.remove(blocks[2])
    assert ids(queue.get_all_free_blocks()) == [0, 1, 3, 4]
    assert queue.num_free_blocks == 4
    assert blocks[2].prev_free is None and blocks[2].next_free is None
    assert queue.popleft() is blocks[0]
    queue.append(blocks[2])
    assert ids(queue.get_all_free_blocks()) == [1, 3, 4, 2]


def test_popleft_on_empty_queue_raises_value_error() -> None:
    queue = FreeKVCacheBlockQueue([])
    with pytest.raises(ValueError, match="No free blocks"):
        queue.popleft()


def test_prefix_hash_is_chained() -> None:
    tokens = [5, 6, 7, 8]
    assert hash_block_tokens(None, tokens) == hash_block_tokens(None, tokens)
    assert hash_block_tokens(1, tokens) != hash_block_tokens(2, tokens)
    ab = hash_block_tokens(None, [1, 2])
    xy = hash_block_tokens(None, [9, 9])
    assert hash_block_tokens(ab, [3, 4]) != hash_block_tokens(xy, [3, 4])


def test_allocate_and_free_round_trip_keeps_ref_count_iff_free() -> None:
    pool = BlockPool(num_blocks=8)
    got = pool.get_new_blocks(3)
    assert ids(got) == [1, 2, 3] and all(b.ref_cnt == 1 for b in got)
    check_block_pool(pool)
    pool.free_blocks(reversed(got))
    assert ids(pool.free_queue.get_all_free_blocks()) == [4, 5, 6, 7, 3, 2, 1]
    check_block_pool(pool)


def test_get_new_blocks_beyond_free_raises_and_changes_nothing() -> None:
    pool = BlockPool(num_blocks=4)
    with pytest.raises(ValueError, match="Cannot get 4 free blocks"):
        pool.get_new_blocks(4)
    assert pool.get_num_free_blocks() == 3
    check_block_pool(pool)


def test_identical_content_is_never_deduplicated() -> None:
    pool = BlockPool(num_blocks=5)
    a, b = pool.get_new_blocks(1)[0], pool.get_new_blocks(1)[0]
    h = hash_block_tokens(None, [1, 2, 3, 4])
    pool.cache_full_blocks([a], [h])
    pool.cache_full_blocks([b], [h])
    assert a is not b
    assert pool.get_cached_block(h) is a, "the first block registered keeps the index entry"
    assert b.block_hash is None, "a twin of an indexed block stays unhashed"
    check_block_pool(pool)


def test_touch_revives_a_cached_free_block_from_the_middle() -> None:
    pool = BlockPool(num_blocks=6)
    blocks = pool.get_new_blocks(3)
    hashes = [hash_block_tokens(None, [i]) for i in range(3)]
    pool.cache_full_blocks(blocks, hashes)
    pool.free_blocks(blocks)
    hit = pool.get_cached_block(hashes[1])
    assert hit is blocks[1] and hit.ref_cnt == 0
    pool.touch([hit])
    assert hit.ref_cnt == 1
    assert ids(pool.free_queue.get_all_free_blocks()) == [4, 5, 1, 3]
    assert pool.get_cached_block(hashes[1]) is hit
    check_block_pool(pool)


def test_reusing_a_cached_free_block_evicts_its_index_entry() -> None:
    pool = BlockPool(num_blocks=3)
    blocks = pool.get_new_blocks(2)
    h = hash_block_tokens(None, [1])
    pool.cache_full_blocks(blocks[:1], [h])
    pool.free_blocks(blocks)
    reused = pool.get_new_blocks(2)
    assert blocks[0] in reused and blocks[0].block_hash is None
    assert pool.get_cached_block(h) is None
    check_block_pool(pool)


def test_null_block_is_never_freed_queued_or_cached() -> None:
    pool = BlockPool(num_blocks=4)
    pool.free_blocks([pool.null_block])
    pool.cache_full_blocks([pool.null_block], [123])
    pool.touch([pool.null_block])
    assert pool.null_block not in pool.free_queue.get_all_free_blocks()
    assert pool.get_cached_block(123) is None
    check_block_pool(pool)


def test_usage_excludes_null_block_and_reaches_one() -> None:
    pool = BlockPool(num_blocks=5)
    pool.get_new_blocks(2)
    assert pool.get_usage() == 0.5
    pool.get_new_blocks(2)
    assert pool.get_usage() == 1.0


def test_double_free_is_rejected() -> None:
    pool = BlockPool(num_blocks=4)
    (block,) = pool.get_new_blocks(1)
    pool.free_blocks([block])
    with pytest.raises(ValueError, match="freed more times"):
        pool.free_blocks([block])


class BlockPoolMachine(RuleBasedStateMachine):
    """Random allocate / free / cache / touch sequences keep every pool invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(num_blocks=9)
        self.tables: dict[str, list[KVCacheBlock]] = {}
        self.next_owner = 0
        self.next_hash = 0

    @rule(n=st.integers(min_value=1, max_value=4))
    def allocate(self, n: int) -> None:
        if n > self.pool.get_num_free_blocks():
            with pytest.raises(ValueError):
                self.pool.get_new_blocks(n)
            return
        self.tables[f"o{self.next_owner}"] = self.pool.get_new_blocks(n)
        self.next_owner += 1

    @precondition(lambda self: bool(self.tables))
    @rule(data=st.data(), reverse=st.booleans())
    def free(self, data: st.DataObject, reverse: bool) -> None:
        owner = data.draw(st.sampled_from(sorted(self.tables)))
        blocks = self.tables.pop(owner)
        self.pool.free_blocks(reversed(blocks) if reverse else blocks)

    @precondition(lambda self: bool(self.tables))
    @rule(data=st.data())
    def cache(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.tables)))
        blocks = self.tables[owner]
        hashes = [hash_block_tokens(self.next_hash, [i]) for i in range(len(blocks))]
        self.next_hash += 1
        self.pool.cache_full_blocks(blocks, hashes)

    @precondition(lambda self: bool(self.pool.cached_block_hash_to_block))
    @rule(data=st.data())
    def hit(self, data: st.DataObject) -> None:
        block_hash = data.draw(st.sampled_from(sorted(self.pool.cached_block_hash_to_block)))
        block = self.pool.get_cached_block(block_hash)
        assert block is not None
        self.pool.touch([block])
        self.tables[f"o{self.next_owner}"] = [block]
        self.next_owner += 1

    @invariant()
    def pool_is_consistent(self) -> None:
        check_block_pool(self.pool)
        check_block_tables(self.pool, self.tables)


TestBlockPoolMachine = BlockPoolMachine.TestCase
TestBlockPoolMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
