from __future__ import annotations

import pytest

from mini_vllm import (
    BlockPool,
    LLMEngine,
    Request,
    RequestStatus,
    Sampler,
    SamplingParams,
    Scheduler,
    engine_step,
)
from mini_vllm.tests.builders import greedy, output_ids, record_schedules, run_all
from pytest_vllm_katas.invariants import assert_same_outputs

PROMPTS = ["hello world", "goodbye", "The quick brown fox jumps over the lazy dog", "S" * 40]
SEEDED = SamplingParams(
    max_tokens=12, temperature=0.8, top_k=50, top_p=0.9, seed=3, ignore_eos=True
)


def test_pinned_greedy_output_is_stable_across_processes() -> None:
    # A pinned constant, not a comparison with another run: if it changes, every machine and
    # every recorded expectation in the katas changes with it.
    out = LLMEngine().generate(["hello"], SamplingParams(max_tokens=8, temperature=0.0))[0]
    assert out.output_token_ids == [227, 18, 74, 70, 61, 117, 256]
    assert out.finish_reason == "stop" and out.text == "\ufffd\x12JF=u"


def test_lifecycle_counters_match_lab_01_01() -> None:
    engine = LLMEngine()
    rid = engine.add_request("hello", greedy(4))
    events = []
    while engine.has_unfinished_requests():
        finished = engine.step()
        for r in [*engine.scheduler.running, *finished]:
            events.append((r.request_id, r.status.name, r.num_computed_tokens, r.num_tokens))
    assert events == [
        (rid, "RUNNING", 5, 6),
        (rid, "RUNNING", 6, 7),
        (rid, "RUNNING", 7, 8),
        (rid, "FINISHED_LENGTH", 8, 9),
    ]


@pytest.mark.parametrize("params", [greedy(12), SEEDED], ids=["greedy", "seeded"])
def test_chunked_prefill_matches_unchunked_output(params: SamplingParams) -> None:
    plain = output_ids(LLMEngine(), PROMPTS, params)
    chunked_engine = LLMEngine(long_prefill_token_threshold=3, max_num_batched_tokens=7)
    outputs = record_schedules(chunked_engine)
    chunked = [r.output_token_ids for r in chunked_engine.generate(PROMPTS, params)]
    assert max(o.total_num_scheduled_tokens for o in outputs) <= 7, "chunking really happened"
    assert_same_outputs(plain, chunked, labels=("unchunked", "chunked"))


@pytest.mark.parametrize("params", [greedy(12), SEEDED], ids=["greedy", "seeded"])
def test_prefix_caching_matches_no_caching_output(params: SamplingParams) -> None:
    prompts = ["S" * 64 + str(i) for i in range(8)] + PROMPTS
    off = output_ids(LLMEngine(block_size=4, enable_caching=False), prompts, params)
    on_engine = LLMEngine(block_size=4)
    on = output_ids(on_engine, prompts, params)
    assert on_engine.kv_cache_manager.block_pool.cached_block_hash_to_block, "caching was on"
    assert_same_outputs(off, on, labels=("caching off", "caching on"))


def scheduled_total(enable_caching: bool) -> tuple[int, list[list[int]]]:
    engine = LLMEngine(block_size=4, enable_caching=enable_caching)
    outputs = record_schedules(engine)
    results = engine.generate(["S" * 64 + str(i) for i in range(8)], greedy(4))
    return sum(o.total_num_scheduled_tokens for o in outputs), [r.output_token_ids for r in results]


def test_prefix_cache_totals_match_lab_03_06() -> None:
    off, off_ids = scheduled_total(False)
    on, on_ids = scheduled_total(True)
    assert (off, on) == (544, 96)
    assert off - on == 7 * 64
    assert_same_outputs(off_ids, on_ids)


def test_cramped_pool_matches_roomy_pool_and_really_preempts() -> None:
    prompts = ["abcdefgh", "ijklmnop"]  # 8 tokens each; 8 + 8 - 1 = 15 slots <= 16 usable
    roomy = LLMEngine(num_blocks=256, block_size=4).generate(prompts, greedy(8))
    cramped = LLMEngine(num_blocks=5, block_size=4).generate(prompts, greedy(8))
    assert sum(r.num_preemptions for r in cramped) > 0, "the cramped pool must preempt"
    assert sum(r.num_preemptions for r in roomy) == 0
    assert all(len(r.output_token_ids) == 8 for r in cramped)
    assert_same_outputs(
        [r.output_token_ids for r in roomy],
        [r.output_token_ids for r in cramped],
        labels=("roomy", "cramped"),
    )


