"""Kata 03-04 — preemption: survive memory pressure. Your work goes here.

When a running request needs KV slots and the pool has none, the scheduler evicts running
requests to make room and replays them later. You write that emergency path, the scheduler runs
the whole engine on it (``scaffold.scheduler_with``), and an experiment in a cramped pool proves
that memory pressure costs steps, never tokens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

# Provided by the lab: the scheduler that calls your allocate_or_preempt, and the run record.
from katas.phase03.preemption.scaffold import PreemptionRun, scheduler_with  # noqa: F401
from mini_vllm import LLMEngine, Request, RequestStatus, SamplingParams  # noqa: F401


def preempt(request: Request, waiting: deque[Request], kv: Any) -> None:
    """Preempt ``request`` by recomputation. The caller has already taken it out of ``running``.

    Afterwards:

    - ``kv`` (the KV cache manager: ``allocate_slots``, ``free``) holds no blocks for it;
    - its ``num_computed_tokens`` is 0, and its ``output_token_ids`` are exactly what they were
      (on re-admission it prefills prompt + outputs and continues where it stopped);
    - its ``status`` is ``RequestStatus.PREEMPTED`` and its ``num_preemptions`` is one higher;
    - it is the first request in ``waiting``, ahead of everyone who was already waiting.
    """
    raise NotImplementedError("preempt: give back the victim's KV and queue it for a replay")


def allocate_or_preempt(
    request: Request,
    num_new_tokens: int,
    running: list[Request],
    waiting: deque[Request],
    kv: Any,
) -> list[Request]:
    """Give running ``request`` KV slots for ``num_new_tokens`` more tokens, evicting if needed.

    ``running`` is in admission order and ``request`` is in it; ``kv.allocate_slots(request,
    num_new_tokens)`` returns ``None`` when the pool cannot hold them. When it cannot, free
    memory by preempting (with ``preempt``) running requests, the most recently admitted first
    (vLLM's FCFS policy: the end of ``running``), until the allocation succeeds or ``request``
    itself has been preempted; then stop.

    Returns the preempted requests in the order they were evicted ([] when ``request`` fit
    at once). ``request`` holds its new slots exactly when it is not in that list. Victims leave
    ``running``; nobody is evicted while the allocation can succeed, and requests ahead of
    ``request`` in ``running`` are never victims.

    Example: ``running = [A, B, C]``, the pool is full and A needs one more block, which B and
    C hold one each: C is evicted, A gets its block, the result is ``[C]``, ``running`` is
    ``[A, B]`` and ``waiting`` starts with C.
    """
    raise NotImplementedError(
        "allocate_or_preempt: allocate, or evict the latest admissions until it fits"
    )


def run(prompts: Sequence[str], num_blocks: int, block_size: int, max_tokens: int) -> PreemptionRun:
    """Run every prompt to completion in a pool of ``num_blocks`` blocks of ``block_size`` tokens.

    The engine runs on your preemption: ``LLMEngine(num_blocks=..., block_size=...,
    scheduler_cls=scheduler_with(allocate_or_preempt))``. Every request is greedy and runs to
    exactly ``max_tokens`` new tokens, EOS or not (``ignore_eos``). ``add_request``'s
    ``ValueError`` for a request that could never fit the pool alone must reach the caller.

    Return ``PreemptionRun(request_ids, outputs, preempted, num_steps)``: ids and output token
    ids in prompt order, every step's ``SchedulerOutput.preempted_req_ids`` in order (repeats
    included), and the number of engine steps until nothing was left unfinished.
    """
    raise NotImplementedError(
        "run: drive LLMEngine on your preemption in this pool, record every eviction"
    )
