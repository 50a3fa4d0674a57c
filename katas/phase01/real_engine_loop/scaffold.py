"""What the lab provides for kata 01-02: the record of one engine step, and the workload.

The same workload runs on the real vLLM engine (live tests), on ``mini_vllm`` and against a
recording of real vLLM (``recorded_vllm.json``), so every test speaks about the same request.
"""

from __future__ import annotations

from typing import NamedTuple

# The course's prompt. With the tiny model's byte tokenizer it is 24 tokens (OPT's BPE made 6).
PROMPT = "The capital of France is"
MAX_TOKENS = 16


class StepRecord(NamedTuple):
    """The request as it stands right after one ``step()`` of the engine.

    ``finish_reason`` is None while the request runs, then ``"length"`` or ``"stop"`` on the
    step that finishes it (the names vLLM's ``CompletionOutput.finish_reason`` uses).
    """

    num_computed_tokens: int
    num_tokens: int
    finish_reason: str | None
