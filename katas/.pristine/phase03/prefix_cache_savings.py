"""Kata 03-06 — prefix caching: count every token it saves. Your work goes here.

Every token of forward-pass work the engine does passes through a ``SchedulerOutput`` once.
Add them up over a run and you have the engine's compute odometer: run the same prompts with
caching off and on, and the difference is exactly what the cache saved.
"""

from __future__ import annotations

from collections.abc import Sequence

# Provided by the lab: the record you return.
from katas.phase03.prefix_cache_savings.scaffold import Odometer
from mini_vllm import LLMEngine, SamplingParams  # noqa: F401


def run_and_count(
    prompts: Sequence[str], *, enable_caching: bool, block_size: int = 4, max_tokens: int = 4
) -> Odometer:
    """Generate every prompt and return the scheduled-token odometer.

    Recipe: ``LLMEngine(block_size=block_size, enable_caching=enable_caching)``. Wrap
    ``engine.scheduler.schedule`` with a probe that calls the original, appends
    ``out.total_num_scheduled_tokens`` to a list and returns ``out`` unchanged. Run
    ``engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0,
    ignore_eos=True))``. Return ``Odometer(sum of the list, the list, each result's
    output_token_ids in prompt order)``.
    """
    raise NotImplementedError(
        "run_and_count: probe schedule(), sum total_num_scheduled_tokens over a generate() run"
    )
