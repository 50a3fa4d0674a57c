"""Bad requests are refused up front: one precise ValueError at add_request, nothing queued.

A refusal must leave no trace: the requests already in flight finish with exactly the tokens of a
clean run, and no request id is used up.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mini_vllm import VOCAB_SIZE, LLMEngine, Request, SamplingParams, Scheduler
from mini_vllm.kv_cache import KVCacheManager
from mini_vllm.tests.builders import greedy, output_ids, run_all
from pytest_vllm_katas.invariants import assert_same_outputs

ENGINE_KWARGS = {"num_blocks": 8, "block_size": 4}  # 7 usable blocks = 28 KV slots
IN_FLIGHT = ["hello", "goodbye"]
TOKENS = f"[0, {VOCAB_SIZE})"
PROMPT_FORMS = f"a non-empty str or a non-empty sequence of int token ids in {TOKENS}"
TEMPERATURES = f"0 (greedy) or a finite number >= {sys.float_info.min!r}"


def request_number(request_id: str) -> int:
    return int(request_id.removeprefix("req-"))


def set_after_construction(params: SamplingParams, **fields: object) -> SamplingParams:
    """``params`` with ``fields`` assigned directly, past the construction-time checks."""
    for name, value in fields.items():
        setattr(params, name, value)
    return params


def assert_refused_cleanly(refuse: Callable[[LLMEngine], object], message: str) -> None:
    """``refuse(engine)``, called while two good requests are mid-flight, must raise exactly
    ``message``, queue nothing, use up no request id, and leave the good requests' tokens alone."""
    expected = output_ids(LLMEngine(**ENGINE_KWARGS), IN_FLIGHT, greedy(4))
    engine = LLMEngine(**ENGINE_KWARGS)
    ids = [engine.add_request(p, greedy(4)) for p in IN_FLIGHT]
    engine.step()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        refuse(engine)
    assert engine.scheduler.get_num_unfinished_requests() == 2, "a refused request was queued"
    next_id = LLMEngine(**ENGINE_KWARGS).add_request("x", greedy(1))
    assert request_number(next_id) == request_number(ids[-1]) + 1, "a refusal used up an id"
    done = run_all(engine)
    assert_same_outputs(expected, [done[i] for i in ids])


# -- sampling parameters -------------------------------------------------------------------------

BAD_SAMPLING_PARAMS = {
    "seed_negative": ("seed", -1, "seed must be a non-negative int or None, got -1"),
    "seed_str": ("seed", "x", "seed must be a non-negative int or None, got 'x'"),
    "seed_float": ("seed", 3.0, "seed must be a non-negative int or None, got 3.0"),
    "seed_bool": ("seed", True, "seed must be a non-negative int or None, got True"),
    "top_k_float": ("top_k", 2.5, "top_k must be an int >= 0 (0 disables it), got 2.5"),
    "top_k_negative": ("top_k", -1, "top_k must be an int >= 0 (0 disables it), got -1"),
    "top_k_bool": ("top_k", True, "top_k must be an int >= 0 (0 disables it), got True"),
    "max_tokens_none": ("max_tokens", None, "max_tokens must be an int >= 1, got None"),
    "max_tokens_zero": ("max_tokens", 0, "max_tokens must be an int >= 1, got 0"),
    "max_tokens_float": ("max_tokens", 3.0, "max_tokens must be an int >= 1, got 3.0"),
    "max_tokens_bool": ("max_tokens", True, "max_tokens must be an int >= 1, got True"),
    "temperature_negative": (
        "temperature", -0.1, f"temperature must be {TEMPERATURES}, got -0.1"
    ),
    "temperature_nan": ("temperature", math.nan, f"temperature must be {TEMPERATURES}, got nan"),
    "temperature_inf": ("temperature", math.inf, f"temperature must be {TEMPERATURES}, got inf"),
    "temperature_subnormal": (
        "temperature", 1e-310, f"temperature must be {TEMPERATURES}, got 1e-310"
    ),
    "temperature_str": ("temperature", "0.5", f"temperature must be {TEMPERATURES}, got '0.5'"),
    "temperature_bool": ("temperature", True, f"temperature must be {TEMPERATURES}, got True"),
    "top_p_zero": ("top_p", 0.0, "top_p must be a number in (0, 1] (1 disables it), got 0.0"),
    "top_p_above_one": ("top_p", 1.5, "top_p must be a number in (0, 1] (1 disables it), got 1.5"),
    "top_p_nan": ("top_p", math.nan, "top_p must be a number in (0, 1] (1 disables it), got nan"),
    "top_p_none": ("top_p", None, "top_p must be a number in (0, 1] (1 disables it), got None"),
    "ignore_eos_int": ("ignore_eos", 1, "ignore_eos must be a bool, got 1"),
}


