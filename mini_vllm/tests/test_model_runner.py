"""The model runner: inputs as upstream builds them, and memory bugs that fail loudly."""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import BlockPool, LLMEngine, Request, Scheduler, SchedulerOutput
from mini_vllm.kv_cache import KVCacheManager
from mini_vllm.model import ToyModel
from mini_vllm.model_runner import KVCacheError, ModelRunner
from mini_vllm.tests.builders import greedy, output_ids


def _plan(*pairs: tuple[Request, int]) -> SchedulerOutput:
    out = SchedulerOutput()
    for request, n in pairs:
        out.scheduled_requests.append(request)
        out.num_scheduled_tokens[request.request_id] = n
    return out


def _two_requests() -> tuple[ModelRunner, Request, Request]:
    """A decode with 9 tokens computed and a 6-token prompt's first chunk of 4, block size 4."""
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_caching=False)
    runner = ModelRunner(ToyModel(), kv, num_blocks=16, block_size=4)
    decode = Request(list(range(10, 20)), greedy(4))  # 10 tokens
    kv.allocate_slots(decode, 9)
    runner.execute_model(_plan((decode, 9)))  # its first 9 tokens really are in the cache
    decode.num_computed_tokens = 9
    prefill = Request(list(range(30, 36)), greedy(4))  # 6 tokens
    kv.allocate_slots(decode, 1)
    kv.allocate_slots(prefill, 4)
    return runner, decode, prefill


def test_inputs_are_what_upstream_builds() -> None:
    runner, decode, prefill = _two_requests()
    kv = runner.kv
    inputs = runner.prepare_inputs(_plan((decode, 1), (prefill, 4)))
    meta = inputs.attn_metadata
    assert inputs.input_ids.tolist() == [19, 30, 31, 32, 33]
    assert inputs.positions.tolist() == [9, 0, 1, 2, 3]
    assert meta.query_start_loc.tolist() == [0, 1, 5]
    assert meta.seq_lens.tolist() == [10, 4]
    assert inputs.logits_indices.tolist() == [0, 4], "one logits row per request: its last token"
    d, p = kv.get_block_ids(decode.request_id), kv.get_block_ids(prefill.request_id)
    assert meta.block_table.tolist() == [d, p + [0] * (len(d) - len(p))], "padded with block 0"
    expected_slots = [d[2] * 4 + 1] + [p[0] * 4 + i for i in range(4)]
    assert meta.slot_mapping.tolist() == expected_slots, "slot = block * block_size + offset"


def test_toy_logits_rows_are_each_requests_last_token() -> None:
    runner, decode, prefill = _two_requests()
    logits = runner.execute_model(_plan((decode, 1), (prefill, 4)))
    expected = ToyModel().forward([19, 33], [9, 3])
    np.testing.assert_array_equal(logits, expected)


def test_a_token_without_a_slot_is_an_error_naming_request_and_step() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=4, enable_caching=False)
    runner = ModelRunner(ToyModel(), kv, num_blocks=8, block_size=4)
    request = Request(list(range(6)), greedy(2))
    kv.allocate_slots(request, 4)  # room for 4 of the 6 tokens
    with pytest.raises(KVCacheError, match=rf"step 0: request '{request.request_id}' .*"
                                           r"position 4 has no KV slot"):
        runner.execute_model(_plan((request, 6)))


class _NoRunningAllocation(Scheduler):
    """The classic mistake: decodes are scheduled without allocate_slots."""

    def _allocate_or_preempt(self, request, num_new_tokens, req_index):  # type: ignore[override]
        return []


def test_scheduling_a_decode_without_allocating_fails_loudly() -> None:
    # Block size 4, prompt 4: the first decode needs a second block nobody allocated.
    engine = LLMEngine(block_size=4, scheduler_cls=_NoRunningAllocation)
    with pytest.raises(KVCacheError, match="has no KV slot"):
        engine.generate(["abcd"], greedy(4))


class _DoubleHandingPool(BlockPool):
    """Hands out the most recently allocated block again, to the next request: a shared block."""

    def get_new_blocks(self, num_blocks):  # type: ignore[no-untyped-def]
        blocks = super().get_new_blocks(num_blocks)
        if getattr(self, "_last", None) is not None and blocks:
            blocks[0] = self._last
        self._last = blocks[-1] if blocks else None
        return blocks


def test_one_block_given_to_two_requests_is_caught() -> None:
    engine = LLMEngine(block_size=4, enable_caching=False, block_pool_cls=_DoubleHandingPool)
    with pytest.raises(KVCacheError, match=r"written twice in one step|reads position"):
        engine.generate(["abcdefg", "hijklmn"], greedy(3))


def test_a_block_freed_while_in_use_is_caught() -> None:
    engine = LLMEngine(block_size=4, enable_caching=False)
    rid = engine.add_request("abcdef", greedy(6))
    engine.step()
    request = engine.get_request(rid)
    # Behind the engine's back, as a wrong free() would: the request still lists its blocks.
    engine.kv_cache_manager.block_pool.free_blocks(engine.kv_cache_manager.get_blocks(rid))
    with pytest.raises(KVCacheError, match=rf"request '{request.request_id}' still references "
                                           r"block \d+.*ref_cnt=0"):
        engine.step()


def test_reused_block_overwritten_by_another_request_is_caught() -> None:
    # What another request writing into a block it was wrongly given looks like: a live
    # request's slot now holds a different token.
    engine = LLMEngine(block_size=4, enable_caching=False)
    rid = engine.add_request("abcdef", greedy(6))
    engine.step()
    block = engine.kv_cache_manager.get_block_ids(rid)[0]
    engine.model_runner.slot_token_ids[block * 4 + 2] = 7  # position 2 holds "c" (99)
    with pytest.raises(KVCacheError, match=r"reads position 2 \(token 99\) from slot \d+ "
                                           r"\(block \d+, offset 2\), which holds token 7"):
        engine.step()


def test_runner_checks_do_not_change_toy_tokens() -> None:
    # Pinned in test_engine too; here the point is the runner path itself (no step_fn).
    engine = LLMEngine()
    assert output_ids(engine, ["hello"], greedy(7)) == [[227, 18, 74, 70, 61, 117, 256]]
    assert engine.model_runner.num_steps == 7
