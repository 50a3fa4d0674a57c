"""Kata 03-01 — implement the scheduler step. Your work goes here.

Every engine step asks one question: who computes, and how many tokens each? Answer it under
three separate limits — a token budget for the step, a cap on how many requests may be running,
and KV memory — by serving the running requests first and then admitting waiting ones in
arrival order. Prefill and decode are not separate cases: both are "a request whose
``num_computed_tokens`` is behind its ``num_tokens``".
"""

from __future__ import annotations

from collections import deque

# Provided by the lab: the request and the memory you schedule against.
from katas.phase03.scheduler_step.scaffold import FakeKV, Req
from mini_vllm import RequestStatus  # noqa: F401  (admitted requests become RUNNING)


def clamp(num_new_tokens: int, token_budget: int, long_prefill_token_threshold: int) -> int:
    """How many tokens a request may compute this step.

    Start from the request's gap ``num_new_tokens``. If the threshold is on (``> 0``) and the gap
    is larger, cap it at the threshold: that is chunked prefill. Then cap it at what is left of
    the step's ``token_budget``. Never return less than 0.
    """
    raise NotImplementedError("clamp: cap by the threshold (when > 0), then by the budget, floor 0")


def schedule_step(
    running: list[Req],
    waiting: deque[Req],
    kv: FakeKV,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    long_prefill_token_threshold: int = 0,
) -> dict[str, int]:
    """Schedule one step; return ``{request_id: tokens}``, running requests first.

    Recipe:

    1. ``budget = max_num_batched_tokens``.
    2. Running phase: for each request in ``running``, in order, ``n = clamp(num_tokens -
       num_computed_tokens, budget, threshold)``. Skip it when ``n == 0``. Otherwise reserve
       memory with ``kv.allocate(req, n)`` (it succeeds for running requests in this kata:
       preemption is kata 03-04's), record ``n`` and take it off the budget.
    3. Waiting phase: while ``waiting`` is non-empty and ``budget > 0`` and
       ``len(running) < max_num_seqs``: look at the *front* request, clamp it the same way and
       try ``kv.allocate``. If that fails, stop admitting (never skip ahead to a smaller one).
       If it succeeds, pop it from ``waiting``, set its status to ``RequestStatus.RUNNING``,
       append it to ``running``, record ``n`` and take it off the budget.
    4. Return the dict, in the order you scheduled (it is the order of the batch's rows).

    Change nothing else: ``num_computed_tokens`` advances after the forward pass, not here.
    """
    raise NotImplementedError(
        "schedule_step: running first, then admit waiting FCFS under budget, seats and memory"
    )
