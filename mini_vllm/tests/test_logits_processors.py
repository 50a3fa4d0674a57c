"""Phase 09 logits processing in mini_vllm's sampler: each knob against a hand oracle, then
through the engine on the tiny Llama. Every knob defaults to off (the older tests pin that)."""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.request import Request
from mini_vllm.sample import (
    apply_bad_words,
    apply_logit_bias,
    apply_min_p,
    apply_min_tokens,
    apply_penalties,
)
from mini_vllm.sampler import Sampler
from mini_vllm.tokenizer import EOS_TOKEN_ID
from pytest_vllm_katas import assert_close, expect_raises

# -- the ops, against hand oracles ------------------------------------------------------------


def test_penalties_follow_upstream_formulas_and_token_sets() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    before = logits.copy()
    got = apply_penalties(logits, [0], [1, 1, 2], repetition_penalty=2.0,
                          frequency_penalty=0.5, presence_penalty=0.1)
    # token 0 (prompt only): 2 / 2; token 1 (output x2): -1 * 2 - 0.5 * 2 - 0.1;
    # token 2 (output x1): 0.5 / 2 - 0.5 - 0.1; token 3 (never seen): unchanged.
    assert_close(got, [1.0, -3.1, -0.35, 3.0], cause="arithmetic", what="penalised logits")
    assert np.array_equal(logits, before), "the input row must not be mutated"


def test_repetition_penalty_counts_a_token_once_however_often_it_occurred() -> None:
    got = apply_penalties(np.array([4.0, 4.0]), [0, 0, 0], [0, 1], repetition_penalty=2.0)
    assert_close(got, [2.0, 2.0], cause="arithmetic",
                 what="one division per distinct token")


def test_bad_words_ban_the_completing_token_of_a_matching_prefix() -> None:
    words = [[3], [7, 9], [5, 7, 1], [6, 2], [1, 2, 3, 4]]
    got = apply_bad_words(np.zeros(10), words, [5, 7])
    assert sorted(np.flatnonzero(np.isneginf(got)).tolist()) == [1, 3, 9]


def test_min_tokens_masks_stop_tokens_only_while_too_few_outputs() -> None:
    assert np.isneginf(apply_min_tokens(np.zeros(4), 2, 1, [3])[3])
    assert np.all(np.isfinite(apply_min_tokens(np.zeros(4), 2, 2, [3])))


def test_logit_bias_adds_per_token() -> None:
    assert_close(apply_logit_bias(np.array([1.0, 2.0, 3.0]), {0: 5.0, 2: -1.5}), [6.0, 2.0, 1.5],
                 cause="arithmetic", what="biased logits")


def test_min_p_is_relative_to_the_most_likely_token() -> None:
    kept = np.isfinite(apply_min_p(np.log([0.5, 0.3, 0.15, 0.05]), 0.5))
    assert kept.tolist() == [True, True, False, False]  # threshold 0.5 * 0.5 = 0.25
    assert np.isfinite(apply_min_p(np.log([0.3, 0.3, 0.2, 0.2]), 0.1)).all()  # flat: all stay
    assert np.isfinite(apply_min_p(np.log([0.9, 0.05, 0.05]), 0.1)).tolist() == [
        True, False, False]  # confident: the same min_p keeps one


# -- the sampler's order ------------------------------------------------------------------------


def _request(prompt: list[int], output: list[int], **knobs: object) -> Request:
    request = Request(prompt, SamplingParams(max_tokens=8, **knobs))
    request.output_token_ids = list(output)
    return request


def test_greedy_still_applies_penalties_and_bias_but_not_min_p() -> None:
    logits = np.array([3.0, 2.0, 0.0])
    request = _request([0], [], temperature=0.0, repetition_penalty=2.0)
    assert Sampler().sample(logits, request.sampling_params, request=request) == 1
    request = _request([5], [], temperature=0.0, logit_bias={2: 10.0}, min_p=1.0)
    assert Sampler().sample(logits, request.sampling_params, request=request) == 2


def test_min_p_runs_before_top_p_as_in_vllm() -> None:
    # probs (0.5, 0.3, 0.2): min_p 0.5 keeps {0, 1} -> renormalised (0.625, 0.375); top_p 0.6 then
    # keeps {0}. The other order (top-p first) would keep {0, 1}.
    logits = np.log([0.5, 0.3, 0.2])
    params = SamplingParams(temperature=1.0, min_p=0.5, top_p=0.6)
    draws = {Sampler().sample(logits, SamplingParams(**{**params.__dict__, "seed": s}))
             for s in range(20)}
    assert draws == {0}


def test_default_knobs_change_nothing_and_need_no_request() -> None:
    logits = np.random.default_rng(0).normal(size=257)
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, seed=5)
    request = _request([1, 2], [3], temperature=0.7, top_k=20, top_p=0.9, seed=5)
    assert Sampler().sample(logits, params) == Sampler().sample(logits, params, request=request)