@pytest.mark.parametrize(
    ("field", "value", "message"), BAD_SAMPLING_PARAMS.values(), ids=BAD_SAMPLING_PARAMS.keys()
)
def test_bad_sampling_param_is_refused_at_construction_with_one_precise_message(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"), BAD_SAMPLING_PARAMS.values(), ids=BAD_SAMPLING_PARAMS.keys()
)
def test_sampling_param_set_bad_after_construction_is_refused_by_add_request(
    field: str, value: object, message: str
) -> None:
    params = set_after_construction(greedy(4), **{field: value})
    assert_refused_cleanly(lambda engine: engine.add_request("hi", params), message)


def test_numpy_and_int_sampling_values_are_accepted_as_plain_values_with_the_same_tokens() -> None:
    numpy_params = SamplingParams(
        max_tokens=np.int64(6), temperature=np.float64(0.8), top_k=np.int32(50),
        top_p=np.float64(0.9), seed=np.int64(3), ignore_eos=np.True_,
    )
    plain_params = SamplingParams(
        max_tokens=6, temperature=0.8, top_k=50, top_p=0.9, seed=3, ignore_eos=True
    )
    assert numpy_params == plain_params
    # The six course fields (later phases append fields with their own defaults).
    course_fields = list(vars(numpy_params).values())[:6]
    assert [type(v) for v in course_fields] == [int, float, int, float, int, bool]
    assert output_ids(LLMEngine(), ["hello"], numpy_params) == output_ids(
        LLMEngine(), ["hello"], plain_params
    )
    assert SamplingParams(temperature=0).temperature == 0.0  # greedy, written as an int


# -- prompts and request fields ------------------------------------------------------------------

BAD_PROMPTS = {
    "empty_str": ("", f"prompt must be {PROMPT_FORMS}, got ''"),
    "empty_list": ([], f"prompt must be {PROMPT_FORMS}, got []"),
    "not_a_sequence": (5, f"prompt must be {PROMPT_FORMS}, got 5"),
    "none": (None, f"prompt must be {PROMPT_FORMS}, got None"),
    "integral_float_token": ([1, 3.0], f"prompt[1] must be an int token id in {TOKENS}, got 3.0"),
    "bool_token": ([True], f"prompt[0] must be an int token id in {TOKENS}, got True"),
    "negative_token": ([-1], f"prompt[0] must be an int token id in {TOKENS}, got -1"),
    "token_out_of_vocab": ([1, 257], f"prompt[1] must be an int token id in {TOKENS}, got 257"),
    "str_token": (["a"], f"prompt[0] must be an int token id in {TOKENS}, got 'a'"),
    "numpy_float_tokens": (
        np.array([1.0, 2.0]),
        f"prompt[0] must be an int token id in {TOKENS}, got {np.float64(1.0)!r}",
    ),
}


