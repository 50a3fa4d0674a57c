"""Kata 01-01 — trace one request's lifecycle through the mini_vllm engine, step by step."""

from __future__ import annotations

from typing import Any

from katas.phase01.trace_request.scaffold import Event
from mini_vllm import LLMEngine, SamplingParams  # noqa: F401  (what you will need)


def trace_request(prompt: str, max_tokens: int = 4, **engine_kwargs: Any) -> list[Event]:
    """Run one prompt through a fresh engine, one step at a time; return what every step left.

    - The engine is ``LLMEngine(**engine_kwargs)``: the keyword arguments reach it untouched
      (``long_prefill_token_threshold=2``, ``max_num_batched_tokens=4``... are how a caller
      makes a chunked prefill visible).
    - The prompt is added once, greedy and blind to EOS —
      ``SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)`` — so the run
      is reproducible and always exactly ``max_tokens`` tokens long.
    - The engine is stepped by hand until it has no unfinished request (``generate`` would
      hide the steps).
    - After every step, one ``Event(request_id, status name, num_computed_tokens, num_tokens)``
      per request the step left alive, then one per request it finished. Nothing is recorded
      before the first step, so ``WAITING`` never appears.

    Example: ``trace_request("hello", max_tokens=4)`` gives, for the request's id,
    ``RUNNING (5, 6)``, ``RUNNING (6, 7)``, ``RUNNING (7, 8)``, ``FINISHED_LENGTH (8, 9)``.
    """
    raise NotImplementedError(
        "trace_request: step the engine by hand and record an Event per request after each step"
    )
