"""A scheduler's plan that the engine cannot execute is blamed on the scheduler, by name.

Each case wraps the stock scheduler and breaks one rule of its output, the way a learner's
custom scheduler might; the engine must raise ``SchedulerContractError`` from ``step()`` naming
the request, instead of an ``IndexError`` or ``KeyError`` from deep inside the step.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from mini_vllm import LLMEngine, Request, Scheduler, SchedulerContractError, SchedulerOutput
from mini_vllm.tests.builders import greedy, run_all

Breakage = Callable[[Scheduler, SchedulerOutput], None]


def engine_whose_scheduler(breaks: Breakage) -> LLMEngine:
    """An engine whose stock schedule() output is passed through ``breaks`` before use."""

    class BrokenScheduler(Scheduler):
        def schedule(self) -> SchedulerOutput:
            output = super().schedule()
            breaks(self, output)
            return output

    return LLMEngine(scheduler_cls=BrokenScheduler)


def schedule_one_too_many(scheduler: Scheduler, output: SchedulerOutput) -> None:
    for request in output.scheduled_requests:
        output.num_scheduled_tokens[request.request_id] += 1


def test_over_scheduling_is_blamed_on_the_scheduler_with_the_request_counters() -> None:
    engine = engine_whose_scheduler(schedule_one_too_many)
    rid = engine.add_request("hello", greedy(3))  # 5 prompt tokens, none computed yet
    message = (
        f"the scheduler scheduled more tokens than the request has: request {rid!r} has "
        f"num_computed_tokens=0, n=6 scheduled, num_tokens=5 (at most 5 can be scheduled)"
    )
    with pytest.raises(SchedulerContractError, match=f"^{re.escape(message)}$"):
        engine.step()


def test_over_scheduling_a_decode_is_caught_too() -> None:
    def over_schedule_decodes(scheduler: Scheduler, output: SchedulerOutput) -> None:
        for request in output.scheduled_requests:
            if request.num_output_tokens:
                output.num_scheduled_tokens[request.request_id] += 1

    engine = engine_whose_scheduler(over_schedule_decodes)
    rid = engine.add_request("hello", greedy(3))
    engine.step()  # the prefill is fine; the first decode gets n=2 for a gap of 1
    with pytest.raises(
        SchedulerContractError,
        match=re.escape(
            f"request {rid!r} has num_computed_tokens=5, n=2 scheduled, num_tokens=6"
        ),
    ):
        engine.step()


def test_scheduler_contract_error_is_an_assertion_error_not_a_value_error() -> None:
    # Code that catches ValueError to refuse a bad *request* must never swallow a scheduler bug.
    assert issubclass(SchedulerContractError, AssertionError)
    assert not issubclass(SchedulerContractError, ValueError)


def schedule_zero_tokens(scheduler: Scheduler, output: SchedulerOutput) -> None:
    for request in output.scheduled_requests:
        output.num_scheduled_tokens[request.request_id] = 0


def schedule_a_float(scheduler: Scheduler, output: SchedulerOutput) -> None:
    for request in output.scheduled_requests:
        output.num_scheduled_tokens[request.request_id] = 2.0  # type: ignore[assignment]


def schedule_an_unknown_id(scheduler: Scheduler, output: SchedulerOutput) -> None:
    output.num_scheduled_tokens["ghost"] = 1


def forget_the_token_counts(scheduler: Scheduler, output: SchedulerOutput) -> None:
    output.num_scheduled_tokens.clear()


def schedule_a_request_twice(scheduler: Scheduler, output: SchedulerOutput) -> None:
    output.scheduled_requests.append(output.scheduled_requests[0])


def schedule_a_request_never_added(scheduler: Scheduler, output: SchedulerOutput) -> None:
    output.scheduled_requests.append(Request([1, 2], greedy(1), request_id="stray"))
    output.num_scheduled_tokens["stray"] = 2


CONTRACT_BREAKS: dict[str, tuple[Breakage, str]] = {
    "zero_tokens": (
        schedule_zero_tokens,
        r"the scheduler scheduled n=0 tokens for request 'req-\d+': a scheduled request needs "
        r"an int n >= 1",
    ),
    "float_tokens": (
        schedule_a_float,
        r"the scheduler scheduled n=2\.0 tokens for request 'req-\d+': a scheduled request "
        r"needs an int n >= 1",
    ),
    "unknown_request_id": (
        schedule_an_unknown_id,
        r"the scheduler scheduled unknown request ids \['ghost'\]: every key of "
        r"num_scheduled_tokens must be a request in scheduled_requests",
    ),
    "missing_token_count": (
        forget_the_token_counts,
        r"the scheduler scheduled request 'req-\d+' but num_scheduled_tokens has no entry",
    ),
    "scheduled_twice": (
        schedule_a_request_twice,
        r"the scheduler scheduled request 'req-\d+' twice in one step",
    ),
    "not_running": (
        schedule_a_request_never_added,
        r"the scheduler scheduled request 'stray', which is not in `running` \(status WAITING\)",
    ),
}


@pytest.mark.parametrize(
    ("breaks", "match"), CONTRACT_BREAKS.values(), ids=CONTRACT_BREAKS.keys()
)
def test_unexecutable_scheduler_output_is_blamed_on_the_scheduler(
    breaks: Breakage, match: str
) -> None:
    engine = engine_whose_scheduler(breaks)
    engine.add_request("hello", greedy(3))
    with pytest.raises(SchedulerContractError, match=f"^{match}"):
        engine.step()


def test_stock_scheduler_passes_the_contract_check_through_chunking_and_preemption() -> None:
    # The check runs inside every step; a cramped, chunked run must not trip it.
    engine = LLMEngine(num_blocks=5, block_size=4, max_num_batched_tokens=5)
    requests = [engine.get_request(engine.add_request(p, greedy(8))) for p in ("abcdefgh", "ijkl")]
    done = run_all(engine)
    assert sum(r.num_preemptions for r in requests) > 0, "the cramped pool must preempt"
    assert sorted(done) == sorted(r.request_id for r in requests)
    assert all(len(tokens) == 8 for tokens in done.values())
