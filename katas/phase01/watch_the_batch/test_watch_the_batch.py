"""Spec for kata 01-04: continuous batching, recorded per step by a probe that changes nothing."""

from __future__ import annotations

import pytest

from mini_vllm import LLMEngine, SamplingParams, Scheduler

pytestmark = pytest.mark.cpu_ok

A, B = "hello world", "goodbye"  # 11 and 7 byte tokens
C = "S" * 20

# The course's worked example: A = 11 tokens, B = 7 tokens, max_tokens=4, a budget of 8.
TIGHT_TRACE = [
    {"A": 8},
    {"A": 3, "B": 5},
    {"A": 1, "B": 2},
    {"A": 1, "B": 1},
    {"A": 1, "B": 1},
    {"B": 1},
]

# (prompts, max_tokens, engine kwargs): budgets from scarce to roomy, with and without chunking.
WORKLOADS = [
    pytest.param([A, B], 4, {"max_num_batched_tokens": 8}, id="A_B-budget_8"),
    pytest.param([A, B], 4, {}, id="A_B-default_budget"),
    pytest.param([A, B], 1, {"max_num_batched_tokens": 8}, id="A_B-one_token_each-budget_8"),
    pytest.param([A, B, C], 5, {"max_num_batched_tokens": 3}, id="A_B_C-budget_3"),
    pytest.param([A, B, C], 6, {"max_num_batched_tokens": 10}, id="A_B_C-budget_10"),
    pytest.param([A, B, C], 4, {"long_prefill_token_threshold": 4}, id="A_B_C-prefill_threshold_4"),
]


MAX_STEPS = 200  # far above any run below


@pytest.fixture(autouse=True)
def engine_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record the ids and params add_request saw; fail at once if one engine is stepped
    MAX_STEPS times (a loop that never ends must not spin until the time limit)."""
    seen: dict[str, list] = {"ids": [], "params": [], "steps": []}
    add_request, step = LLMEngine.add_request, LLMEngine.step

    def spy_add_request(self, prompt, sampling_params=None, **kwargs):  # type: ignore[no-untyped-def]
        seen["ids"].append(add_request(self, prompt, sampling_params, **kwargs))
        seen["params"].append(sampling_params)
        return seen["ids"][-1]

    def spy_step(self):  # type: ignore[no-untyped-def]
        seen["steps"].append(self)
        if sum(engine is self for engine in seen["steps"]) > MAX_STEPS:
            raise AssertionError(
                f"the engine was stepped {MAX_STEPS} times and your loop still asks for more; "
                f"stop once engine.has_unfinished_requests() is false"
            )
        return step(self)

    monkeypatch.setattr(LLMEngine, "add_request", spy_add_request)
    monkeypatch.setattr(LLMEngine, "step", spy_step)
    return seen


def _run(  # type: ignore[no-untyped-def]
    impl, prompts: list[str], **kwargs: object
) -> tuple[list[str], list[dict[str, int]]]:
    """``impl.trace_batches(prompts, **kwargs)``, checked to be (list of ids, list of dicts)."""
    result = impl.trace_batches(prompts, **kwargs)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"trace_batches returns a pair (request ids, per-step dicts), got {result!r}"
    )
    ids, trace = result
    assert isinstance(ids, list) and all(isinstance(i, str) for i in ids), (
        f"the first element is the list of request ids add_request returned, got {ids!r}"
    )
    assert isinstance(trace, list) and all(isinstance(step, dict) for step in trace), (
        f"the second element is a list with one {{request_id: tokens}} dict per step, got "
        f"{trace!r}"
    )
    return ids, trace


def _named(ids: list[str], trace: list[dict[str, int]]) -> list[dict[str, int]]:
    """The trace with request ids replaced by A, B, C... in prompt order (ids are global)."""
    names = {rid: "ABCDEFGH"[i] for i, rid in enumerate(ids)}
    return [{names.get(rid, rid): n for rid, n in step.items()} for step in trace]


def _show(trace: list[dict[str, int]]) -> str:
    return ", ".join(map(str, trace)) or "(empty trace)"


@pytest.fixture
def scheduler_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record, for every Scheduler, each output schedule() made and each update it was given."""
    seen: dict[str, list] = {"scheduled": [], "updated": []}
    schedule, update = Scheduler.schedule, Scheduler.update_from_output

    def spy_schedule(self):  # type: ignore[no-untyped-def]
        out = schedule(self)
        seen["scheduled"].append(out)
        return out

    def spy_update(self, output, sampled):  # type: ignore[no-untyped-def]
        seen["updated"].append(output)
        return update(self, output, sampled)

    monkeypatch.setattr(Scheduler, "schedule", spy_schedule)
    monkeypatch.setattr(Scheduler, "update_from_output", spy_update)
    return seen


