"""Reference for kata 03-04 — run a workload in a given KV pool and watch for evictions."""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase03.preemption.scaffold import PreemptionRun
from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput


def run(prompts: Sequence[str], num_blocks: int, block_size: int, max_tokens: int) -> PreemptionRun:
    """Run every prompt to completion in a pool of ``num_blocks`` blocks of ``block_size``."""
    engine = LLMEngine(num_blocks=num_blocks, block_size=block_size)
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
