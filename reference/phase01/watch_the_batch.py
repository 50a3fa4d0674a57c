"""Reference for kata 01-04 — the batch composition of every step, seen through a probe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput


def trace_batches(
    prompts: Sequence[str], max_tokens: int = 4, **engine_kwargs: Any
) -> tuple[list[str], list[dict[str, int]]]:
    """Run ``prompts`` together on one engine; return ``(request ids, per-step batch)``."""
    engine = LLMEngine(**engine_kwargs)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    ids = [engine.add_request(prompt, params) for prompt in prompts]

    trace: list[dict[str, int]] = []
    schedule = engine.scheduler.schedule  # the original bound method

    def probe() -> SchedulerOutput:
        out = schedule()
        # A copy: the dict belongs to the scheduler, which may reuse or mutate it later.
        trace.append(dict(out.num_scheduled_tokens))
        return out  # the very object, so the engine cannot tell the probe is there

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    while engine.has_unfinished_requests():
        engine.step()
    return ids, trace
