"""Spec for kata 03-01: one scheduling step under three scarcities — budget, seats, memory."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import NamedTuple

import pytest

from katas.phase03.scheduler_step.scaffold import FakeKV, Req, scheduler_driven_by
from mini_vllm import LLMEngine, RequestStatus, SamplingParams, SchedulerOutput
from pytest_vllm_katas.invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
    check_kv_covers_schedule,
    check_scheduler_step,
)
from pytest_vllm_katas.live import vllm_twins
from pytest_vllm_katas.live.fixtures import require_vllm

pytestmark = pytest.mark.cpu_ok

ROOMY = 10**9  # a budget / pool / seat count that never binds


def _prompt(name: str, tokens: int) -> Req:
    """A waiting request with nothing computed yet."""
    return Req(name, num_tokens=tokens)


def _decoding(name: str, prompt: int) -> Req:
    """A running request that has sampled its first token: a gap of exactly one."""
    return Req(name, prompt + 1, num_computed_tokens=prompt, status=RequestStatus.RUNNING)


def _step(
    impl: ModuleType,
    running: Iterable[Req] = (),
    waiting: Iterable[Req] = (),
    kv: FakeKV | None = None,
    *,
    budget: int = ROOMY,
    seats: int = ROOMY,
    threshold: int = 0,
) -> tuple[dict[str, int], list[Req], deque[Req], FakeKV]:
    """One call of the step under test; returns its dict and the (mutated) queues and memory."""
    run_list, wait_queue = list(running), deque(waiting)
    kv = FakeKV(ROOMY) if kv is None else kv
    scheduled = impl.schedule_step(
        run_list,
        wait_queue,
        kv,
        max_num_batched_tokens=budget,
        max_num_seqs=seats,
        long_prefill_token_threshold=threshold,
    )
    assert isinstance(scheduled, dict), (
        f"schedule_step returns a dict {{request_id: tokens}}; got {type(scheduled).__name__}"
    )
    return scheduled, run_list, wait_queue, kv


def _ids(reqs: Iterable[Req]) -> list[str]:
    return [r.request_id for r in reqs]


# --- clamp --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_new", "budget", "threshold", "expected"),
    [
        pytest.param(100, 10, 0, 10, id="budget_bound-100_wanted-10_left"),
        pytest.param(100, 50, 16, 16, id="threshold_bound-100_wanted-threshold_16"),
        pytest.param(5, 50, 16, 5, id="neither_binds-5_wanted"),
        pytest.param(100, 10, 16, 10, id="both_bind-the_budget_is_smaller"),
        pytest.param(100, 2048, 0, 100, id="threshold_0_means_off"),
        pytest.param(16, 50, 16, 16, id="gap_equal_to_threshold_is_not_cut"),
        pytest.param(1, 50, 16, 1, id="a_decode_is_a_gap_of_one"),
        pytest.param(5, 0, 0, 0, id="no_budget_left"),
        pytest.param(5, -3, 0, 0, id="overdrawn_budget_floors_at_0"),
    ],
)
def test_clamp_chunks_and_budgets(impl, num_new: int, budget: int, threshold: int, expected: int):
    got = impl.clamp(num_new, budget, threshold)
    assert got == expected, (
        f"clamp(num_new={num_new}, budget={budget}, threshold={threshold}) should be {expected}, "
        f"got {got}: cap by the threshold only when 0 < threshold < num_new, then by the budget, "
        "and never go below 0"
    )


# --- the course's scenarios ---------------------------------------------------------------------


def test_budget_caps_total_tokens(impl) -> None:
    a, b, c = _prompt("A", 8), _prompt("B", 8), _prompt("C", 8)
    scheduled, running, waiting, _ = _step(impl, waiting=[a, b, c], budget=10)
    assert scheduled == {"A": 8, "B": 2}, (
        f"three 8-token prompts under a budget of 10 should schedule 8 + 2 + 0 (B's prefill is "
        f"chunked, C is not admitted); got {scheduled}"
    )
    assert _ids(running) == ["A", "B"] and _ids(waiting) == ["C"], (
        f"A and B were admitted (running), C still waits; got running={_ids(running)}, "
        f"waiting={_ids(waiting)}"
    )


def test_max_num_seqs_caps_running(impl) -> None:
    tiny = [_prompt(f"R{i}", 1) for i in range(10)]
    scheduled, running, waiting, _ = _step(impl, waiting=tiny, seats=4)
    assert list(scheduled) == ["R0", "R1", "R2", "R3"], (
        f"ten 1-token requests with 4 seats (infinite budget and memory) admit exactly the first "
        f"four; got {list(scheduled)}"
    )
    expected = ([f"R{i}" for i in range(4)], [f"R{i}" for i in range(4, 10)])
    assert (_ids(running), _ids(waiting)) == expected, (
        f"R0-R3 move to running, R4-R9 stay waiting; got running={_ids(running)}, "
        f"waiting={_ids(waiting)}"
    )


def test_seats_already_taken_count_against_max_num_seqs(impl) -> None:
    decoders = [_decoding(f"D{i}", 5) for i in range(3)]
    scheduled, running, _, _ = _step(
        impl, running=decoders, waiting=[_prompt(f"W{i}", 3) for i in range(5)], seats=4
    )
    assert list(scheduled) == ["D0", "D1", "D2", "W0"], (
        f"3 running + 4 seats leaves room for one admission; got {list(scheduled)}"
    )
    assert _ids(running) == ["D0", "D1", "D2", "W0"], (
        f"W0 joins the three running requests; got running={_ids(running)}"
    )


def test_chunked_prefill_caps_per_request(impl) -> None:
    scheduled, *_ = _step(impl, waiting=[_prompt("long", 100)], threshold=16)
    assert scheduled == {"long": 16}, (
        f"a 100-token prompt with threshold 16 gets 16 tokens this step, budget or not; "
        f"got {scheduled}"
    )


def test_threshold_chunks_running_requests_too(impl) -> None:
    mid_prefill = Req("mid", num_tokens=100, num_computed_tokens=16, status=RequestStatus.RUNNING)
    scheduled, *_ = _step(impl, running=[mid_prefill], threshold=16)
    assert scheduled == {"mid": 16}, (
        f"a running request 16 tokens into a 100-token prompt gets its next 16-token chunk; "
        f"got {scheduled}"
    )


def test_running_scheduled_before_waiting_admitted(impl) -> None:
    decode, eager = _decoding("decode", 8), _prompt("eager", 20)
    kv = FakeKV(ROOMY)
    kv.held["decode"] = 8  # its prompt's slots, reserved when it was admitted
    scheduled, running, _, _ = _step(impl, running=[decode], waiting=[eager], kv=kv, budget=8)
    assert scheduled == {"decode": 1, "eager": 7}, (
        f"the running decode gets its 1 token first; the 20-token waiter gets what is left of "
        f"the budget of 8, chunked to 7; got {scheduled}"
    )
    assert list(scheduled) == ["decode", "eager"], (
        f"rows are running requests first, then admissions; got the order {list(scheduled)}"
    )
    assert _ids(running) == ["decode", "eager"], (
        f"eager was admitted behind the running decode; got running={_ids(running)}"
    )


def test_admission_stops_when_memory_exhausted(impl) -> None:
    a, b = _prompt("A", 16), _prompt("B", 4)
    kv = FakeKV(16)
    scheduled, running, waiting, _ = _step(impl, waiting=[a, b], kv=kv)
    assert scheduled == {"A": 16}, f"A fills the 16-slot pool and B cannot fit; got {scheduled}"
    assert _ids(running) == ["A"] and _ids(waiting) == ["B"], (
        f"B must stay in waiting; got running={_ids(running)}, waiting={_ids(waiting)}"
    )
    assert b.status == RequestStatus.WAITING, f"B's status should stay WAITING, got {b.status.name}"
    assert "B" not in kv.held, f"no partial admission: B must hold no memory, holds {kv.held['B']}"


def test_admission_reserves_only_this_steps_chunk(impl) -> None:
    a, b = _prompt("A", 8), _prompt("B", 8)
    kv = FakeKV(10)
    scheduled, running, waiting, _ = _step(impl, waiting=[a, b], kv=kv, budget=10)
    assert scheduled == {"A": 8, "B": 2}, (
        f"10 slots and a budget of 10: A takes 8, and B is admitted for the 2-token chunk the "
        f"budget leaves, which needs only 2 slots (reserving all 8 of B's prompt would not "
        f"fit); got {scheduled}"
    )
    assert kv.held == {"A": 8, "B": 2}, (
        f"an admission reserves memory for the tokens it schedules this step, not for its whole "
        f"prompt; got {kv.held}"
    )
    assert _ids(running) == ["A", "B"] and not waiting, (
        f"both are admitted; got running={_ids(running)}, waiting={_ids(waiting)}"
    )


def test_running_requests_reserve_the_tokens_they_schedule(impl) -> None:
    mid = Req("mid", num_tokens=100, num_computed_tokens=16, status=RequestStatus.RUNNING)
    decode = _decoding("decode", 8)
    kv = FakeKV(ROOMY)
    kv.held.update({"mid": 16, "decode": 8})  # reserved in earlier steps
    scheduled, *_ = _step(impl, running=[mid, decode], kv=kv, threshold=16)
    assert scheduled == {"mid": 16, "decode": 1}, (
        f"the running prefill gets its next 16-token chunk, the decode its 1; got {scheduled}"
    )
    assert kv.held == {"mid": 32, "decode": 9}, (
        f"a running request computes new K/V too, so it reserves exactly the tokens it is "
        f"scheduled for this step (16 and 1 more): expected {{'mid': 32, 'decode': 9}}, got "
        f"{kv.held}"
    )


def test_head_of_line_request_blocks_smaller_ones_behind_it(impl) -> None:
    big, small = _prompt("big", 30), _prompt("small", 2)
    kv = FakeKV(20)
    scheduled, running, waiting, _ = _step(impl, waiting=[big, small], kv=kv)
    assert scheduled == {}, (
        f"the front waiter (30 tokens) does not fit in 20 slots, and nobody may skip past it; "
        f"got {scheduled}"
    )
    assert _ids(waiting) == ["big", "small"] and running == [], (
        f"nobody is admitted; got running={_ids(running)}, waiting={_ids(waiting)}"
    )
    tried = [rid for rid, _, _ in kv.calls]
    assert tried == ["big"], f"only the front waiter may be tried; allocate was called for {tried}"


def test_no_admission_once_the_budget_is_spent(impl) -> None:
    d0, d1, w = _decoding("D0", 4), _decoding("D1", 4), _prompt("W", 3)
    kv = FakeKV(ROOMY)
    scheduled, _, waiting, _ = _step(impl, running=[d0, d1], waiting=[w], kv=kv, budget=2)
    assert scheduled == {"D0": 1, "D1": 1}, (
        f"two decodes spend the whole budget of 2; a waiter must not be admitted for 0 tokens; "
        f"got {scheduled}"
    )
    assert _ids(waiting) == ["W"] and w.status == RequestStatus.WAITING, (
        f"W stays in waiting with status WAITING; got waiting={_ids(waiting)}, "
        f"status {w.status.name}"
    )
    assert "W" not in [rid for rid, _, _ in kv.calls], "with no budget left, stop before allocating"


def test_running_request_left_without_budget_sits_the_step_out(impl) -> None:
    prefill = Req("prefill", num_tokens=30, num_computed_tokens=20, status=RequestStatus.RUNNING)
    decode = _decoding("decode", 6)
    scheduled, running, _, _ = _step(impl, running=[prefill, decode], budget=10)
    assert scheduled == {"prefill": 10}, (
        f"the first running request takes the whole budget of 10; the second is simply not "
        f"scheduled this step (never scheduled for 0 tokens); got {scheduled}"
    )
    assert _ids(running) == ["prefill", "decode"], "nobody leaves the running list"


def test_waiter_with_progress_schedules_only_the_rest(impl) -> None:
    # A preempted request or a prefix-cache hit comes back with tokens already computed.
    resumed = Req("resumed", num_tokens=20, num_computed_tokens=12)
    scheduled, *_ = _step(impl, waiting=[resumed])
    assert scheduled == {"resumed": 8}, (
        f"a waiter with 12 of 20 tokens computed needs only the remaining 8; got {scheduled}"
    )


def test_admitted_requests_become_running_in_arrival_order(impl) -> None:
    reqs = [_prompt(name, 3) for name in ("first", "second", "third")]
    scheduled, running, waiting, kv = _step(impl, waiting=reqs)
    assert list(scheduled) == ["first", "second", "third"], f"FCFS order, got {list(scheduled)}"
    assert _ids(running) == ["first", "second", "third"] and not waiting, (
        f"all three move to running in arrival order; got running={_ids(running)}, "
        f"waiting={_ids(waiting)}"
    )
    assert [r.status for r in reqs] == [RequestStatus.RUNNING] * 3, (
        f"admitted requests are RUNNING; got {[r.status.name for r in reqs]}"
    )
    assert kv.held == {"first": 3, "second": 3, "third": 3}, (
        f"each admission reserves exactly the tokens it schedules; got {kv.held}"
    )


def test_scheduling_does_not_advance_the_counters(impl) -> None:
    running = [Req("mid", num_tokens=40, num_computed_tokens=10, status=RequestStatus.RUNNING)]
    waiting = [_prompt("new", 12)]
    _step(impl, running=running, waiting=waiting, threshold=8)
    counters = [(r.num_tokens, r.num_computed_tokens) for r in (*running, *waiting)]
    assert counters == [(40, 10), (12, 0)], (
        f"schedule_step only plans: num_computed_tokens advances after the forward pass "
        f"(update_from_output). Counters after scheduling: {counters}"
    )


# --- your step drives the engine ----------------------------------------------------------------

Arrivals = dict[int, list[tuple[str, int]]]  # engine step -> [(prompt, max_tokens)] added before it
Steps = list[dict[int, int]]  # each step's schedule, requests named by arrival index


class Workload(NamedTuple):
    engine_kwargs: dict[str, int]
    arrivals: Arrivals
    binds: Callable[[Steps], bool]  # proof, on the stock run, that the limits it is about bind
    what: str


WORKLOADS = [
    pytest.param(
        Workload(
            dict(
                num_blocks=128,
                block_size=4,
                max_num_batched_tokens=16,
                max_num_seqs=3,
                long_prefill_token_threshold=6,
            ),
            {
                0: [("hello world", 5), ("goodbye", 3), ("The quick brown fox", 7), ("S" * 30, 4)],
                3: [("ab", 6), ("a longer prompt arriving late", 3)],
                7: [("z" * 20, 5), ("q", 2)],
            },
            lambda steps: (
                any(sum(s.values()) == 16 for s in steps)  # the budget
                and any(len(s) == 3 for s in steps)  # the seats
                and any(6 in s.values() for s in steps)  # the chunk threshold
            ),
            "a full budget of 16, all three seats taken and 6-token chunks",
        ),
        id="budget_16-three_seats-chunks_of_6-late_arrivals",
    ),
    pytest.param(
        Workload(
            dict(num_blocks=6, block_size=4),
            {0: [("a" * 14, 2), ("b" * 8, 3), ("c", 2)]},
            lambda steps: steps[:3] == [{0: 14}, {0: 1}, {1: 8, 2: 1}],
            "memory holding the 8-token prompt, and the 1-token one behind it, until the "
            "14-token request finishes",
        ),
        id="five_blocks-memory_holds_the_line_until_the_first_finishes",
    ),
    pytest.param(
        Workload(
            dict(num_blocks=64, block_size=4, max_num_batched_tokens=5, max_num_seqs=2),
            {0: [("hello world", 4), ("goodbye", 4)], 2: [("0123456789", 3)], 4: [("x", 3)]},
            lambda steps: steps[:3] == [{0: 5}, {0: 5}, {0: 1, 1: 4}],
            "a budget of 5 chunking the first prompt and holding back the second",
        ),
        id="budget_5-two_seats",
    ),
]


class Run(NamedTuple):
    tokens: list[list[int]]  # each request's output tokens, in arrival order
    steps: Steps  # each step's schedule
    blocks: Steps  # after each step's schedule: KV blocks held by each request holding any


def _drive(engine: LLMEngine, arrivals: Arrivals) -> Run:
    """Run the workload, checking the scheduler's invariants at every step.

    Requests are named by arrival index (ids are process-global, so two engines never share
    them). After every ``schedule()`` — before the forward pass advances any counter — it checks
    the step against the limits, the pool and block tables for consistency, and that every
    scheduled request's block table covers ``num_computed_tokens + n`` tokens.
    """
    sched, kv = engine.scheduler, engine.kv_cache_manager
    ids: list[str] = []
    steps: Steps = []
    blocks: Steps = []
    outputs: dict[str, list[int]] = {}
    schedule = sched.schedule

    def checked_schedule() -> SchedulerOutput:
        before = _ids(sched.running)
        out = schedule()
        check_scheduler_step(
            out,
            max_num_batched_tokens=sched.max_num_batched_tokens,
            max_num_seqs=sched.max_num_seqs,
            num_running=len(sched.running),
            running_before=before,
            long_prefill_token_threshold=sched.long_prefill_token_threshold,
        )
        queued = _ids([*sched.running, *sched.waiting])
        assert len(queued) == len(set(queued)), f"a request sits in both queues: {queued}"
        check_block_pool(kv.block_pool)
        check_block_tables(kv.block_pool, kv.req_to_blocks)
        try:
            check_kv_covers_schedule(out, kv.req_to_blocks, kv.block_size)
        except AssertionError as gap:
            raise AssertionError(f"engine step {len(steps)}: {gap}") from None
        assert not out.preempted_req_ids, "this workload must never need preemption"
        steps.append({ids.index(rid): n for rid, n in out.num_scheduled_tokens.items()})
        blocks.append(
            {ids.index(rid): len(table) for rid, table in kv.req_to_blocks.items() if table}
        )
        return out

    sched.schedule = checked_schedule  # type: ignore[method-assign]
    step = 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for prompt, max_tokens in arrivals.get(step, []):
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
            ids.append(engine.add_request(prompt, params))
        for request in engine.step():
            assert request.num_preemptions == 0, f"{request.request_id} was preempted"
            outputs[request.request_id] = request.output_token_ids
        step += 1
        if step > 300:
            raise AssertionError(f"the workload did not finish in 300 steps; last: {steps[-3:]}")
    return Run([outputs[rid] for rid in ids], steps, blocks)


def _first_difference(expected: Steps, got: Steps) -> int:
    return next(
        (i for i, (e, g) in enumerate(zip(expected, got, strict=False)) if e != g),
        min(len(expected), len(got)),
    )


@pytest.mark.parametrize("workload", WORKLOADS)
def test_your_step_drives_the_engine_token_for_token(impl, workload: Workload) -> None:
    mine = LLMEngine(
        enable_caching=False,
        scheduler_cls=scheduler_driven_by(impl.schedule_step),
        **workload.engine_kwargs,
    )
    yours = _drive(mine, workload.arrivals)
    stock = _drive(LLMEngine(enable_caching=False, **workload.engine_kwargs), workload.arrivals)
    assert workload.binds(stock.steps), (
        f"test bug: this workload no longer exercises {workload.what}; stock schedule "
        f"{stock.steps[:4]}"
    )
    assert_same_outputs(stock.tokens, yours.tokens, labels=("stock", "yours"))
    i = _first_difference(stock.steps, yours.steps)
    assert yours.steps == stock.steps, (
        f"same tokens, but the schedule departs from mini_vllm's at step {i} "
        f"(requests named by arrival index): stock {stock.steps[i : i + 2]}, "
        f"yours {yours.steps[i : i + 2]}"
    )
    i = _first_difference(stock.blocks, yours.blocks)
    assert yours.blocks == stock.blocks, (
        f"same schedule, but after step {i}'s scheduling the requests hold different numbers of "
        f"KV blocks (arrival index: blocks): stock {stock.blocks[i]}, yours {yours.blocks[i]}. "
        "Each scheduled request reserves slots for exactly the tokens it computes this step, "
        "no more and no fewer"
    )


def test_your_step_drives_a_real_model(impl, tiny_llama) -> None:
    # The first workload again, on a real network (mini_vllm's seeded tiny Llama) that reads
    # every token's K/V back from the paged cache: a token scheduled without a reserved slot
    # stops the engine with the request and slot named instead of passing unnoticed.
    workload = WORKLOADS[0].values[0]
    kwargs = {**workload.engine_kwargs, "model": tiny_llama, "enable_caching": False}
    yours = _drive(LLMEngine(scheduler_cls=scheduler_driven_by(impl.schedule_step), **kwargs),
                   workload.arrivals)
    stock = _drive(LLMEngine(**kwargs), workload.arrivals)
    assert_same_outputs(stock.tokens, yours.tokens, labels=("stock", "yours"))
    assert yours.steps == stock.steps, (
        f"same tokens, but the schedule departs from mini_vllm's at step "
        f"{_first_difference(stock.steps, yours.steps)}"
    )


# -- your step against vLLM's own Scheduler (live tier) ---------------------------------------


def _without_preemption(w: vllm_twins.Workload) -> vllm_twins.Workload:
    """``w`` with prefix caching off (this step does not consult it) and the smallest pool, from
    ``w``'s up, in which mini_vllm's scheduler never has to preempt (this step does not
    preempt): memory still refuses admissions, it never evicts."""
    w = dataclasses.replace(w, enable_caching=False)
    while any(record.preempted for record in vllm_twins.mini_steps(w)):
        w = dataclasses.replace(w, num_blocks=w.num_blocks + 1)
    return w


@pytest.mark.live
def test_your_step_agrees_with_vllms_scheduler(impl) -> None:
    # Random workloads (staggered arrivals, chunked prefills, tight budgets and seats, EOS,
    # aborts) through your step on mini_vllm with policy "vllm-0.32", and through vLLM 0.32's
    # own Scheduler; rows, admissions, finishes, queues and block tables compared every step.
    require_vllm()  # skips, with the install command, where vLLM cannot run
    vllm_twins.assert_scheduler_agrees_with_vllm(
        vllm_twins.workloads(), scheduler_driven_by(impl.schedule_step),
        what="your step, running mini_vllm", prepare=_without_preemption)


# --- speed (timed only by pytest-benchmark; with --katas-speed, [speed] budget applies) --------


def test_speed_scheduling_256_decodes_and_64_arrivals(kata_bench) -> None:
    def workload(m: ModuleType) -> dict[str, int]:
        # Fresh queues and memory for every call: schedule_step changes its inputs.
        running = [Req(f"run-{i}", num_tokens=100, num_computed_tokens=99) for i in range(256)]
        for req in running:
            req.status = RequestStatus.RUNNING
        waiting = deque(Req(f"new-{i}", num_tokens=48) for i in range(64))
        return m.schedule_step(running, waiting, FakeKV(1_000_000),
                               max_num_batched_tokens=2048, max_num_seqs=512)

    kata_bench(workload)
