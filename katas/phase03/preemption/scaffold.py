"""What the lab gives you: a scheduler that hands its allocate-or-preempt step to your function,
and the record a preemption experiment returns.

``scheduler_with(allocate_or_preempt)`` builds a class for ``LLMEngine(scheduler_cls=...)``.
Its ``schedule()`` is mini_vllm's (``mini_vllm/scheduler.py: Scheduler.schedule``): running
requests first, in admission order, then admissions from ``waiting``, none in a step that
preempted. The one difference: where mini_vllm asks the KV cache for a running request's slots
and evicts when the answer is ``None``, this scheduler calls *your* ``allocate_or_preempt``
and trusts what it reports. So the whole engine runs on your preemption, and its tokens and
evictions can be compared, step by step, with the stock engine's.

It also checks what your function did, the way the engine checks any scheduler's output
(``mini_vllm.scheduler.check_scheduler_output``): a broken promise stops the run with a
``SchedulerContractError`` that names the request, instead of an ``IndexError`` three steps
later or an engine that never finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from mini_vllm import Request, Scheduler, SchedulerContractError, SchedulerOutput

#: ``allocate_or_preempt(request, num_new_tokens, running, waiting, kv) -> preempted requests``
AllocateOrPreempt = Callable[[Request, int, list[Request], deque[Request], Any], list[Request]]

#: A run longer than this is a livelock (requests evicting each other, blocks never freed);
#: every workload of this kata finishes in under 40 steps.
MAX_STEPS = 1000


class PreemptionRun(NamedTuple):
    """One run of a workload to completion.

    ``request_ids`` and ``outputs`` are in prompt order (ids are the ones ``add_request``
    returned). ``preempted`` lists every id in every step's ``preempted_req_ids``, step by step,
    repeats included (a request evicted twice appears twice). ``num_steps`` is the number of
    engine steps the run took.
    """

    request_ids: list[str]
    outputs: list[list[int]]
    preempted: list[str]
    num_steps: int


class BoundedKV:
    """A KV cache manager that allows at most ``max_allocations`` calls of ``allocate_slots``.

    One ``allocate_or_preempt`` call retries at most once per running request (each retry
    follows an eviction), so more calls than that mean a loop that evicts nobody new, for
    instance a victim that was never removed from ``running``. Everything else is passed
    through to the wrapped manager.
    """

    def __init__(self, kv: Any, max_allocations: int) -> None:
        self._kv = kv
        self._left = max_allocations
        self._max = max_allocations

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       new_computed_blocks: Sequence[Any] | None = None) -> Any:
        if self._left <= 0:
            raise SchedulerContractError(
                f"allocate_slots was asked for {request.request_id!r} more than {self._max} "
                f"times in one allocate_or_preempt call, with only {self._max - 1} running "
                f"requests to evict: each retry must follow the eviction of a new victim (is "
                f"every victim taken out of `running`?)"
            )
        self._left -= 1
        return self._kv.allocate_slots(request, num_new_tokens, new_computed_blocks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)


class PreemptingScheduler(Scheduler):
    """mini_vllm's scheduler with the allocate-or-preempt step handed to a function.

    Use ``scheduler_with(fn)``, which sets ``allocate_or_preempt``; the engine constructs the
    scheduler itself.
    """

    allocate_or_preempt: AllocateOrPreempt | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_schedules = 0

    def schedule(self) -> SchedulerOutput:
        # mini_vllm's own schedule(): its running phase calls _allocate_or_preempt below.
        self.num_schedules += 1
        if self.num_schedules > MAX_STEPS:
            raise SchedulerContractError(
                f"the engine ran {MAX_STEPS} steps without finishing: requests are evicting each "
                f"other forever, or evicted requests never give their blocks back. Still "
                f"running: {self.running}; waiting: {list(self.waiting)}"
            )
        return super().schedule()

    def _allocate_or_preempt(self, request: Request, n: int, req_index: int) -> list[Request]:
        """Call the function, then hold it to its contract (see the module docstring)."""
        fn = type(self).allocate_or_preempt
        if fn is None:
            raise TypeError("PreemptingScheduler needs a function: use scheduler_with(fn)")
        rid = request.request_id
        scheduled = self.running[:req_index]
        kv = BoundedKV(self.kv, max_allocations=len(self.running) + 1)
        victims = fn(request, n, self.running, self.waiting, kv)
        if not isinstance(victims, list | tuple) or not all(
            isinstance(v, Request) for v in victims
        ):
            raise SchedulerContractError(
                f"allocate_or_preempt must return the list of requests it preempted (empty when "
                f"{rid!r} fit without evicting anyone); got {victims!r}"
            )
        for victim in victims:
            vid = victim.request_id
            if any(victim is s for s in scheduled):
                raise SchedulerContractError(
                    f"{rid!r} preempted {vid!r}, which comes before it in `running` and was "
                    f"already scheduled this step: victims come from the end of `running`"
                )
            if any(victim is r for r in self.running):
                raise SchedulerContractError(
                    f"{rid!r} preempted {vid!r}, but {vid!r} is still in `running`: a victim "
                    f"leaves `running`"
                )
            if not any(victim is w for w in self.waiting):
                raise SchedulerContractError(
                    f"{rid!r} preempted {vid!r}, but {vid!r} is not in `waiting`: a victim "
                    f"waits there to be re-admitted, or it never finishes"
                )
            held = self.kv.get_block_ids(vid)
            if held:
                raise SchedulerContractError(
                    f"{rid!r} preempted {vid!r}, but {vid!r} still holds KV blocks {held}: a "
                    f"victim gives back every block (and is not allocated again in the same call)"
                )
        if any(victim is request for victim in victims):
            return list(victims)
        if req_index >= len(self.running) or self.running[req_index] is not request:
            raise SchedulerContractError(
                f"allocate_or_preempt returned without preempting {rid!r}, but {rid!r} is no "
                f"longer at its place in `running` (index {req_index}): only victims leave it"
            )
        slots = len(self.kv.get_block_ids(rid)) * self.kv.block_size
        needed = request.num_computed_tokens + n
        if slots < needed:
            raise SchedulerContractError(
                f"allocate_or_preempt returned without preempting {rid!r}, but {rid!r} has KV "
                f"slots for {slots} tokens and needs {needed} ({request.num_computed_tokens} "
                f"computed + {n} new): when it is not a victim, its allocation must have "
                f"succeeded"
            )
        return list(victims)


def scheduler_with(allocate_or_preempt: AllocateOrPreempt) -> type[PreemptingScheduler]:
    """A scheduler class for ``LLMEngine(scheduler_cls=...)`` that preempts with your function.

    ``allocate_or_preempt(request, num_new_tokens, running, waiting, kv)`` is called for every
    running request that the step schedules, with the scheduler's own ``running`` list and
    ``waiting`` deque (mutate them in place) and its KV cache manager.
    """
    return type(
        "LearnerPreemptingScheduler",
        (PreemptingScheduler,),
        {"allocate_or_preempt": staticmethod(allocate_or_preempt)},
    )
