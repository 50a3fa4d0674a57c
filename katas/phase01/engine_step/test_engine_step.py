"""Spec for kata 01-03: a hand-wired engine step is token-for-token the engine's own step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pytest

from mini_vllm import LLMEngine, Request, Sampler, SamplingParams, Scheduler, ToyModel
from pytest_vllm_katas.invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
    check_scheduler_step,
)

pytestmark = pytest.mark.cpu_ok

MAX_STEPS = 500  # far above any run below; a step that never advances anything hits it

# Shares 24 tokens (6 blocks of 4) with its siblings, so prefix caching has something to find.
PREFIX = "The cat sat on the mat. "


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


# Different lengths, sampling settings and stop rules, so that a row given to the wrong request
# or the wrong params shows up as different tokens.
MIXED_PROMPTS = [
    PREFIX + "Why?",
    PREFIX + "And then the dog came",
    "hello world",
    PREFIX + "Bye",
    "S" * 20,
]
MIXED_PARAMS = [
    greedy(8),
    SamplingParams(max_tokens=6, temperature=0.8, top_k=50, seed=7),
    SamplingParams(max_tokens=10, temperature=0.0),
    SamplingParams(max_tokens=7, temperature=1.0, top_p=0.9, seed=3, ignore_eos=True),
    greedy(5),
]


def _state(request: Request) -> tuple[str, int, int, list[int]]:
    return (
        request.status.name,
        request.num_computed_tokens,
        request.num_tokens,
        list(request.output_token_ids),
    )


def _run_in_lockstep(
    impl, prompts: Sequence[str], params: Sequence[SamplingParams], **engine_kwargs: Any
) -> int:
    """Step a stock engine and an identical one driven by impl.engine_step side by side.

    After every step both must hold the same requests in the same state and report the same
    requests finished. Returns the number of steps.
    """
    stock, mine = LLMEngine(**engine_kwargs), LLMEngine(**engine_kwargs)
    stock_reqs = [
        stock.get_request(stock.add_request(p, sp)) for p, sp in zip(prompts, params, strict=True)
    ]
    mine_reqs = [
        mine.get_request(mine.add_request(p, sp)) for p, sp in zip(prompts, params, strict=True)
    ]
    index = {id(r): i for i, r in enumerate(mine_reqs)}
    for step in range(1, MAX_STEPS + 1):
        expected_finished = [stock_reqs.index(r) for r in stock.step()]
        got = _step(impl, mine)
        got_finished = [index.get(id(r), repr(r)) for r in got]
        assert got_finished == expected_finished, (
            f"step {step}: the engine finished prompts #{expected_finished}, your step returned "
            f"{got_finished} (return exactly what update_from_output returns)"
        )
        for i, (want, have) in enumerate(zip(stock_reqs, mine_reqs, strict=True)):
            assert _state(have) == _state(want), (
                f"step {step}, prompt #{i}: (status, num_computed_tokens, num_tokens, outputs) "
                f"should be {_state(want)}, got {_state(have)}"
            )
        if not stock.has_unfinished_requests():
            assert not mine.has_unfinished_requests(), "your engine has requests left over"
            return step
    raise AssertionError(f"no end after {MAX_STEPS} steps")


class RecordingModel:
    """ToyModel that keeps every forward call's (last_tokens, positions)."""

    def __init__(self, seed: int = 0) -> None:
        self.inner = ToyModel(seed)
        self.calls: list[tuple[list[int], list[int]]] = []

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        self.calls.append(([int(t) for t in last_tokens], [int(p) for p in positions]))
        return self.inner.forward(last_tokens, positions)


class RecordingSampler:
    """The stock sampler, keeping every call's params; refuses a poisoned (NaN) logits row."""

    def __init__(self) -> None:
        self.inner = Sampler()
        self.params: list[Any] = []

    def sample(self, logits: np.ndarray, params: Any) -> int:
        if not np.isfinite(logits).all():
            raise AssertionError(
                "sampled a logits row of a request that has not caught up this step (or a row "
                "that belongs to another request): sample only rows where Scheduler.needs_sample "
                "holds, and logits row i belongs to output.scheduled_requests[i]"
            )
        self.params.append(params)
        return self.inner.sample(logits, params)


class Row(NamedTuple):
    """One row of a step's plan, read when schedule() returns (before any counter moves)."""

    request: Request
    n: int  # tokens scheduled for it
    last_token: int  # the last of them: the row's model input
    position: int  # that token's position, num_computed_tokens + n - 1
    samples: bool  # the row catches up (Scheduler.needs_sample), so it produces a token


