"""Spec for kata 01-01: a request is two counters racing, photographed after every engine step."""

from __future__ import annotations

import pytest

from katas.phase01.trace_request.scaffold import Event
from mini_vllm import LLMEngine, RequestStatus, SamplingParams

pytestmark = pytest.mark.cpu_ok

_STATUS_NAMES = {status.name for status in RequestStatus}


def _show(events: list) -> str:
    return "\n  ".join(repr(tuple(e)) for e in events) or "(no events)"


def _trace(rid: str, counters: list[tuple[int, int]]) -> list[Event]:
    """The expected events: RUNNING for every pair but the last, FINISHED_LENGTH for the last."""
    *running, last = counters
    finished = Event(rid, "FINISHED_LENGTH", *last)
    return [Event(rid, "RUNNING", c, t) for c, t in running] + [finished]


MAX_STEPS = 200  # far above any run below


@pytest.fixture(autouse=True)
def engine_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Watch every LLMEngine the implementation builds: ids handed out, params, steps taken.

    It also bounds the loop: stepping one engine MAX_STEPS times fails the test at once
    instead of spinning until the time limit."""
    seen: dict[str, list] = {"ids": [], "params": [], "steps": []}
    add_request, step = LLMEngine.add_request, LLMEngine.step

    def spy_add_request(self, prompt, sampling_params=None, **kwargs):  # type: ignore[no-untyped-def]
        request_id = add_request(self, prompt, sampling_params, **kwargs)
        seen["ids"].append(request_id)
        seen["params"].append(sampling_params)
        return request_id

    def spy_step(self):  # type: ignore[no-untyped-def]
        seen["steps"].append(self)
        if sum(engine is self for engine in seen["steps"]) > MAX_STEPS:
            raise AssertionError(
                f"the engine was stepped {MAX_STEPS} times and your loop still asks for more; "
                f"stop once engine.scheduler.has_unfinished_requests() is false"
            )
        return step(self)

    monkeypatch.setattr(LLMEngine, "add_request", spy_add_request)
    monkeypatch.setattr(LLMEngine, "step", spy_step)
    return seen


def _run(impl, prompt: str, **kwargs: object) -> list[Event]:  # type: ignore[no-untyped-def]
    """``impl.trace_request(prompt, **kwargs)``, checked to be a list of scaffold.Event."""
    events = impl.trace_request(prompt, **kwargs)
    assert isinstance(events, list), (
        f"trace_request returns a list of Event, got {type(events).__name__}: {events!r}"
    )
    not_events = [e for e in events if not isinstance(e, Event)]
    assert not not_events, (
        f"trace_request returns scaffold.Event records "
        f"(Event(request_id, status, num_computed_tokens, num_tokens)), got {not_events[:2]}"
    )
    return events


def test_hello_traces_four_events_from_5_6_to_8_9(impl) -> None:
    events = _run(impl, "hello", max_tokens=4)
    rid = events[0].request_id if events else "<request id>"
    expected = _trace(rid, [(5, 6), (6, 7), (7, 8), (8, 9)])
    assert [tuple(e) for e in events] == [tuple(e) for e in expected], (
        f"'hello' is 5 byte tokens; with max_tokens=4 the trace is\n  {_show(expected)}\n"
        f"got\n  {_show(events)}"
    )


def test_events_are_event_records_with_the_status_name(impl) -> None:
    events = impl.trace_request("hello", max_tokens=2)
    assert isinstance(events, list) and events, (
        f"trace_request returns a non-empty list of Event, got {events!r}"
    )
    not_events = [e for e in events if not isinstance(e, Event)]
    assert not not_events, f"return scaffold.Event records, got {not_events[:2]}"
    statuses = [e.status for e in events]
    assert all(type(s) is str and s in _STATUS_NAMES for s in statuses), (
        f"status must be the RequestStatus *name* as a plain str (request.status.name), "
        f"got {statuses!r}"
    )


def test_events_carry_the_id_the_engine_assigned(impl, engine_spy: dict[str, list]) -> None:
    events = _run(impl, "hello", max_tokens=3)
    assert len(engine_spy["ids"]) == 1, (
        f"add exactly one request to the engine, got {len(engine_spy['ids'])} add_request calls"
    )
    rid = engine_spy["ids"][0]
    ids = [e.request_id for e in events]
    assert ids and all(i == rid for i in ids), (
        f"every event belongs to the one request, whose id add_request returned ({rid!r}); "
        f"got ids {ids} (request ids are process-global: never assume 'req-0')"
    )


def test_request_is_greedy_ignores_eos_and_asks_for_max_tokens(
    impl, engine_spy: dict[str, list]
) -> None:
    _run(impl, "hello", max_tokens=3)
    params = engine_spy["params"][0] if engine_spy["params"] else None
    assert isinstance(params, SamplingParams), (
        f"pass a SamplingParams to add_request, got {params!r}"
    )
    got = (params.max_tokens, params.temperature, params.ignore_eos)
    assert got == (3, 0.0, True), (
        f"the request needs SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True) so "
        f"the run is reproducible and exactly max_tokens long; got (max_tokens, temperature, "
        f"ignore_eos) = {got}"
    )


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("hello", id="five_token_prompt"),
        pytest.param("hello world", id="eleven_token_prompt"),
        pytest.param("S" * 64, id="sixty_four_token_prompt"),
    ],
)
def test_first_event_is_running_after_the_whole_prefill(impl, prompt: str) -> None:
    events = _run(impl, prompt, max_tokens=4)
    p = len(prompt)
    first = tuple(events[0])[1:] if events else None
    assert first == ("RUNNING", p, p + 1), (
        f"a {p}-token prompt fits the 2048-token budget, so step 1 computes all {p} tokens and "
        f"samples the first output: expected ('RUNNING', {p}, {p + 1}), got {first} (take no "
        f"snapshot before the first step: WAITING is never observed)"
    )


def test_counters_never_decrease_and_each_decode_adds_one(impl) -> None:
    events = _run(impl, "hello world", max_tokens=6)
    assert len(events) >= 2, f"expected one event per step, got {_show(events)}"
    for before, after in zip(events, events[1:], strict=False):
        assert after.num_computed_tokens - before.num_computed_tokens == 1, (
            f"after the prefill every step is a decode: both counters advance by exactly 1; "
            f"got {tuple(before)} -> {tuple(after)}"
        )
        assert after.num_tokens - before.num_tokens == 1, (
            f"a decode samples one token per step: got {tuple(before)} -> {tuple(after)}"
        )


@pytest.mark.parametrize(
    ("prompt", "max_tokens"),
    [
        pytest.param("hello", 4, id="hello-4_tokens"),
        pytest.param("goodbye", 7, id="goodbye-7_tokens"),
        pytest.param("S" * 64, 3, id="64_token_prompt-3_tokens"),
    ],
)
def test_finishes_at_the_length_cap_without_computing_the_last_token(
    impl, prompt: str, max_tokens: int
) -> None:
    events = _run(impl, prompt, max_tokens=max_tokens)
    p = len(prompt)
    last = tuple(events[-1])[1:] if events else None
    assert last == ("FINISHED_LENGTH", p + max_tokens - 1, p + max_tokens), (
        f"the run ends FINISHED_LENGTH with {p} + {max_tokens} tokens, of which "
        f"{p + max_tokens - 1} have KV (the last sampled token is never fed back); expected "
        f"{('FINISHED_LENGTH', p + max_tokens - 1, p + max_tokens)}, got {last}"
    )
    finished = [e for e in events if e.status.startswith("FINISHED")]
    assert len(finished) == 1, f"exactly one event (the last) is finished, got {_show(finished)}"


def test_a_one_token_run_still_shows_its_finish(impl) -> None:
    events = _run(impl, "hello", max_tokens=1)
    rid = events[0].request_id if events else "<request id>"
    expected = [Event(rid, "FINISHED_LENGTH", 5, 6)]
    assert [tuple(e) for e in events] == [tuple(e) for e in expected], (
        f"with max_tokens=1 step 1 prefills, samples and finishes the request; it has left "
        f"scheduler.running when step() returns, so photograph the list step() returns too. "
        f"Expected {_show(expected)}, got {_show(events)}"
    )


@pytest.mark.parametrize(
    ("prompt", "max_tokens"),
    [
        pytest.param("hello", 1, id="hello-1_token"),
        pytest.param("hello", 4, id="hello-4_tokens"),
        pytest.param("hello world", 9, id="hello_world-9_tokens"),
    ],
)
def test_one_event_per_step_and_as_many_steps_as_max_tokens(
    impl, engine_spy: dict[str, list], prompt: str, max_tokens: int
) -> None:
    events = _run(impl, prompt, max_tokens=max_tokens)
    steps = len(engine_spy["steps"])
    assert steps == max_tokens, (
        f"a prompt that fits the budget runs exactly max_tokens = {max_tokens} steps (step 1 "
        f"prefills and samples token 1); the engine was stepped {steps} times (drive "
        f"engine.step() yourself until the scheduler has no unfinished requests)"
    )
    assert len(events) == steps, (
        f"one request, so one event per step: {steps} steps but {len(events)} events"
    )


def test_a_prefill_threshold_of_2_shows_every_chunk(impl) -> None:
    events = _run(impl, "abcdefghij", max_tokens=4, long_prefill_token_threshold=2)
    rid = events[0].request_id if events else "<request id>"
    expected = _trace(
        rid, [(2, 10), (4, 10), (6, 10), (8, 10), (10, 11), (11, 12), (12, 13), (13, 14)]
    )
    assert [tuple(e) for e in events] == [tuple(e) for e in expected], (
        f"with long_prefill_token_threshold=2 a 10-token prompt is computed 2 tokens a step "
        f"(pass **engine_kwargs to LLMEngine); num_tokens stays 10 until the chunk that catches "
        f"up samples. Expected\n  {_show(expected)}\ngot\n  {_show(events)}"
    )


def test_a_tight_token_budget_chunks_the_prompt_too(impl) -> None:
    events = _run(impl, "abcdefghij", max_tokens=2, max_num_batched_tokens=4)
    rid = events[0].request_id if events else "<request id>"
    expected = _trace(rid, [(4, 10), (8, 10), (10, 11), (11, 12)])
    assert [tuple(e) for e in events] == [tuple(e) for e in expected], (
        f"a budget of 4 tokens per step computes the 10-token prompt as 4 + 4 + 2. Expected\n  "
        f"{_show(expected)}\ngot\n  {_show(events)}"
    )


def test_mid_prefill_steps_emit_no_token(impl) -> None:
    events = _run(impl, "S" * 12, max_tokens=3, long_prefill_token_threshold=5)
    assert events, "trace_request returned no events"
    mid_prefill = [e for e in events if e.num_computed_tokens < 12]
    assert [e.num_computed_tokens for e in mid_prefill] == [5, 10], (
        f"a threshold of 5 computes a 12-token prompt as 5 + 5 + 2; got {_show(events)}"
    )
    assert all(e.num_tokens == 12 for e in mid_prefill), (
        f"a chunk that leaves the prompt unfinished samples nothing: num_tokens must stay 12; "
        f"got {_show(mid_prefill)}"
    )
