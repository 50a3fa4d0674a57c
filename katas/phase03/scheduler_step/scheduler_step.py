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

    ``num_new_tokens`` is the request's gap (tokens without K/V yet). The answer never exceeds
    the gap, never exceeds what is left of the step's ``token_budget``, and, when the threshold
    is on (``long_prefill_token_threshold > 0``), never exceeds the threshold either: that cap is
    chunked prefill. ``0`` turns the threshold off. The answer is never negative, even for an
    overdrawn budget. Examples: ``(100, 10, 0) -> 10``, ``(100, 50, 16) -> 16``,
    ``(5, 50, 16) -> 5``.
    """
    raise NotImplementedError("clamp: the tokens one request may compute this step")


def schedule_step(
    running: list[Req],
    waiting: deque[Req],
    kv: FakeKV,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    long_prefill_token_threshold: int = 0,
) -> dict[str, int]:
    """Plan one engine step: ``{request_id: tokens to compute}``, in the batch's row order.

    What must hold:

    * **Budget.** The step's tokens add up to at most ``max_num_batched_tokens``; each request
      gets what :func:`clamp` allows it from the budget still left when its turn comes. No
      request is ever scheduled for 0 tokens.
    * **Running first.** Every request in ``running`` is served, in list order, before anyone is
      admitted from ``waiting``; rows are the running requests, then this step's admissions.
      A running request already holds its seat: ``max_num_seqs`` does not apply to it.
    * **Admission, strictly first come first served.** Only the front of ``waiting`` is ever
      considered, and only while budget is left and fewer than ``max_num_seqs`` requests are
      running. Once the front request cannot be admitted, nobody behind it is tried this step.
    * **Memory.** Every scheduled request, running or admitted, reserves KV slots for exactly
      the tokens it is scheduled for, with ``kv.allocate(req, n)``. A refusal at admission is
      an answer (stop admitting; the request stays waiting, holding nothing). A running request
      that cannot grow would need preemption, which this kata leaves out: raise if it happens.
    * **Side effects.** An admitted request is popped from ``waiting``, appended to ``running``
      and becomes ``RequestStatus.RUNNING``. Nothing else changes: ``num_computed_tokens``
      advances after the forward pass, not here.

    The course's example: three waiting 8-token prompts under a budget of 10 give
    ``{"A": 8, "B": 2}`` (B's prefill is chunked, C is not admitted).
    """
    raise NotImplementedError(
        "schedule_step: who computes this step, and how many tokens each"
    )