def test_tight_budget_trace_is_exactly_the_courses(impl) -> None:
    ids, trace = _run(impl, [A, B], max_tokens=4, max_num_batched_tokens=8)
    got = _named(ids, trace)
    assert got == TIGHT_TRACE, (
        f"A (11 tokens) and B (7 tokens), max_tokens=4, budget 8 should batch as\n  "
        f"{_show(TIGHT_TRACE)}\ngot\n  {_show(got)}"
    )


def test_tight_budget_chunks_and_defers(impl) -> None:
    ids, trace = _run(impl, [A, B], max_tokens=4, max_num_batched_tokens=8)
    got = _named(ids, trace)[:2]
    assert got == [{"A": 8}, {"A": 3, "B": 5}], (
        f"step 1: A's prefill is cut to the budget (8) and B waits, because nothing is left; "
        f"step 2: A's last 3 prompt tokens, then B admitted with the 5 left over. Got {_show(got)}"
    )


@pytest.mark.parametrize(
    "engine_kwargs",
    [
        pytest.param({}, id="default_budget"),
        pytest.param({"max_num_batched_tokens": 2048}, id="budget_2048"),
    ],
)
def test_ample_budget_prefills_everyone_in_step_one(impl, engine_kwargs: dict[str, int]) -> None:
    ids, trace = _run(impl, [A, B], max_tokens=4, **engine_kwargs)
    got = _named(ids, trace)
    expected = [{"A": 11, "B": 7}] + [{"A": 1, "B": 1}] * 3
    assert got == expected, (
        f"with budget to spare both prompts are admitted and fully prefilled in step 1, then "
        f"both decode together: expected {_show(expected)}, got {_show(got)}"
    )


def test_ids_are_the_engines_in_prompt_order(impl, engine_spy: dict[str, list]) -> None:
    ids, trace = _run(impl, [A, B, C], max_tokens=2)
    handed_out = engine_spy["ids"]
    assert ids == handed_out, (
        f"return the ids add_request handed back, in prompt order: expected {handed_out}, got "
        f"{ids} (ids are process-global; never build 'req-0' yourself)"
    )
    assert {rid for step in trace for rid in step} == set(handed_out), (
        f"the trace's keys must be those request ids; got {_show(trace)}"
    )


def test_requests_are_greedy_ignore_eos_and_ask_for_max_tokens(
    impl, engine_spy: dict[str, list]
) -> None:
    _run(impl, [A, B], max_tokens=3)
    got = [
        (p.max_tokens, p.temperature, p.ignore_eos) if isinstance(p, SamplingParams) else p
        for p in engine_spy["params"]
    ]
    assert got == [(3, 0.0, True)] * 2, (
        f"add every prompt with SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True), "
        f"so that each runs exactly max_tokens tokens and the trace is reproducible; got "
        f"(max_tokens, temperature, ignore_eos) per add_request call: {got}"
    )


@pytest.mark.parametrize(("prompts", "max_tokens", "engine_kwargs"), WORKLOADS)
def test_token_conservation_per_request(
    impl, prompts: list[str], max_tokens: int, engine_kwargs: dict[str, int]
) -> None:
    ids, trace = _run(impl, prompts, max_tokens=max_tokens, **engine_kwargs)
    totals = [sum(step.get(rid, 0) for step in trace) for rid in ids]
    expected = [len(p) + max_tokens - 1 for p in prompts]
    assert totals == expected, (
        f"each request is scheduled prompt + max_tokens - 1 tokens in all (the last sampled "
        f"token's KV is never computed): expected {expected}, got {totals} from {_show(trace)}"
    )


