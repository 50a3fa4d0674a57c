"""Reference for kata 01-01 — a request's lifecycle, photographed after every engine step."""

from __future__ import annotations

from typing import Any

from katas.phase01.trace_request.scaffold import Event
from mini_vllm import LLMEngine, SamplingParams


def trace_request(prompt: str, max_tokens: int = 4, **engine_kwargs: Any) -> list[Event]:
    """Run one prompt through a fresh engine by hand; return one ``Event`` per request per step."""
    engine = LLMEngine(**engine_kwargs)
    # Greedy + ignore_eos: the run is a pure function of the prompt and always max_tokens long.
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    engine.add_request(prompt, params)
    events: list[Event] = []
    while engine.scheduler.has_unfinished_requests():
        finished = engine.step()
        # update_from_output reaps a finished request before step() returns, so it is no longer
        # in `running`: the returned list is the only place its final state can be seen.
        for request in (*engine.scheduler.running, *finished):
            events.append(
                Event(
                    request.request_id,
                    request.status.name,
                    request.num_computed_tokens,
                    request.num_tokens,
                )
            )
    return events
