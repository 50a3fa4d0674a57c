"""Reference for kata 01-02 — predicting and recording the real engine loop."""

from __future__ import annotations

from typing import Any

from katas.phase01.real_engine_loop.scaffold import StepRecord


def predict_trace(prompt_len: int, max_tokens: int) -> list[StepRecord]:
    """The trace of one greedy request that ignores EOS and whose prompt fits the token budget."""
    trace = []
    for step in range(1, max_tokens + 1):
        # Step 1 prefills P tokens and samples token P+1; each later step computes the token
        # sampled just before. The last sampled token's KV is never computed: no step needs it.
        finished = step == max_tokens
        trace.append(StepRecord(prompt_len + step - 1, prompt_len + step,
                                "length" if finished else None))
    return trace


def trace_engine_loop(
    engine: Any, scheduler: Any, prompt: str, sampling_params: Any
) -> list[StepRecord]:
    """Run one request on a real vLLM engine step by step and record it after every step."""
    before = set(scheduler.requests)
    engine.add_request("real-engine-loop", prompt, sampling_params)
    # vLLM appends a random suffix to the id we gave (ids must be unique inside the core), so
    # the request is whichever one appeared. The object outlives its removal from the scheduler.
    (request,) = (r for rid, r in scheduler.requests.items() if rid not in before)
    trace = []
    while engine.has_unfinished_requests():
        outputs = engine.step()
        reason = next((o.outputs[0].finish_reason for o in outputs
                       if o.finished and o.request_id == "real-engine-loop"), None)
        trace.append(StepRecord(request.num_computed_tokens, request.num_tokens, reason))
    return trace