def test_generate_returns_one_output_per_prompt_in_order() -> None:
    engine = LLMEngine()
    results = engine.generate(["a", "bb", [98, 99]], [greedy(1), greedy(2), greedy(3)])
    assert [len(r.output_token_ids) for r in results] == [1, 2, 3]
    assert results[2].prompt_token_ids == [98, 99]
    assert all(r.finish_reason == "length" for r in results)
    assert not engine.has_unfinished_requests()


def test_request_ids_are_process_global() -> None:
    a = LLMEngine().add_request("x", greedy(1))
    b = LLMEngine().add_request("x", greedy(1))
    assert a.startswith("req-") and int(b[4:]) == int(a[4:]) + 1


def test_same_seed_engines_agree_and_seed_changes_output() -> None:
    assert output_ids(LLMEngine(seed=5), PROMPTS, greedy(8)) == output_ids(
        LLMEngine(seed=5), PROMPTS, greedy(8)
    )
    assert output_ids(LLMEngine(seed=5), PROMPTS, greedy(8)) != output_ids(
        LLMEngine(seed=6), PROMPTS, greedy(8)
    )


def test_injected_parts_drive_the_whole_engine() -> None:
    class CountingPool(BlockPool):
        calls = 0

        def get_new_blocks(self, num_blocks: int):  # type: ignore[no-untyped-def]
            CountingPool.calls += 1
            return super().get_new_blocks(num_blocks)

    class CountingScheduler(Scheduler):
        calls = 0

        def schedule(self):  # type: ignore[no-untyped-def]
            CountingScheduler.calls += 1
            return super().schedule()

    steps: list[int] = []

    def my_step(scheduler, model, sampler):  # type: ignore[no-untyped-def]
        steps.append(1)
        return engine_step(scheduler, model, sampler)

    sampler = Sampler()
    engine = LLMEngine(
        block_pool_cls=CountingPool,
        scheduler_cls=CountingScheduler,
        sampler=sampler.sample,
        step_fn=my_step,
    )
    got = output_ids(engine, PROMPTS, SEEDED)
    assert CountingPool.calls and CountingScheduler.calls and steps
    assert_same_outputs(output_ids(LLMEngine(), PROMPTS, SEEDED), got)


def test_empty_step_does_nothing() -> None:
    engine = LLMEngine()
    assert engine.step() == []


def test_abort_frees_kv_and_others_finish() -> None:
    engine = LLMEngine(block_size=4)
    keep = engine.add_request("hello world", greedy(5))
    drop = engine.add_request("goodbye", greedy(5))
    engine.step()
    aborted = engine.abort_request(drop)
    assert aborted.status == RequestStatus.FINISHED_ABORTED and aborted.is_finished
    finished = []
    while engine.has_unfinished_requests():
        finished += engine.step()
    assert [r.request_id for r in finished] == [keep]
    assert engine.kv_cache_manager.get_usage() == 0.0


def test_unknown_request_id_raises_value_error_and_engine_keeps_serving() -> None:
    engine = LLMEngine()
    rid = engine.add_request("hello", greedy(3))
    with pytest.raises(ValueError, match="unknown request id"):
        engine.abort_request("req-does-not-exist")
    with pytest.raises(ValueError, match="unknown request id"):
        engine.get_request("nope")
    assert engine.get_request(rid).request_id == rid
    run_all(engine)
    with pytest.raises(ValueError):
        engine.get_request(rid)  # finished requests are no longer tracked


def test_mismatched_params_list_is_refused() -> None:
    with pytest.raises(ValueError, match="sampling params"):
        LLMEngine().generate(["a", "b"], [greedy(1)])


def test_an_injected_stop_check_decides_when_requests_finish() -> None:
    def stop_after_two(request: Request) -> bool:
        if request.num_output_tokens >= 2:
            request.status = RequestStatus.FINISHED_STOPPED
            return True
        return False

    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    out = LLMEngine(check_stop=stop_after_two).generate(["hello", "hi"], params)
    assert [len(o.output_token_ids) for o in out] == [2, 2]
    assert [o.finish_reason for o in out] == ["stop", "stop"]
