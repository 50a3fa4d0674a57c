"""Kata 01-04 — watch the batch: record who runs, for how many tokens, at every engine step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mini_vllm import LLMEngine, SamplingParams  # noqa: F401  (what you will need)


def trace_batches(
    prompts: Sequence[str], max_tokens: int = 4, **engine_kwargs: Any
) -> tuple[list[str], list[dict[str, int]]]:
    """Run ``prompts`` together on one engine; return ``(request ids, per-step batch)``.

    The first element lists the ids ``add_request`` returned, in prompt order. The second
    holds one dict per scheduling step, ``{request_id: tokens scheduled this step}``, in step
    order.

    Recipe:

    1. ``engine = LLMEngine(**engine_kwargs)``; add every prompt with
       ``SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)``.
    2. Install an observe-don't-modify probe: replace ``engine.scheduler.schedule`` with a
       function that calls the original, appends a *copy* of ``out.num_scheduled_tokens`` to
       the trace, and returns ``out`` itself, unchanged. The engine must behave exactly as it
       would without the probe.
    3. ``engine.step()`` until ``engine.has_unfinished_requests()`` is false.
    """
    raise NotImplementedError(
        "trace_batches: wrap scheduler.schedule, record a copy of num_scheduled_tokens per step"
    )
