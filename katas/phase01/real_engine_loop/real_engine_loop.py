"""Kata 01-02 — read the real engine loop: drive vLLM one ``step()`` at a time.

Kata 01-01 traced a request through ``mini_vllm``. Here the same trace comes out of a real vLLM
engine: add one request, pump ``step()``, and record the request's counters after every step.
First predict the trace on paper; the tests hold the engine to your prediction.
"""

from __future__ import annotations

from typing import Any

from katas.phase01.real_engine_loop.scaffold import StepRecord  # noqa: F401


def predict_trace(prompt_len: int, max_tokens: int) -> list[StepRecord]:
    """Predict, on paper, the trace of one request through the engine loop.

    The request has ``prompt_len`` tokens, which fit one step's token budget; it is greedy,
    ignores EOS and asks for ``max_tokens`` output tokens. Return one ``StepRecord`` per
    ``step()`` the engine takes for it, in order: ``num_computed_tokens`` and ``num_tokens``
    as they stand right after that step, and ``finish_reason`` — ``None`` while the request
    runs, ``"length"`` on the step that finishes it.

    Example: kata 01-01's ``"hello"`` (5 tokens) with ``max_tokens=4`` was
    ``(5, 6)``, ``(6, 7)``, ``(7, 8)``, ``(8, 9)`` with ``"length"`` on the last.
    """
    raise NotImplementedError("predict_trace: the engine's counters after each step, on paper")


def trace_engine_loop(
    engine: Any, scheduler: Any, prompt: str, sampling_params: Any
) -> list[StepRecord]:
    """Run one request on a real vLLM engine step by step and record it after every step.

    ``engine`` is ``llm.llm_engine`` (``add_request(request_id, prompt, params)``,
    ``step() -> list[RequestOutput]``, ``has_unfinished_requests()``); ``scheduler`` is the
    engine core's scheduler, whose ``requests`` dict holds every live core ``Request`` (the
    key is your id plus a suffix vLLM adds, so yours is the one that was not there before; the
    object stays readable after the scheduler lets go of it).

    Returns one ``StepRecord`` per ``step()`` until the engine has no unfinished request: the
    core request's ``num_computed_tokens`` and ``num_tokens`` after that step, and the
    ``finish_reason`` of the step's ``RequestOutput`` for it once it is ``finished`` (``None``
    before). The engine is left with nothing unfinished.
    """
    raise NotImplementedError("trace_engine_loop: drive the real engine by hand, record each step")