@pytest.mark.parametrize(("prompts", "max_tokens", "engine_kwargs"), WORKLOADS)
def test_budget_is_never_exceeded(
    impl, prompts: list[str], max_tokens: int, engine_kwargs: dict[str, int]
) -> None:
    _, trace = _run(impl, prompts, max_tokens=max_tokens, **engine_kwargs)
    budget = engine_kwargs.get("max_num_batched_tokens", 2048)
    over = [
        (i + 1, sum(step.values())) for i, step in enumerate(trace) if sum(step.values()) > budget
    ]
    assert trace and not over, (
        f"every step schedules at most max_num_batched_tokens = {budget} tokens; "
        f"(step, total) over it: {over}; trace {_show(trace)}"
    )


def test_mixed_batches_exist_under_load(impl) -> None:
    ids, trace = _run(impl, [A, B], max_tokens=4, max_num_batched_tokens=8)
    mixed = [
        i + 1
        for i, step in enumerate(trace)
        if len(step) > 1 and min(step.values()) == 1 and max(step.values()) > 1
    ]
    assert mixed == [3], (
        f"under a budget of 8, step 3 co-schedules A's decode (1 token) with B's last prefill "
        f"chunk (2 tokens); steps mixing a decode and a prefill chunk: {mixed}, trace "
        f"{_show(_named(ids, trace))}"
    )


def test_requests_join_in_arrival_order_and_leave_when_done(impl) -> None:
    ids, trace = _run(impl, [A, B, C], max_tokens=5, max_num_batched_tokens=3)
    steps_of = {rid: [i for i, step in enumerate(trace) if rid in step] for rid in ids}
    first = [steps_of[rid][0] if steps_of[rid] else None for rid in ids]
    assert None not in first and first == sorted(first), (
        f"waiting requests are admitted first come, first served: first steps {first} for "
        f"A, B, C; trace {_show(_named(ids, trace))}"
    )
    contiguous = all(s == list(range(s[0], s[-1] + 1)) for s in steps_of.values())
    assert contiguous, (
        f"once admitted, a request runs in every step until it finishes, then never again; "
        f"got steps {list(steps_of.values())}"
    )


def test_one_entry_per_scheduling_step(impl, scheduler_spy: dict[str, list]) -> None:
    _, trace = _run(impl, [A, B, C], max_tokens=3, max_num_batched_tokens=8)
    calls = len(scheduler_spy["scheduled"])
    assert len(trace) == calls, (
        f"the scheduler ran {calls} times; the trace must have one entry each, got {len(trace)}"
    )
    assert trace == [out.num_scheduled_tokens for out in scheduler_spy["scheduled"]], (
        "entry i must equal step i's num_scheduled_tokens"
    )


def test_trace_holds_copies_not_the_schedulers_dicts(impl, scheduler_spy: dict[str, list]) -> None:
    ids, trace = _run(impl, [A, B], max_tokens=4, max_num_batched_tokens=8)
    originals = [out.num_scheduled_tokens for out in scheduler_spy["scheduled"]]
    aliased = [
        i + 1
        for i, (mine, theirs) in enumerate(zip(trace, originals, strict=False))
        if mine is theirs
    ]
    for theirs in originals:  # poison: a scheduler is free to reuse its dicts after the step
        theirs.clear()
        theirs["poisoned"] = -1
    got = _named(ids, trace)
    assert not aliased and got == TIGHT_TRACE, (
        f"store a copy of each num_scheduled_tokens (dict(...)): the dicts belong to the "
        f"scheduler. Entries aliased at steps {aliased}; after the scheduler rewrote its dicts "
        f"the trace read {_show(got)}"
    )


def test_probe_hands_the_engine_the_very_output_it_observed(
    impl, scheduler_spy: dict[str, list]
) -> None:
    _run(impl, [A, B], max_tokens=4, max_num_batched_tokens=8)
    scheduled, updated = scheduler_spy["scheduled"], scheduler_spy["updated"]
    same = len(scheduled) == len(updated) and all(
        s is u for s, u in zip(scheduled, updated, strict=True)
    )
    assert same, (
        "observe, don't modify: the probe must return the scheduler's own output object, so "
        "the engine's step works on exactly what schedule() planned"
    )