def _record_plans(engine: LLMEngine) -> list[list[Row]]:
    """Probe schedule(): per step, each row as planned (update_from_output moves the counters
    afterwards)."""
    plans: list[list[Row]] = []
    original = engine.scheduler.schedule

    def probe():  # type: ignore[no-untyped-def]
        out = original()
        rows = []
        for request in out.scheduled_requests:
            n = out.num_scheduled_tokens[request.request_id]
            position = request.num_computed_tokens + n - 1
            rows.append(Row(request, n, request.all_token_ids[position], position,
                            Scheduler.needs_sample(request, n)))
        plans.append(rows)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    return plans


def _step(impl, engine: LLMEngine) -> list[Request]:  # type: ignore[no-untyped-def]
    """One impl.engine_step on ``engine``'s organs, checked to return a list of Requests."""
    finished = impl.engine_step(engine.scheduler, engine.model, engine.sampler)
    assert isinstance(finished, list) and all(isinstance(r, Request) for r in finished), (
        f"engine_step returns the list of Requests that finished this step ([] if none), got "
        f"{finished!r}"
    )
    return finished


# --- equality with the engine's own step ------------------------------------------------------


def test_single_request_matches_the_engine_step_by_step(impl) -> None:
    steps = _run_in_lockstep(impl, ["hello"], [greedy(4)])
    assert steps == 4, f"'hello' with max_tokens=4 takes 4 steps, took {steps}"


def test_a_batch_matches_the_engine_step_by_step(impl) -> None:
    _run_in_lockstep(impl, MIXED_PROMPTS, MIXED_PARAMS, seed=3)


@pytest.mark.parametrize(
    "engine_kwargs",
    [
        pytest.param({"long_prefill_token_threshold": 3}, id="prefill_threshold_3"),
        pytest.param({"max_num_batched_tokens": 8}, id="budget_of_8_tokens"),
        pytest.param(
            {"long_prefill_token_threshold": 5, "max_num_batched_tokens": 7},
            id="threshold_5-budget_7",
        ),
    ],
)
def test_matches_under_chunked_prefill(impl, engine_kwargs: dict[str, int]) -> None:
    _run_in_lockstep(impl, MIXED_PROMPTS, MIXED_PARAMS, **engine_kwargs)


# --- the stage contracts ----------------------------------------------------------------------


def test_forward_gets_each_rows_last_scheduled_token_at_its_position(impl) -> None:
    model = RecordingModel()
    engine = LLMEngine(model=model, long_prefill_token_threshold=4, max_num_batched_tokens=9)
    for prompt, params in zip(MIXED_PROMPTS[:3], MIXED_PARAMS[:3], strict=True):
        engine.add_request(prompt, params)
    plans = _record_plans(engine)
    for step in range(1, 8):
        _step(impl, engine)
        expected = ([row.last_token for row in plans[-1]], [row.position for row in plans[-1]])
        assert len(model.calls) == step, (
            f"call model.forward exactly once per step, for the whole batch; after {step} steps "
            f"it was called {len(model.calls)} times"
        )
        assert model.calls[-1] == expected, (
            f"step {step}: forward(last_tokens, positions) should get, row by row in "
            f"scheduled_requests order, each request's last scheduled token at position "
            f"num_computed_tokens + n - 1: expected {expected}, got {model.calls[-1]}"
        )


def test_mid_prefill_chunk_emits_no_token(impl) -> None:
    sampler = RecordingSampler()
    engine = LLMEngine(sampler=sampler, long_prefill_token_threshold=4)
    request = engine.get_request(engine.add_request("abcdefghij", greedy(3)))
    finished = _step(impl, engine)
    assert (finished, request.output_token_ids, len(sampler.params)) == ([], [], 0), (
        f"step 1 computes 4 of 10 prompt tokens: nothing may be sampled (needs_sample is false) "
        f"and nothing finishes; got finished={finished}, outputs={request.output_token_ids}, "
        f"{len(sampler.params)} sampler calls"
    )


def test_update_runs_even_when_nothing_was_sampled(impl) -> None:
    engine = LLMEngine(long_prefill_token_threshold=4)
    request = engine.get_request(engine.add_request("abcdefghij", greedy(3)))
    computed = []
    for _ in range(3):
        _step(impl, engine)
        computed.append(request.num_computed_tokens)
    assert computed == [4, 8, 10], (
        f"with a threshold of 4 the 10-token prompt is computed 4 + 4 + 2, so num_computed_tokens "
        f"reads 4, 8, 10 after the first three steps; got {computed}. Call "
        f"update_from_output on every step, even when no row sampled"
    )
    assert request.num_tokens == 11, (
        f"the third chunk catches up and samples token 1: num_tokens should be 11, "
        f"got {request.num_tokens}"
    )


