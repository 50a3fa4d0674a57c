"""Reference for kata 03-04 — recompute preemption, and an experiment that forces it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from katas.phase03.preemption.scaffold import PreemptionRun, scheduler_with
from mini_vllm import LLMEngine, Request, RequestStatus, SamplingParams, SchedulerOutput


def preempt(request: Request, waiting: deque[Request], kv: Any) -> None:
    """Recompute-style preemption of ``request``, which the caller already took out of running."""
    kv.free(request)
    # Keep the outputs: on re-admission the request prefills prompt + outputs and samples its
    # next token at the same (last token, position) as if it had never left.
    request.num_computed_tokens = 0
    request.num_preemptions += 1
    request.status = RequestStatus.PREEMPTED
    # It has waited longest of everyone in the queue: it goes back in first.
    waiting.appendleft(request)


def allocate_or_preempt(
    request: Request,
    num_new_tokens: int,
    running: list[Request],
    waiting: deque[Request],
    kv: Any,
) -> list[Request]:
    """Get KV slots for ``request``'s next tokens, evicting the latest admissions until they fit."""
    preempted: list[Request] = []
    while kv.allocate_slots(request, num_new_tokens) is None:
        # FCFS: the most recently admitted request has computed the least and is the lowest
        # priority. It is always at or behind `request`, so nobody scheduled this step is evicted.
        victim = running.pop()
        preempt(victim, waiting, kv)
        preempted.append(victim)
        if victim is request:
            break  # nobody left to evict but itself: it waits at the front of the line
    return preempted


def run(prompts: Sequence[str], num_blocks: int, block_size: int, max_tokens: int) -> PreemptionRun:
    """Run every prompt to completion in a pool of ``num_blocks`` blocks of ``block_size``."""
    engine = LLMEngine(
        num_blocks=num_blocks,
        block_size=block_size,
        scheduler_cls=scheduler_with(allocate_or_preempt),
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    # add_request refuses a request that could never fit the pool alone (ValueError). Letting it
    # through would preempt that request forever: the deadlock guard is an admission check.
    request_ids = [engine.add_request(prompt, params) for prompt in prompts]

    preempted: list[str] = []
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = schedule()
        preempted.extend(out.preempted_req_ids)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    outputs: dict[str, list[int]] = {}
    num_steps = 0
    while engine.has_unfinished_requests():
        for request in engine.step():
            outputs[request.request_id] = request.output_token_ids
        num_steps += 1
    return PreemptionRun(request_ids, [outputs[rid] for rid in request_ids], preempted, num_steps)
