"""Kata 01-01 — trace one request's lifecycle through the mini_vllm engine, step by step."""

from __future__ import annotations

from typing import Any

from katas.phase01.trace_request.scaffold import Event
from mini_vllm import LLMEngine, SamplingParams  # noqa: F401  (what you will need)


def trace_request(prompt: str, max_tokens: int = 4, **engine_kwargs: Any) -> list[Event]:
    """Run one prompt through a fresh engine by hand; return one ``Event`` per request per step.

    Recipe:

    1. ``engine = LLMEngine(**engine_kwargs)`` — pass the keyword arguments through untouched
       (``long_prefill_token_threshold=2``, ``max_num_batched_tokens=4``... are how a caller
       makes the prefill visible).
    2. Add the prompt once, with ``SamplingParams(max_tokens=max_tokens, temperature=0.0,
       ignore_eos=True)``: greedy and blind to EOS, so the run is reproducible and always
       exactly ``max_tokens`` long.
    3. While ``engine.scheduler.has_unfinished_requests()``: call ``engine.step()`` yourself
       (not ``generate``, which would hide the steps), then photograph every request in
       ``engine.scheduler.running`` and after them every request in the list ``step()``
       returned. A finished request has already left ``running`` when ``step()`` returns, so
       the returned list is the only place its final state can be seen.
    4. A photograph is ``Event(request.request_id, request.status.name,
       request.num_computed_tokens, request.num_tokens)``. Take none before the first step.
    """
    raise NotImplementedError(
        "trace_request: step the engine by hand and record an Event per request after each step"
    )