def test_rows_that_do_not_catch_up_are_never_sampled(impl) -> None:
    class PoisonedModel(RecordingModel):
        """NaN-fills every logits row that no request may sample from this step."""

        def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
            logits = np.array(super().forward(last_tokens, positions))
            for index, row in enumerate(plans[-1][: len(logits)]):
                if not row.samples:
                    logits[index] = np.nan
            return logits

    sampler = RecordingSampler()
    engine = LLMEngine(
        model=PoisonedModel(),
        sampler=sampler,
        long_prefill_token_threshold=3,
        max_num_batched_tokens=10,
    )
    requests = [
        engine.get_request(engine.add_request(p, sp))
        for p, sp in zip(MIXED_PROMPTS, MIXED_PARAMS, strict=True)
    ]
    plans = _record_plans(engine)
    name = {id(r.sampling_params): f"prompt #{i}" for i, r in enumerate(requests)}
    for step in range(1, MAX_STEPS + 1):
        calls_before = len(sampler.params)
        _step(impl, engine)
        catching_up = sorted(name[id(row.request.sampling_params)]
                             for row in plans[-1] if row.samples)
        got = sorted(name.get(id(p), repr(p)) for p in sampler.params[calls_before:])
        assert got == catching_up, (
            f"step {step}: sample once for each row that catches up (num_computed_tokens + n "
            f"== num_tokens), with that row's own request.sampling_params; the rows that "
            f"caught up were {catching_up}, the sampler got the params of {got}"
        )
        if not engine.has_unfinished_requests():
            break
    else:
        raise AssertionError(f"no end after {MAX_STEPS} steps")
    produced = sum(r.num_output_tokens for r in requests)
    assert len(sampler.params) == produced, (
        f"sample exactly once per token produced: {produced} tokens, "
        f"{len(sampler.params)} sampler calls"
    )


def test_returns_the_requests_that_finished_this_step(impl) -> None:
    engine = LLMEngine()
    request = engine.get_request(engine.add_request("hello", greedy(2)))
    first = _step(impl, engine)
    second = _step(impl, engine)
    assert first == [] and len(second) == 1 and second[0] is request, (
        f"'hello' with max_tokens=2 finishes in step 2: expected [] then [that request], got "
        f"{first} then {second}"
    )
    assert request.status.name == "FINISHED_LENGTH", f"got status {request.status.name}"
    assert request not in engine.scheduler.running, "a finished request must leave running"
    assert engine.kv_cache_manager.get_block_ids(request.request_id) == [], (
        "a finished request's KV blocks must be freed (update_from_output does it)"
    )


def test_empty_schedule_returns_no_finished_requests(impl) -> None:
    engine = LLMEngine()
    finished = _step(impl, engine)
    assert finished == [], f"with nothing scheduled nothing can finish: expected [], got {finished}"


def test_an_idle_step_runs_no_forward_pass_and_samples_nothing(impl) -> None:
    model, sampler = RecordingModel(), RecordingSampler()
    engine = LLMEngine(model=model, sampler=sampler)
    _step(impl, engine)
    assert (len(model.calls), len(sampler.params)) == (0, 0), (
        f"an empty schedule means an idle engine: no forward pass, no sampling; got "
        f"{len(model.calls)} forward calls and {len(sampler.params)} sampler calls"
    )


# --- your step drives the engine --------------------------------------------------------------

# Tight on purpose: 15 usable blocks of 4 tokens, a 16-token budget, prefill chunks of 6 —
# chunking, prefix-cache hits and preemption all happen in one run.
DRIVE_KWARGS = {
    "num_blocks": 16,
    "block_size": 4,
    "enable_caching": True,
    "max_num_seqs": 4,
    "max_num_batched_tokens": 16,
    "long_prefill_token_threshold": 6,
}