def test_token_reading_knobs_without_a_request_are_refused() -> None:
    with expect_raises(ValueError, "the penalties need the request's tokens", match="request"):
        Sampler().sample(np.zeros(4), SamplingParams(presence_penalty=1.0))


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
        ({"bad_words": [[]]}, r"bad_words\[0\]"),
        ({"bad_words": [[1, -2]]}, r"bad_words\[0\]"),
        ({"min_tokens": 17}, "min_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"logit_bias": {1: float("inf")}}, "logit_bias"),
        ({"logit_bias": [(1, 2.0)]}, "logit_bias"),
    ],
)
def test_bad_knobs_are_refused_with_their_name(knobs: dict, field: str) -> None:
    with expect_raises(ValueError, f"{knobs} is out of bounds", match=field):
        SamplingParams(max_tokens=16, **knobs)


def test_out_of_vocab_ids_are_refused_when_the_request_is_made() -> None:
    with expect_raises(ValueError, "token 257 is outside the vocab", match="logit_bias"):
        Request([1], SamplingParams(logit_bias={257: 1.0}))
    with expect_raises(ValueError, "token 300 is outside the vocab", match="bad_words"):
        Request([1], SamplingParams(bad_words=[[3, 300]]))


def test_logit_bias_is_clamped_like_upstream() -> None:
    assert SamplingParams(logit_bias={3: 1e6}).logit_bias == {3: 100.0}


# -- through the engine on the tiny Llama ------------------------------------------------------
# Stock greedy on "ab" gives 184 then 84 forever; EOS never wins on its own.


def _generate(model, prompt: str = "ab", **knobs: object):  # type: ignore[no-untyped-def]
    engine = LLMEngine(model=model, block_size=4, num_blocks=64)
    knobs = {"max_tokens": 10, "temperature": 0.0, **knobs}
    return engine.generate([prompt], SamplingParams(**knobs))[0]


def test_engine_stock_greedy_repeats(tiny_llama) -> None:
    assert _generate(tiny_llama).output_token_ids == [184] + [84] * 9


def test_engine_banned_token_never_appears(tiny_llama) -> None:
    for knobs in ({}, {"temperature": 1.0, "seed": 3}, {"temperature": 0.8}):
        out = _generate(tiny_llama, bad_words=[[84]], **knobs).output_token_ids
        assert 84 not in out, f"{knobs}: banned token 84 was generated: {out}"


def test_engine_bad_word_sequence_bans_only_after_its_prefix(tiny_llama) -> None:
    out = _generate(tiny_llama, bad_words=[[184, 84]]).output_token_ids
    assert out[0] == 184 and out[1] != 84, out


def test_engine_min_tokens_delays_eos(tiny_llama) -> None:
    forced = {EOS_TOKEN_ID: 100.0}
    first = _generate(tiny_llama, logit_bias=forced)
    assert first.output_token_ids == [EOS_TOKEN_ID] and first.finish_reason == "stop"
    delayed = _generate(tiny_llama, logit_bias=forced, min_tokens=4)
    assert len(delayed.output_token_ids) == 5 and delayed.finish_reason == "stop"
    assert EOS_TOKEN_ID not in delayed.output_token_ids[:4]


def test_engine_logit_bias_forces_a_token(tiny_llama) -> None:
    assert _generate(tiny_llama, logit_bias={65: 100.0}).output_token_ids == [65] * 10


@pytest.mark.parametrize("knob", ["repetition_penalty", "presence_penalty", "frequency_penalty"])
def test_engine_penalties_break_the_greedy_repeat(tiny_llama, knob: str) -> None:
    value = 1.5 if knob == "repetition_penalty" else 2.0
    out = _generate(tiny_llama, **{knob: value}).output_token_ids
    assert out[:2] == [184, 84] and out[2] != 84, f"{knob}={value}: {out}"


def test_engine_passes_the_request_only_to_samplers_that_take_it(tiny_llama) -> None:
    seen: list[list[int]] = []

    class Spy:
        def sample(self, logits, params, request=None):  # type: ignore[no-untyped-def]
            seen.append(list(request.output_token_ids))
            return Sampler().sample(logits, params, request=request)

    engine = LLMEngine(model=tiny_llama, block_size=4, num_blocks=64, sampler=Spy())
    params = SamplingParams(max_tokens=3, temperature=0.0, repetition_penalty=1.5)
    out = engine.generate(["ab"], params)[0].output_token_ids
    assert seen == [[], out[:1], out[:2]]
    assert out == _generate(tiny_llama, max_tokens=3, repetition_penalty=1.5).output_token_ids

    def two_args(logits, params):  # type: ignore[no-untyped-def]
        return int(np.argmax(logits))

    engine = LLMEngine(model=tiny_llama, block_size=4, num_blocks=64, sampler=two_args)
    assert engine.generate(["ab"], SamplingParams(max_tokens=3, temperature=0.0))[
        0].output_token_ids == [184, 84, 84]


def test_numpy_knob_values_become_plain_values() -> None:
    params = SamplingParams(min_p=np.float64(0.1), min_tokens=np.int64(2),
                            bad_words=[np.array([3, 4])], logit_bias={np.int64(5): np.float32(1)})
    assert type(params.min_p) is float and type(params.min_tokens) is int
    assert params.bad_words == [[3, 4]] and type(params.bad_words[0][0]) is int
    assert params.logit_bias == {5: 1.0} and type(next(iter(params.logit_bias))) is int
