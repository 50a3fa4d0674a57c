"""Kata 01-02 — read the real engine loop: drive vLLM one ``step()`` at a time.

Kata 01-01 traced a request through ``mini_vllm``. Here the same trace comes out of a real vLLM
engine: add one request, pump ``step()``, and record the request's counters after every step.
First predict the trace on paper; the tests hold the engine to your prediction.
"""

from __future__ import annotations

from typing import Any

from katas.phase01.real_engine_loop.scaffold import StepRecord  # noqa: F401


def predict_trace(prompt_len: int, max_tokens: int) -> list[StepRecord]:
    """The trace of one greedy request that ignores EOS and whose prompt fits the token budget.

    One ``StepRecord`` per ``step()``. The first step computes the whole prompt and samples the
    first token; every later step computes the token sampled before and samples one more. The
    request finishes, with reason ``"length"``, on the step that samples its ``max_tokens``-th
    token; earlier records have ``finish_reason=None``.
    """
    raise NotImplementedError("predict_trace: after step k, computed = P + k - 1, tokens = P + k")


def trace_engine_loop(
    engine: Any, scheduler: Any, prompt: str, sampling_params: Any
) -> list[StepRecord]:
    """Run one request on a real vLLM engine step by step and record it after every step.

    ``engine`` is ``llm.llm_engine`` (``add_request(request_id, prompt, params)``,
    ``step() -> list[RequestOutput]``, ``has_unfinished_requests()``); ``scheduler`` is the
    engine core's scheduler, whose ``requests`` dict holds every live ``Request`` (the key is
    your id plus a suffix vLLM adds, so find the one that was not there before). Keep a reference
    to that ``Request``: after each step read its ``num_computed_tokens`` and ``num_tokens``, and
    take ``outputs[0].finish_reason`` from the step's ``RequestOutput`` once it is ``finished``.
    Step until the engine has no unfinished request.
    """
    raise NotImplementedError("trace_engine_loop: add_request, step until done, record each step")
