"""Reference for kata 03-01 — one scheduling step: serve the running, then admit the waiting."""

from __future__ import annotations

from collections import deque

from katas.phase03.scheduler_step.scaffold import FakeKV, Req
from mini_vllm import RequestStatus


def clamp(num_new_tokens: int, token_budget: int, long_prefill_token_threshold: int) -> int:
    """Tokens a request may compute this step: its gap, capped by the threshold and the budget."""
    if 0 < long_prefill_token_threshold < num_new_tokens:
        num_new_tokens = long_prefill_token_threshold
    return max(min(num_new_tokens, token_budget), 0)


def schedule_step(
    running: list[Req],
    waiting: deque[Req],
    kv: FakeKV,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    long_prefill_token_threshold: int = 0,
) -> dict[str, int]:
    """Decide one step: ``{request_id: tokens}``, running requests first, then admissions."""
    scheduled: dict[str, int] = {}
    budget = max_num_batched_tokens

    # Running first: these requests hold KV already and their users are watching a stream.
    # A slot, once won, is never re-contested: max_num_seqs is not checked here.
    for req in running:
        n = clamp(req.num_tokens - req.num_computed_tokens, budget, long_prefill_token_threshold)
        if n == 0:
            continue  # out of budget (or nothing to compute): it simply sits this step out
        if not kv.allocate(req, n):
            raise RuntimeError(
                f"running request {req.request_id} could not grow by {n} tokens: that needs "
                "preemption, which this step leaves out"
            )
        scheduled[req.request_id] = n
        budget -= n

    # Then admissions, strictly first come first served. The three gates are the three
    # scarcities: tokens this step, seats in the running set, and (below) memory.
    while waiting and budget > 0 and len(running) < max_num_seqs:
        req = waiting[0]
        n = clamp(req.num_tokens - req.num_computed_tokens, budget, long_prefill_token_threshold)
        if not kv.allocate(req, n):
            # Head-of-line blocking on purpose: letting a smaller request behind it jump the
            # queue would raise utilisation and starve big prompts forever.
            break
        waiting.popleft()
        req.status = RequestStatus.RUNNING
        running.append(req)
        scheduled[req.request_id] = n
        budget -= n
    return scheduled
