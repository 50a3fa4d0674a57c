"""Kata 03-04 — preemption: survive memory pressure. Your work goes here.

mini_vllm's scheduler already knows how to evict a request when the KV pool runs dry and replay
it later. Your job is the experiment around it: run a workload in a pool you are given, record
every eviction, and return what came out, so the tests can compare a cramped pool with a roomy one.
"""

from __future__ import annotations

from collections.abc import Sequence

# Provided by the lab: the record you return.
from katas.phase03.preemption.scaffold import PreemptionRun
from mini_vllm import LLMEngine, SamplingParams  # noqa: F401


def run(prompts: Sequence[str], num_blocks: int, block_size: int, max_tokens: int) -> PreemptionRun:
    """Run every prompt to completion in a pool of ``num_blocks`` blocks of ``block_size`` tokens.

    Recipe:

    1. ``LLMEngine(num_blocks=num_blocks, block_size=block_size)``; greedy parameters that run
       every request to exactly ``max_tokens``: ``SamplingParams(max_tokens=max_tokens,
       temperature=0.0, ignore_eos=True)``.
    2. ``add_request`` each prompt, in order, keeping the returned ids. Let its ``ValueError``
       escape: a request that cannot fit the pool even alone must be refused.
    3. Wrap ``engine.scheduler.schedule``: call the original, add its ``preempted_req_ids`` to
       your list, return the output unchanged.
    4. Step until ``has_unfinished_requests()`` is False, counting steps and keeping the
       ``output_token_ids`` of every request ``step()`` returns as finished.

    Return ``PreemptionRun(request_ids, outputs in prompt order, preempted, num_steps)``.
    """
    raise NotImplementedError(
        "run: drive LLMEngine with this pool, record every step's preempted_req_ids"
    )
