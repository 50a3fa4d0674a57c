"""Kata 01-04 — watch the batch: record who runs, for how many tokens, at every engine step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mini_vllm import LLMEngine, SamplingParams  # noqa: F401  (what you will need)


def trace_batches(
    prompts: Sequence[str], max_tokens: int = 4, **engine_kwargs: Any
) -> tuple[list[str], list[dict[str, int]]]:
    """Run ``prompts`` together on one engine; return ``(request ids, per-step batch)``.

    - The engine is ``LLMEngine(**engine_kwargs)``; every prompt is added, in order, with
      ``SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)``, and the
      engine runs until nothing is unfinished.
    - The first element lists the ids ``add_request`` returned, in prompt order (ids are
      process-global: never build ``"req-0"`` yourself).
    - The second holds one dict per ``scheduler.schedule()`` call, in step order: that step's
      ``{request_id: tokens scheduled}``, exactly as the scheduler planned it. The dicts are
      yours: the scheduler may reuse its own after the step.
    - Observe, don't modify: the engine must do exactly what it would do unobserved, working
      on the very plan ``schedule()`` made.

    Example (the course's): A = ``"hello world"``, B = ``"goodbye"``, ``max_tokens=4``,
    ``max_num_batched_tokens=8`` -> ``{A: 8}, {A: 3, B: 5}, {A: 1, B: 2}, {A: 1, B: 1},
    {A: 1, B: 1}, {B: 1}``.
    """
    raise NotImplementedError(
        "trace_batches: record what the scheduler planned at every step, changing nothing"
    )
