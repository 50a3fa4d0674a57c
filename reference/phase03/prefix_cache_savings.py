"""Reference for kata 03-06 — count the forward-pass work of a run, with and without caching."""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase03.prefix_cache_savings.scaffold import Odometer
from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput


def run_and_count(
    prompts: Sequence[str], *, enable_caching: bool, block_size: int = 4, max_tokens: int = 4
) -> Odometer:
    """Generate every prompt to ``max_tokens`` (greedy) and read the scheduled-token odometer."""
    engine = LLMEngine(block_size=block_size, enable_caching=enable_caching)
    step_totals: list[int] = []
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        # Observe, never modify: the engine must run exactly as it would unobserved.
        out = schedule()
        step_totals.append(out.total_num_scheduled_tokens)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    results = engine.generate(list(prompts), params)
    return Odometer(sum(step_totals), step_totals, [r.output_token_ids for r in results])
