"""What the lab gives you: a request reduced to its two counters, a slot-counting KV memory, and
the adapter that lets a ``schedule_step`` function drive mini_vllm's whole engine.

None of this is your work. ``Req`` and ``FakeKV`` keep the scheduling problem pure: no blocks,
no hashes, one slot per token, so every failure is a scheduling failure. ``scheduler_driven_by``
is how the tests (and you, if you like) put your step in charge of a real ``LLMEngine``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mini_vllm import KVCacheManager, RequestStatus, Scheduler, SchedulerOutput


@dataclass(eq=False)
class Req:
    """The scheduler's view of a request: an id and two counters (and where it stands).

    ``num_tokens`` is prompt plus generated so far; ``num_computed_tokens`` is how many of them
    already have K/V. The gap between the two is the work left: a whole prompt for a new request,
    one token for a decode, something in between for a chunked or preempted one. The names match
    ``mini_vllm.Request``, so a step written against ``Req`` runs unchanged on the real thing.
    """

    request_id: str
    num_tokens: int
    num_computed_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING


class FakeKV:
    """KV memory as a number of token slots: ``allocate(req, n)`` reserves ``n`` more for ``req``.

    Reservations accumulate per request and never shrink (nothing here frees, because nothing in
    one scheduling step finishes). ``allocate`` answers ``False`` without reserving anything when
    fewer than ``n`` slots are free — running out of memory is an answer, not an exception.
    ``calls`` logs every attempt as ``(request_id, n, granted)``, in order.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.held: dict[str, int] = {}
        self.calls: list[tuple[str, int, bool]] = []

    @property
    def num_free(self) -> int:
        return self.capacity - sum(self.held.values())

    def allocate(self, req: Any, num_new_tokens: int) -> bool:
        if num_new_tokens < 0:
            raise ValueError(f"cannot allocate {num_new_tokens} slots")
        granted = num_new_tokens <= self.num_free
        self.calls.append((req.request_id, num_new_tokens, granted))
        if granted:
            self.held[req.request_id] = self.held.get(req.request_id, 0) + num_new_tokens
        return granted


class EngineKV:
    """``FakeKV``'s one-method interface over mini_vllm's real ``KVCacheManager``.

    ``allocate(req, n)`` is ``allocate_slots(req, n) is not None``: block granularity adds a
    ceiling division and changes no scheduling logic. A running request that cannot grow would
    need preemption, which this lab leaves out (kata 03-04 is about it): that raises, so a
    workload too cramped for this step fails loudly instead of computing into missing blocks.

    ``reserve_full_isl`` is the engine's ``scheduler_reserve_full_isl`` (vLLM 0.32's admission
    gate, on under ``policy="vllm-0.32"``): an admission is granted only if the request's whole
    input fits now, though only ``n`` slots are taken. It is memory's answer, so your step
    needs no change for it. ``running`` names the requests that were running when the step
    began: every other request is being admitted.
    """

    def __init__(self, manager: KVCacheManager, *, reserve_full_isl: bool = False,
                 running: frozenset[str] = frozenset()) -> None:
        self.manager = manager
        self.reserve_full_isl = reserve_full_isl
        self.running = running

    def allocate(self, req: Any, num_new_tokens: int) -> bool:
        admitting = req.request_id not in self.running
        granted = self.manager.allocate_slots(
            req, num_new_tokens, full_sequence_must_fit=self.reserve_full_isl and admitting,
        ) is not None
        if not granted and not admitting:
            raise RuntimeError(
                f"running request {req.request_id} needs {num_new_tokens} more slots and the "
                "pool is empty: that takes preemption, which this step does not do"
            )
        return granted


ScheduleStep = Callable[..., dict[str, int]]


def scheduler_driven_by(schedule_step: ScheduleStep) -> type[Scheduler]:
    """A mini_vllm ``Scheduler`` whose every decision is made by ``schedule_step``.

    Pass it as ``LLMEngine(scheduler_cls=scheduler_driven_by(schedule_step), ...)``. Each
    ``schedule()`` call hands the engine's own ``running`` list and ``waiting`` deque to your
    function, with the engine's limits, and turns the ``{request_id: n}`` it returns into the
    ``SchedulerOutput`` the rest of the engine consumes (rows in the dict's order). Nothing else
    decides who runs. Prefix caching is not consulted (this step does not do it), so run the
    engine with ``enable_caching=False`` when you compare schedules with the stock scheduler.

    The engine's policy reaches your step through its inputs, never its logic: under
    ``policy="vllm-0.32"`` a lone request (nobody else running or waiting) is handed threshold
    0, and admissions are refused unless the whole input fits (:class:`EngineKV`).
    """

    class StepDrivenScheduler(Scheduler):
        def schedule(self) -> SchedulerOutput:
            before = {r.request_id for r in self.running}
            counts = schedule_step(
                self.running,
                self.waiting,
                EngineKV(self.kv, reserve_full_isl=self.scheduler_reserve_full_isl,
                         running=frozenset(before)),
                max_num_batched_tokens=self.max_num_batched_tokens,
                max_num_seqs=self.max_num_seqs,
                long_prefill_token_threshold=self._step_threshold(),
            )
            by_id = {r.request_id: r for r in self.running}
            missing = [rid for rid in counts if rid not in by_id]
            if missing:
                raise AssertionError(
                    f"schedule_step scheduled {missing}, which are not in `running` afterwards: "
                    "admitted requests must be moved from waiting to running"
                )
            return SchedulerOutput(
                num_scheduled_tokens=dict(counts),
                scheduled_requests=[by_id[rid] for rid in counts],
                scheduled_new_req_ids=[rid for rid in counts if rid not in before],
            )

    return StepDrivenScheduler


__all__ = ["EngineKV", "FakeKV", "Req", "ScheduleStep", "scheduler_driven_by"]