@pytest.mark.parametrize(("prompt", "message"), BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
def test_bad_prompt_is_refused_by_add_request_and_others_are_unaffected(
    prompt: object, message: str
) -> None:
    assert_refused_cleanly(lambda engine: engine.add_request(prompt, greedy(4)), message)


def test_request_that_never_fits_the_pool_is_refused_by_add_request() -> None:
    # 30 prompt tokens + 4 outputs - 1 (the last output is never fed back) = 33 slots > 28.
    message = (
        "request needs 33 KV slots (9 blocks of 4) but the pool only ever has 28 (7 usable "
        "blocks): shorten the prompt or max_tokens"
    )
    assert_refused_cleanly(lambda engine: engine.add_request("x" * 30, greedy(4)), message)


def test_sampling_params_of_the_wrong_type_are_refused_by_add_request() -> None:
    message = "sampling_params must be a SamplingParams or None, got {'max_tokens': 4}"
    assert_refused_cleanly(
        lambda engine: engine.add_request("hi", {"max_tokens": 4}),  # type: ignore[arg-type]
        message,
    )


def test_non_str_request_id_is_refused_by_add_request() -> None:
    message = "request_id must be a non-empty str or None, got 5"
    assert_refused_cleanly(
        lambda engine: engine.add_request("hi", greedy(2), request_id=5),  # type: ignore[arg-type]
        message,
    )


def test_numpy_integer_token_ids_are_accepted_as_plain_ints() -> None:
    request = Request(np.array([104, 105], dtype=np.int64))
    assert request.prompt_token_ids == [104, 105]
    assert all(type(t) is int for t in request.prompt_token_ids)
    from_numpy = LLMEngine().generate([np.arange(104, 106)], greedy(4))  # type: ignore[list-item]
    assert from_numpy[0].output_token_ids == output_ids(LLMEngine(), ["hi"], greedy(4))[0]


BAD_REQUEST_FIELDS = {
    "text_prompt": (
        {"prompt_token_ids": "abc"},
        f"prompt_token_ids must be a non-empty sequence of int token ids in {TOKENS}, got 'abc'",
    ),
    "request_id_empty": (
        {"request_id": ""}, "request_id must be a non-empty str or None, got ''"
    ),
    "eos_out_of_vocab": (
        {"eos_token_id": 257}, f"eos_token_id must be an int token id in {TOKENS}, got 257"
    ),
    "eos_float": (
        {"eos_token_id": 2.0}, f"eos_token_id must be an int token id in {TOKENS}, got 2.0"
    ),
    "sampling_params_dict": (
        {"sampling_params": {"seed": 1}},
        "sampling_params must be a SamplingParams or None, got {'seed': 1}",
    ),
}


@pytest.mark.parametrize(
    ("kwargs", "message"), BAD_REQUEST_FIELDS.values(), ids=BAD_REQUEST_FIELDS.keys()
)
def test_bad_request_field_is_refused_by_the_request_constructor(
    kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"prompt_token_ids": [1, 2], **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Request(**arguments)  # type: ignore[arg-type]


# -- request ids ---------------------------------------------------------------------------------


def test_duplicate_of_a_running_request_id_is_refused_naming_the_id() -> None:
    engine = LLMEngine()
    engine.add_request("hello", greedy(2), request_id="chat-1")
    engine.step()
    message = (
        "request_id must be unique among unfinished requests, got 'chat-1' (already waiting or "
        "running; reuse an id only after that request finishes)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        engine.add_request("other", greedy(2), request_id="chat-1")
    assert engine.scheduler.get_num_unfinished_requests() == 1
    assert run_all(engine) == {"chat-1": output_ids(LLMEngine(), ["hello"], greedy(2))[0]}


def test_duplicate_of_a_waiting_request_id_is_refused() -> None:
    engine = LLMEngine()
    engine.add_request("hello", greedy(2), request_id="a")
    with pytest.raises(ValueError, match=r"unique among unfinished requests, got 'a'"):
        engine.add_request("hello", greedy(2), request_id="a")
    assert engine.scheduler.get_num_unfinished_requests() == 1


def test_request_id_can_be_reused_once_the_earlier_request_finished() -> None:
    engine = LLMEngine()
    engine.add_request("hello", greedy(3), request_id="a")
    first = run_all(engine)
    engine.add_request("hello", greedy(3), request_id="a")
    assert run_all(engine) == first == {"a": output_ids(LLMEngine(), ["hello"], greedy(3))[0]}


def test_request_id_can_be_reused_once_the_earlier_request_was_aborted() -> None:
    engine = LLMEngine()
    engine.add_request("hello", greedy(3), request_id="a")
    engine.step()
    engine.abort_request("a")
    assert engine.add_request("goodbye", greedy(3), request_id="a") == "a"
    assert run_all(engine) == {"a": output_ids(LLMEngine(), ["goodbye"], greedy(3))[0]}


def test_scheduler_refuses_a_second_live_request_with_the_same_id() -> None:
    scheduler = Scheduler(KVCacheManager(num_blocks=16, block_size=4))
    scheduler.add_request(Request([1, 2], greedy(2), request_id="x"))
    with pytest.raises(ValueError, match=r"unique among unfinished requests, got 'x'"):
        scheduler.add_request(Request([3, 4], greedy(2), request_id="x"))
    assert [r.request_id for r in scheduler.waiting] == ["x"]


# -- generate() is all or nothing ----------------------------------------------------------------

THIRD_PROMPT_IS_BAD = {
    "bad_token": (
        ["a", "b", [1, 3.0]], [greedy(2)] * 3,
        f"prompts[2]: prompt[1] must be an int token id in {TOKENS}, got 3.0",
    ),
    "empty": (
        ["a", "b", ""], [greedy(2)] * 3, f"prompts[2]: prompt must be {PROMPT_FORMS}, got ''"
    ),
    "never_fits_pool": (
        ["a", "b", "x" * 30], [greedy(2)] * 3,
        "prompts[2]: request needs 31 KV slots (8 blocks of 4) but the pool only ever has 28 "
        "(7 usable blocks): shorten the prompt or max_tokens",
    ),
    "params_set_bad_after_construction": (
        ["a", "b", "c"], [greedy(2), greedy(2), set_after_construction(greedy(2), seed=-1)],
        "prompts[2]: seed must be a non-negative int or None, got -1",
    ),
    "params_not_sampling_params": (
        ["a", "b", "c"], [greedy(2), greedy(2), "greedy"],
        "prompts[2]: sampling_params must be a SamplingParams or None, got 'greedy'",
    ),
}


@pytest.mark.parametrize(
    ("prompts", "params", "message"), THIRD_PROMPT_IS_BAD.values(), ids=THIRD_PROMPT_IS_BAD.keys()
)
def test_generate_queues_nothing_when_the_third_of_three_prompts_is_bad(
    prompts: list[object], params: list[object], message: str
) -> None:
    def generate(engine: LLMEngine) -> object:
        return engine.generate(prompts, params)  # type: ignore[arg-type]

    assert_refused_cleanly(generate, message)


def test_generate_undoes_its_queued_prompts_when_a_drawn_id_is_already_taken() -> None:
    # Only a collision with an explicit id can fail after vetting: the id is drawn at queue time.
    engine = LLMEngine()
    rid = engine.add_request("hello", greedy(2))
    engine.add_request("taken", greedy(2), request_id=f"req-{request_number(rid) + 2}")
    with pytest.raises(ValueError, match=r"unique among unfinished requests"):
        engine.generate(["a", "b"], greedy(2))  # draws req-N+1 (queued, then undone), req-N+2
    assert sorted(r.request_id for r in engine.scheduler.waiting) == sorted(
        [rid, f"req-{request_number(rid) + 2}"]
    )


def test_generate_refuses_sampling_params_that_are_neither_one_nor_a_list() -> None:
    with pytest.raises(
        ValueError, match=r"sampling_params must be a SamplingParams, a list with one per prompt"
    ):
        LLMEngine().generate(["a"], {"max_tokens": 2})  # type: ignore[arg-type]


# -- property: bad requests never disturb good ones ---------------------------------------------

BAD_FIELD_VALUES: dict[str, st.SearchStrategy[object]] = {
    "max_tokens": st.integers(max_value=0) | st.floats() | st.none() | st.booleans(),
    "temperature": (
        st.floats(max_value=-1e-12)
        | st.floats(min_value=0.0, max_value=sys.float_info.min, exclude_min=True,
                    exclude_max=True, allow_subnormal=True)
        | st.sampled_from([math.nan, math.inf, -math.inf])
        | st.text(max_size=2)
        | st.booleans()
        | st.none()
    ),
    "top_k": st.integers(max_value=-1) | st.floats() | st.booleans() | st.text(max_size=2),
    "top_p": (
        st.floats(max_value=0.0)
        | st.floats(min_value=1.0, exclude_min=True)
        | st.just(math.nan)
        | st.booleans()
        | st.none()
    ),
    "seed": st.integers(max_value=-1) | st.floats() | st.text(max_size=2) | st.booleans(),
    "ignore_eos": st.integers() | st.text(max_size=2) | st.none(),
}
BAD_TOKENS = (
    st.integers(max_value=-1)
    | st.integers(min_value=VOCAB_SIZE)
    | st.floats()
    | st.booleans()
    | st.text(max_size=1)
)
GOOD_PROMPTS = st.lists(st.integers(0, 255), min_size=1, max_size=6)
GOOD_PARAMS = st.builds(
    SamplingParams,
    max_tokens=st.integers(1, 4),
    temperature=st.sampled_from([0.0, 0.8]),
    top_k=st.sampled_from([0, 5]),
    seed=st.integers(0, 3),
    ignore_eos=st.booleans(),
)
BAD_KINDS = ["param_at_construction", "param_set_later", "bad_token", "empty", "too_long",
             "duplicate_id"]


def add_bad_request(data: st.DataObject, engine: LLMEngine) -> None:
    """Draw one bad request and check that add_request refuses it with a message naming it."""
    kind = data.draw(st.sampled_from(BAD_KINDS), label="bad kind")
    field = data.draw(st.sampled_from(sorted(BAD_FIELD_VALUES)), label="field")
    value = data.draw(BAD_FIELD_VALUES[field], label="bad value")
    prompt = data.draw(GOOD_PROMPTS, label="prompt")
    if kind == "param_at_construction":
        with pytest.raises(ValueError, match=f"^{field} must be"):
            engine.add_request(prompt, SamplingParams(**{field: value}))  # type: ignore[arg-type]
    elif kind == "param_set_later":
        params = set_after_construction(data.draw(GOOD_PARAMS, label="params"), **{field: value})
        with pytest.raises(ValueError, match=f"^{field} must be"):
            engine.add_request(prompt, params)
    elif kind == "bad_token":
        index = data.draw(st.integers(0, len(prompt)), label="index")
        prompt.insert(index, data.draw(BAD_TOKENS, label="bad token"))
        with pytest.raises(ValueError, match=rf"^prompt\[{index}\] must be an int token id"):
            engine.add_request(prompt, greedy(2))
    elif kind == "empty":
        with pytest.raises(ValueError, match=r"^prompt must be a non-empty str"):
            engine.add_request(data.draw(st.sampled_from(["", []])), greedy(2))
    elif kind == "too_long":  # 29+ tokens + 1 output - 1 > 28 usable slots
        long_prompt = "x" * data.draw(st.integers(29, 40), label="length")
        with pytest.raises(ValueError, match=r"^request needs \d+ KV slots"):
            engine.add_request(long_prompt, greedy(1))
    else:
        live = [r.request_id for r in (*engine.scheduler.running, *engine.scheduler.waiting)]
        if not live:
            return
        rid = data.draw(st.sampled_from(live), label="duplicate id")
        with pytest.raises(ValueError, match=re.escape(f"got {rid!r}")):
            engine.add_request(prompt, greedy(2), request_id=rid)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_bad_requests_mixed_with_good_ones_never_change_the_good_ones_tokens(
    data: st.DataObject,
) -> None:
    kwargs = {**ENGINE_KWARGS, "max_num_batched_tokens": 8}  # chunking and preemption happen
    engine = LLMEngine(**kwargs)
    good: list[tuple[str, list[int], SamplingParams]] = []
    done: dict[str, list[int]] = {}
    for index in range(data.draw(st.integers(1, 10), label="requests")):
        if data.draw(st.booleans(), label="good?"):
            prompt, params = data.draw(GOOD_PROMPTS), data.draw(GOOD_PARAMS)
            explicit = data.draw(st.booleans(), label="explicit id?")
            rid = engine.add_request(
                prompt, params, request_id=f"good-{index}" if explicit else None
            )
            good.append((rid, prompt, params))
        else:
            queued = engine.scheduler.get_num_unfinished_requests()
            add_bad_request(data, engine)
            assert engine.scheduler.get_num_unfinished_requests() == queued, "bad one was queued"
        for _ in range(data.draw(st.integers(0, 2), label="steps")):
            done.update({r.request_id: r.output_token_ids for r in engine.step()})
    done.update(run_all(engine))
    unfinished = [rid for rid, _, _ in good if rid not in done]
    assert not unfinished, f"good requests {unfinished} never finished"

    alone = LLMEngine(**kwargs).generate([p for _, p, _ in good], [sp for _, _, sp in good])
    assert_same_outputs(
        {rid: o.output_token_ids for (rid, _, _), o in zip(good, alone, strict=True)},
        {rid: done[rid] for rid, _, _ in good},
        labels=("alone", "mixed with bad requests"),
    )
