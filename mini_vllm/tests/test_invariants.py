"""The shared checkers must catch what they promise to catch (a silent checker proves nothing)."""

from __future__ import annotations

import pytest

from mini_vllm import BlockPool, SchedulerOutput, hash_block_tokens
from pytest_vllm_katas.invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
    check_scheduler_step,
)


def test_check_block_pool_catches_a_leaked_block() -> None:
    pool = BlockPool(num_blocks=4)
    (block,) = pool.get_new_blocks(1)
    block.ref_cnt = 0  # dropped without returning it to the queue
    with pytest.raises(AssertionError, match="not in the free queue"):
        check_block_pool(pool)


def test_check_block_pool_catches_a_wrong_free_count() -> None:
    pool = BlockPool(num_blocks=4)
    pool.free_queue.num_free_blocks += 1
    with pytest.raises(AssertionError, match="num_free_blocks"):
        check_block_pool(pool)


def test_check_block_pool_catches_a_stale_cache_entry() -> None:
    pool = BlockPool(num_blocks=4)
    (block,) = pool.get_new_blocks(1)
    pool.cache_full_blocks([block], [hash_block_tokens(None, [1])])
    block.reset_hash()  # evicted without dropping the index entry
    with pytest.raises(AssertionError, match="stale"):
        check_block_pool(pool)


def test_check_block_tables_catches_a_ref_count_mismatch() -> None:
    pool = BlockPool(num_blocks=4)
    blocks = pool.get_new_blocks(2)
    with pytest.raises(AssertionError, match="ref_cnt 1 but is held by 2"):
        check_block_tables(pool, {"a": blocks, "b": blocks[:1]})


def test_check_scheduler_step_catches_budget_and_order_violations() -> None:
    out = SchedulerOutput(num_scheduled_tokens={"a": 6, "b": 5})
    with pytest.raises(AssertionError, match="max_num_batched_tokens=8"):
        check_scheduler_step(out, max_num_batched_tokens=8)
    starved = SchedulerOutput(num_scheduled_tokens={"new": 3})
    with pytest.raises(AssertionError, match="served first"):
        check_scheduler_step(starved, max_num_batched_tokens=8, running_before=["old"])
    with pytest.raises(AssertionError, match="max_num_seqs=2"):
        check_scheduler_step(starved, max_num_batched_tokens=8, max_num_seqs=2, num_running=3)


def test_check_scheduler_step_knows_the_lone_request_rule() -> None:
    lone = SchedulerOutput(num_scheduled_tokens={"a": 10})
    with pytest.raises(AssertionError, match="long_prefill_token_threshold=4"):
        check_scheduler_step(lone, max_num_batched_tokens=16, long_prefill_token_threshold=4)
    # vLLM 0.32: one request in all (running + waiting before the step) is not capped ...
    check_scheduler_step(lone, max_num_batched_tokens=16, long_prefill_token_threshold=4,
                         lone_request_ignores_long_prefill_threshold=True, num_requests_before=1)
    # ... but two are, even if only one of them is scheduled.
    with pytest.raises(AssertionError, match="long_prefill_token_threshold=4"):
        check_scheduler_step(lone, max_num_batched_tokens=16, long_prefill_token_threshold=4,
                             lone_request_ignores_long_prefill_threshold=True,
                             num_requests_before=2)
    with pytest.raises(TypeError, match="num_requests_before"):
        check_scheduler_step(lone, max_num_batched_tokens=16, long_prefill_token_threshold=4,
                             lone_request_ignores_long_prefill_threshold=True)


def test_assert_same_outputs_names_the_first_difference() -> None:
    assert_same_outputs({"A": [1, 2]}, {"A": [1, 2]})
    with pytest.raises(
        AssertionError, match=r"request 'B' differs at token 2: expected 7, actual 9"
    ):
        assert_same_outputs({"A": [1], "B": [5, 6, 7]}, {"A": [1], "B": [5, 6, 9]})
    with pytest.raises(
        AssertionError, match=r"request #0 differs at token 1: expected has 2 tokens, actual has 1"
    ):
        assert_same_outputs([[1, 2]], [[1]])