def test_your_step_drives_the_engine_with_chunking_caching_and_preemption(impl) -> None:
    stock = LLMEngine(**DRIVE_KWARGS)
    expected = stock.generate(MIXED_PROMPTS, MIXED_PARAMS)

    engine = LLMEngine(step_fn=impl.engine_step, **DRIVE_KWARGS)
    scheduler, pool = engine.scheduler, engine.kv_cache_manager.block_pool
    seen = {"chunks": 0, "hits": 0}
    original = scheduler.schedule

    def checked_schedule():  # type: ignore[no-untyped-def]
        running_before = [r.request_id for r in scheduler.running]
        out = original()
        check_scheduler_step(
            out,
            max_num_batched_tokens=16,
            max_num_seqs=4,
            num_running=len(scheduler.running),
            running_before=running_before,
            long_prefill_token_threshold=6,
        )
        for request in out.scheduled_requests:
            n = out.num_scheduled_tokens[request.request_id]
            seen["chunks"] += request.num_computed_tokens + n < request.num_tokens
            seen["hits"] += (
                request.request_id in out.scheduled_new_req_ids and request.num_computed_tokens > 0
            )
        return out

    scheduler.schedule = checked_schedule  # type: ignore[method-assign]
    ids = [engine.add_request(p, sp) for p, sp in zip(MIXED_PROMPTS, MIXED_PARAMS, strict=True)]
    requests = [engine.get_request(rid) for rid in ids]
    while engine.has_unfinished_requests():
        assert engine.num_steps < MAX_STEPS, f"no end after {MAX_STEPS} steps"
        engine.step()
        check_block_pool(pool)
        check_block_tables(pool, engine.kv_cache_manager.req_to_blocks)

    assert_same_outputs(
        [r.output_token_ids for r in expected],
        [r.output_token_ids for r in requests],
        labels=("engine", "yours"),
    )
    assert engine.num_steps == stock.num_steps, (
        f"the stock engine took {stock.num_steps} steps, yours {engine.num_steps}"
    )
    preemptions = sum(r.num_preemptions for r in requests)
    assert (seen["chunks"] > 0, seen["hits"] > 0, preemptions > 0) == (True, True, True), (
        f"this run must exercise every optimization: chunked steps {seen['chunks']}, "
        f"prefix-cache admissions {seen['hits']}, preemptions {preemptions}"
    )


class RowsThroughTheRunner:
    """The course's ``forward(last_tokens, positions)``, served by a real network.

    A real model needs every token a row computes, not just the last one, so each call runs the
    engine's model runner on the plan ``schedule()`` just returned (seen through a probe that
    changes nothing), after checking that the rows you built are that plan's rows.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.runner = engine.model_runner
        self.plan: Any = None
        original = engine.scheduler.schedule

        def probe():  # type: ignore[no-untyped-def]
            self.plan = original()
            return self.plan

        engine.scheduler.schedule = probe  # type: ignore[method-assign]

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        plan, self.plan = self.plan, None
        assert plan is not None, (
            "model.forward was called without a fresh scheduler.schedule() before it: exactly "
            "one forward per scheduled step"
        )
        rows = plan.scheduled_requests
        want_pos = [r.num_computed_tokens + plan.num_scheduled_tokens[r.request_id] - 1
                    for r in rows]
        want = [(r.all_token_ids[p], p) for r, p in zip(rows, want_pos, strict=True)]
        got = [(int(t), int(p)) for t, p in zip(last_tokens, positions, strict=False)]
        assert got == want, (
            f"forward got rows (token, position) {got}, but the scheduled requests' last tokens "
            f"are {want}: row i is scheduled request i's last scheduled token"
        )
        return self.runner.execute_model(plan)


def test_your_step_drives_a_real_model(impl, tiny_llama) -> None:
    # The lockstep drive again, on mini_vllm's seeded tiny Llama: a network that reads its K/V
    # from the paged cache through the engine's model runner.
    stock = LLMEngine(model=tiny_llama, **DRIVE_KWARGS)
    expected = stock.generate(MIXED_PROMPTS, MIXED_PARAMS)
    engine = LLMEngine(model=tiny_llama, **DRIVE_KWARGS)
    rows = RowsThroughTheRunner(engine)
    ids = [engine.add_request(p, sp) for p, sp in zip(MIXED_PROMPTS, MIXED_PARAMS, strict=True)]
    requests = [engine.get_request(rid) for rid in ids]
    while engine.has_unfinished_requests():
        assert engine.num_steps < MAX_STEPS, f"no end after {MAX_STEPS} steps"
        impl.engine_step(engine.scheduler, rows, engine.sampler)
        engine.num_steps += 1
    assert_same_outputs(
        [r.output_token_ids for r in expected],
        [r.output_token_ids for r in requests],
        labels=("engine", "yours"),
    )
