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
    """Generate every prompt on a fresh engine and return its scheduled-token odometer.

    The engine is ``LLMEngine(block_size=block_size, enable_caching=enable_caching)`` with every
    other setting at its default, and it must run exactly as it would unobserved. Every prompt
    is generated greedily to exactly ``max_tokens`` tokens (an EOS token does not stop it).

    Returns ``Odometer(total, step_totals, outputs)``: ``step_totals[i]`` is the number of
    tokens the scheduler scheduled in engine step ``i`` (every step of the run, in order),
    ``total`` their sum, and ``outputs`` the generated token ids, one list per prompt, in
    prompt order.

    Example: eight 65-token prompts sharing a 64-token prefix, blocks of 4, ``max_tokens=4``:
    ``total`` is 544 with caching off and 96 with it on.
    """
    raise NotImplementedError("run_and_count: the scheduled-token odometer of a generate() run")
