"""Spec for kata 09-01: the sampling ops, the logits-processor pipeline, the course's ordered
sampler, and that sampler driving mini_vllm's engine on the tiny Llama."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.sample import apply_min_p as vllm_min_p
from mini_vllm.sampler import Sampler
from mini_vllm.sampler import apply_top_k as vllm_top_k
from mini_vllm.sampler import apply_top_p as vllm_top_p
from mini_vllm.sampler import softmax as vllm_softmax
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok


def _logits_for(probs: list[float]) -> np.ndarray:
    """Logits whose softmax is proportional to ``probs``."""
    return np.log(np.array(probs, dtype=np.float64))


def _row(got: object, size: int, what: str) -> np.ndarray:
    """``got`` as a 1-D float array of ``size`` entries, checked before anything indexes it."""
    arr = np.asarray(got)
    assert arr.shape == (size,) and np.issubdtype(arr.dtype, np.floating), (
        f"{what} must return a 1-D float array of {size} entries, one per token; got "
        f"{type(got).__name__} with shape {arr.shape} and dtype {arr.dtype}"
    )
    return arr


def _kept(masked: object, size: int, what: str) -> list[int]:
    """Indices of the tokens a mask left finite."""
    return [int(i) for i in np.flatnonzero(np.isfinite(_row(masked, size, what)))]


def _token(got: object, vocab: int, what: str = "sample") -> int:
    assert isinstance(got, int) and not isinstance(got, bool), (
        f"{what} must return a Python int token id (wrap numpy results in int()); "
        f"got {type(got).__name__} {got!r:.40}"
    )
    assert 0 <= got < vocab, f"{what} returned {got}, not a token id in range({vocab})"
    return got


def _params(**knobs: Any) -> SamplingParams:
    return SamplingParams(**{"max_tokens": 8, **knobs})


def _ban(token: int):  # type: ignore[no-untyped-def]
    """A processor that makes ``token`` unsamplable, as a grammar mask would."""

    def processor(logits: np.ndarray, ctx: dict) -> np.ndarray:
        out = np.array(logits, dtype=np.float64)
        out[token] = -np.inf
        return out

    return processor


# --- the ops ----------------------------------------------------------------------------------


def test_softmax_is_stable_and_masks_to_exact_zero(impl) -> None:
    probs = _row(impl.softmax(np.array([1000.0, 1001.0, -np.inf, 1002.0])), 4, "softmax")
    expected = np.exp([-2.0, -1.0, -np.inf, 0.0]) / np.exp([-2.0, -1.0, 0.0]).sum()
    assert np.all(np.isfinite(probs)), f"softmax overflowed on logits near 1000: {probs}"
    assert probs[2] == 0.0, f"a -inf logit must get probability exactly 0, got {probs[2]}"
    assert_close(probs, expected, cause="float64-reordered",
                 what="softmax of [1000, 1001, -inf, 1002]")


def test_temperature_divides_the_logits(impl) -> None:
    logits = np.array([2.0, -1.0, 0.5])
    assert_close(_row(impl.apply_temperature(logits, 2.0), 3, "apply_temperature"),
                 [1.0, -0.5, 0.25], cause="arithmetic", what="logits / 2")
    assert_close(_row(impl.apply_temperature(logits, 0.5), 3, "apply_temperature"),
                 [4.0, -2.0, 1.0], cause="arithmetic", what="logits / 0.5 (sharper)")
    for bad in (0.0, -1.0):
        with expect_raises(ValueError, f"temperature {bad} cannot scale logits (0 is greedy, "
                           "which never reaches apply_temperature)", match="temperature"):
            impl.apply_temperature(logits, bad)


def test_top_k_of_one_keeps_only_the_argmax(impl) -> None:
    logits = np.array([1.5, -0.3, 3.2, 0.8, 2.6])
    assert _kept(impl.apply_top_k(logits, 1), 5, "apply_top_k") == [2], (
        "top_k = 1 must leave exactly the argmax (token 2) finite"
    )
    assert _kept(impl.apply_top_k(logits, 3), 5, "apply_top_k") == [0, 2, 4]
    for off in (0, 5, 9):
        assert _kept(impl.apply_top_k(logits, off), 5, "apply_top_k") == [0, 1, 2, 3, 4], (
            f"top_k = {off} (<= 0 or >= vocab 5) disables top-k: nothing may be masked"
        )


def test_top_k_keeps_ties_at_the_boundary(impl) -> None:
    kept = _kept(impl.apply_top_k(np.array([3.0, 2.0, 2.0, 0.0]), 2), 4, "apply_top_k")
    assert kept == [0, 1, 2], (
        f"top_k = 2 over [3, 2, 2, 0] keeps every logit >= the 2nd largest (2.0), ties "
        f"included, as vLLM does: expected [0, 1, 2], kept {kept}"
    )


def test_top_p_keeps_the_token_that_crosses_p(impl) -> None:
    logits = _logits_for([0.4, 0.4, 0.2])
    for p, expected in ((0.5, [0, 1]), (0.3, [0]), (0.9, [0, 1, 2]), (1.0, [0, 1, 2])):
        kept = _kept(impl.apply_top_p(logits, p), 3, "apply_top_p")
        assert kept == expected, (
            f"top_p = {p} over probabilities [0.4, 0.4, 0.2]: the nucleus is the shortest "
            f"most-likely prefix whose mass reaches p, the crossing token included: expected "
            f"{expected}, kept {kept}"
        )
    kept = _kept(impl.apply_top_p(_logits_for([0.2, 0.5, 0.3]), 0.6), 3, "apply_top_p")
    assert kept == [1, 2], f"top-p sorts by probability, not by index: expected [1, 2], got {kept}"


def test_min_p_cutoff_scales_with_the_max_probability(impl) -> None:
    kept = _kept(impl.apply_min_p(_logits_for([0.5, 0.3, 0.15, 0.05]), 0.5), 4, "apply_min_p")
    assert kept == [0, 1], f"min_p 0.5 with max prob 0.5: threshold 0.25 keeps [0, 1], got {kept}"
    # The same min_p = 0.2 and the same probability 0.08: dropped under a confident model,
    # kept under a flat one. A fixed floor could not do both.
    confident = _kept(impl.apply_min_p(_logits_for([0.9, 0.08, 0.02]), 0.2), 3, "apply_min_p")
    flat = _kept(impl.apply_min_p(_logits_for([0.2, 0.2, 0.2, 0.2, 0.12, 0.08]), 0.2), 6,
                 "apply_min_p")
    assert confident == [0], (
        f"max prob 0.9, min_p 0.2: threshold 0.18 keeps only token 0, kept {confident}"
    )
    assert flat == [0, 1, 2, 3, 4, 5], (
        f"max prob 0.2, min_p 0.2: threshold 0.04 keeps all six (0.08 included), kept {flat}"
    )
    assert _kept(impl.apply_min_p(_logits_for([0.9, 0.08, 0.02]), 0.0), 3, "apply_min_p") == [
        0, 1, 2], "min_p = 0 disables min-p"


def test_repetition_penalty_lowers_a_repeated_token_of_either_sign(impl) -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    got = _row(impl.apply_repetition_penalty(logits, [0, 1], 2.0), 4, "apply_repetition_penalty")
    assert_close(got, [1.0, -2.0, 0.5, 3.0], cause="arithmetic",
                 what="penalty 2 on generated [0, 1]: 2.0 / 2 and -1.0 * 2 (both pushed down)")
    before, after = np.exp(logits) / np.exp(logits).sum(), np.exp(got) / np.exp(got).sum()
    assert after[0] < before[0] and after[1] < before[1], (
        "a repetition penalty > 1 must lower the probability of every repeated token, "
        f"positive logit or negative: before {before[:2]}, after {after[:2]}"
    )


def test_repetition_penalty_counts_each_token_once(impl) -> None:
    got = _row(impl.apply_repetition_penalty(np.array([4.0, 4.0]), [0, 0, 0], 2.0), 2,
               "apply_repetition_penalty")
    assert_close(got, [2.0, 4.0], cause="arithmetic",
                 what="token 0 generated three times is penalised once (4 / 2), not 4 / 2**3")


def test_presence_frequency_and_repetition_differ_on_a_token_generated_twice(impl) -> None:
    logits, generated = np.array([3.0, -1.0, 0.5]), [0, 0, 1]
    rep = _row(impl.apply_repetition_penalty(logits, generated, 2.0), 3, "apply_repetition_penalty")
    pres = _row(impl.apply_presence_penalty(logits, generated, 1.0), 3, "apply_presence_penalty")
    freq = _row(impl.apply_frequency_penalty(logits, generated, 1.0), 3, "apply_frequency_penalty")
    assert_close(rep, [1.5, -2.0, 0.5], cause="arithmetic",
                 what="repetition 2: multiplicative, once per distinct token")
    assert_close(pres, [2.0, -2.0, 0.5], cause="arithmetic",
                 what="presence 1: subtract 1 once per token present, however often")
    assert_close(freq, [1.0, -2.0, 0.5], cause="arithmetic",
                 what="frequency 1: subtract 1 per occurrence (token 0 occurred twice)")


def test_ops_never_mutate_their_inputs(impl) -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0, 1.0])
    generated = [0, 1, 1]
    calls = {
        "softmax": lambda x: impl.softmax(x),
        "apply_temperature": lambda x: impl.apply_temperature(x, 0.5),
        "apply_top_k": lambda x: impl.apply_top_k(x, 2),
        "apply_top_p": lambda x: impl.apply_top_p(x, 0.5),
        "apply_min_p": lambda x: impl.apply_min_p(x, 0.5),
        "apply_repetition_penalty": lambda x: impl.apply_repetition_penalty(x, generated, 2.0),
        "apply_presence_penalty": lambda x: impl.apply_presence_penalty(x, generated, 1.0),
        "apply_frequency_penalty": lambda x: impl.apply_frequency_penalty(x, generated, 1.0),
        "MinTokensProcessor": lambda x: impl.MinTokensProcessor(5, 3)(x, {"generated": generated}),
        "Pipeline": lambda x: impl.Pipeline([_ban(0)])(x, {"generated": generated}),
        "sample": lambda x: impl.sample(x, _params(temperature=0.7, top_k=3, top_p=0.9, min_p=0.1,
                                                    repetition_penalty=1.3, seed=0),
                                        generated, [impl.MinTokensProcessor(5, 3)]),
    }
    for name, call in calls.items():
        row = logits.copy()
        call(row)
        assert np.array_equal(row, logits), (
            f"{name} changed the caller's logits row in place: {logits} became {row}. Work on "
            "a copy; the row may be shared (a batch, another request, the next processor)"
        )
        assert generated == [0, 1, 1], f"{name} changed the caller's generated list: {generated}"


# --- processors and the pipeline ---------------------------------------------------------------


def test_pipeline_runs_processors_in_list_order_on_each_others_output(impl) -> None:
    def boost_token_0(logits: np.ndarray, ctx: dict) -> np.ndarray:
        return np.asarray(logits) + np.array([10.0, 0.0, 0.0])

    def ban_the_argmax(logits: np.ndarray, ctx: dict) -> np.ndarray:
        out = np.array(logits, dtype=np.float64)
        out[int(np.argmax(out))] = -np.inf
        return out

    seen: list[object] = []

    def spy(logits: np.ndarray, ctx: dict) -> np.ndarray:
        seen.append(ctx["generated"])
        return logits

    logits = np.array([1.0, 2.0, 3.0])
    got = _row(impl.Pipeline([boost_token_0, ban_the_argmax, spy])(logits, {"generated": [7]}),
               3, "Pipeline")
    assert np.isneginf(got[0]) and got[1:].tolist() == [2.0, 3.0], (
        "boost token 0 by 10, then ban the argmax (now token 0): expected [-inf, 2, 3], got "
        f"{got}. Each processor must receive the previous one's output, in list order")
    assert seen == [[7]], f"every processor receives the ctx it was called with; the spy saw {seen}"
    assert_close(_row(impl.Pipeline([])(logits, {"generated": []}), 3, "Pipeline"), logits,
                 cause="arithmetic", what="an empty pipeline is the identity")


def test_min_tokens_processor_masks_eos_until_enough_tokens(impl) -> None:
    processor = impl.MinTokensProcessor(3, 2)
    logits = np.array([0.5, 1.0, 4.0, -1.0])
    for generated, masked in (([], True), ([1], True), ([1, 1], True), ([1, 1, 1], False),
                              ([1, 1, 1, 1], False)):
        got = _row(processor(logits, {"generated": generated}), 4, "MinTokensProcessor")
        assert bool(np.isneginf(got[2])) == masked, (
            f"min_tokens 3 with {len(generated)} generated: EOS (token 2) must be "
            f"{'-inf' if masked else 'untouched'}, got {got[2]}"
        )
        assert_close(np.delete(got, 2), [0.5, 1.0, -1.0], cause="arithmetic",
                     what="MinTokensProcessor touches only EOS")


# --- sample: the course's order ---------------------------------------------------------------


def test_banned_token_is_unsamplable_through_the_whole_pipeline(impl) -> None:
    logits = np.array([0.1, 5.0, 0.3, -0.2, 0.0])  # token 1 dominates
    knob_sets = [
        {"temperature": 0.0},
        {"temperature": 1.0},
        {"temperature": 3.0, "top_k": 1},
        {"temperature": 1.0, "top_p": 0.05},
        {"temperature": 0.5, "min_p": 0.9},
        {"temperature": 1.0, "repetition_penalty": 3.0},
    ]
    for knobs in knob_sets:
        probs = _row(impl.sampling_probs(logits, _params(**knobs), [1], [_ban(1)]), 5,
                     "sampling_probs")
        assert probs[1] == 0.0, (
            f"{knobs}: token 1 was banned by a processor, yet it kept probability {probs[1]}; "
            "-inf must survive every later stage"
        )
        for seed in range(12):
            token = _token(impl.sample(logits, _params(seed=seed, **knobs), [1], [_ban(1)]), 5)
            assert token != 1, f"{knobs}, seed {seed}: the banned token 1 was sampled"


def test_greedy_applies_processors_and_the_penalty_first(impl) -> None:
    logits = np.array([3.0, 2.0, 0.0, 1.0])
    greedy = _params(temperature=0.0, top_k=1, top_p=0.1, min_p=0.9, repetition_penalty=2.0)
    token = _token(impl.sample(logits, greedy, [0]), 4)
    assert token == 1, (
        f"greedy with repetition penalty 2 on generated [0]: logits become [1.5, 2, 0, 1], so "
        f"the argmax is 1, got {token}. Penalties apply at temperature 0 too"
    )
    token = _token(impl.sample(logits, greedy, [0], [_ban(1)]), 4)
    assert token == 0, f"with token 1 banned as well, greedy picks token 0 (1.5), got {token}"
    probs = _row(impl.sampling_probs(logits, greedy, [0]), 4, "sampling_probs")
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0], (
        f"greedy's distribution is one-hot on the argmax, got {probs}"
    )


def test_processors_run_before_the_repetition_penalty(impl) -> None:
    def boost_token_0(logits: np.ndarray, ctx: dict) -> np.ndarray:
        return np.asarray(logits) + np.array([5.0, 0.0, 0.0])

    probs = _row(impl.sampling_probs(np.array([-1.0, 2.5, 0.0]), _params(repetition_penalty=2.0),
                                     [0], [boost_token_0]), 3, "sampling_probs")
    assert_close(probs, np.exp([2.0, 2.5, 0.0]) / np.exp([2.0, 2.5, 0.0]).sum(),
                 cause="float64-reordered", what=(
                     "processor first: (-1 + 5) / 2 = 2.0 for token 0; the penalty first would "
                     "give -1 * 2 + 5 = 3.0"))


def test_top_p_sees_the_tempered_distribution(impl) -> None:
    logits = _logits_for([0.5, 0.3, 0.2])
    probs = _row(impl.sampling_probs(logits, _params(temperature=0.5, top_p=0.6)), 3,
                 "sampling_probs")
    assert np.flatnonzero(probs).tolist() == [0], (
        "temperature 0.5 sharpens [0.5, 0.3, 0.2] to about [0.66, 0.24, 0.11]: top_p 0.6 keeps "
        f"only token 0. Got support {np.flatnonzero(probs).tolist()}: top-p ran before temperature?"
    )


def test_min_p_sees_the_tempered_distribution(impl) -> None:
    logits = _logits_for([0.5, 0.3, 0.2])
    probs = _row(impl.sampling_probs(logits, _params(temperature=2.0, min_p=0.5)), 3,
                 "sampling_probs")
    assert np.flatnonzero(probs).tolist() == [0, 1, 2], (
        "temperature 2 flattens [0.5, 0.3, 0.2]: token 2's ratio to the max becomes "
        "sqrt(0.4) = 0.63 >= min_p 0.5, so all three stay. Got support "
        f"{np.flatnonzero(probs).tolist()}: min-p measured on the untempered logits?"
    )


def test_min_p_runs_after_top_p_in_the_course_order(impl) -> None:
    """The one place the course and vLLM (and mini_vllm) differ: both top-p and min-p on.

    Course order: top-p 0.6 over [0.5, 0.3, 0.2] keeps {0, 1} (0.5 < 0.6, crossed at 0.8);
    min-p 0.5 over the renormalised [0.625, 0.375] keeps both. vLLM order: min-p first keeps
    {0, 1}, then top-p 0.6 over [0.625, 0.375] keeps {0}.
    """
    logits = _logits_for([0.5, 0.3, 0.2])
    both = _params(temperature=1.0, top_p=0.6, min_p=0.5)
    probs = _row(impl.sampling_probs(logits, both), 3, "sampling_probs")
    assert_close(probs, [0.625, 0.375, 0.0], cause="float64-reordered",
                 what="course order (top-p, then min-p)")
    vllm = vllm_softmax(vllm_top_p(vllm_top_k(vllm_min_p(logits, 0.5), 0), 0.6))
    assert vllm.tolist() == [1.0, 0.0, 0.0]
    seed = 0  # default_rng(0)'s first uniform is 0.64 >= 0.625: the course draws token 1
    assert _token(impl.sample(logits, _params(**{**both.__dict__, "seed": seed})), 3) == 1
    assert Sampler().sample(logits, _params(**{**both.__dict__, "seed": seed})) == 0
    # With only one of the two switched on, the orders agree.
    rng = np.random.default_rng(5)
    for knobs in ({"top_p": 0.6}, {"min_p": 0.3}, {"top_k": 4, "min_p": 0.2}):
        row = rng.normal(size=12) * 2
        params = _params(temperature=0.8, **knobs)
        x = vllm_min_p(row / 0.8, params.min_p)
        expected = vllm_softmax(vllm_top_p(vllm_top_k(x, params.top_k), params.top_p))
        assert_close(_row(impl.sampling_probs(row, params), 12, "sampling_probs"), expected,
                     cause="float64-reordered", what=f"{knobs}: course order vs vLLM order")


def test_sampling_probs_properties_on_random_rows(impl) -> None:
    rng = np.random.default_rng(2024)
    vocab = 32
    for case in range(40):
        logits = rng.normal(size=vocab) * 3
        banned = sorted(set(rng.integers(0, vocab, size=3).tolist()))
        params = _params(temperature=float(rng.choice([0.0, 0.3, 1.0, 2.0])),
                         top_k=int(rng.choice([0, 1, 5, 20])),
                         top_p=float(rng.choice([1.0, 0.9, 0.5])),
                         min_p=float(rng.choice([0.0, 0.05, 0.3])),
                         repetition_penalty=float(rng.choice([1.0, 1.3])), seed=case)
        generated = rng.integers(0, vocab, size=4).tolist()
        probs = _row(impl.sampling_probs(logits, params, generated, [_ban(t) for t in banned]),
                     vocab, "sampling_probs")
        assert abs(probs.sum() - 1.0) < 1e-12 and np.all(probs >= 0), (
            f"case {case} ({params}): probabilities must be >= 0 and sum to 1, sum {probs.sum()}"
        )
        assert not probs[banned].any(), (
            f"case {case}: banned tokens {banned} have probabilities {probs[banned]}"
        )
    logits = rng.normal(size=vocab)
    neutral = _row(impl.sampling_probs(logits, _params(temperature=1.0)), vocab, "sampling_probs")
    assert_close(neutral, impl.softmax(logits), cause="float64-same-order",
                 what="neutral knobs (T=1, no k/p/min-p, no penalty, no processor) = softmax")


def test_sample_draws_once_from_a_seeded_generator(impl) -> None:
    logits = np.random.default_rng(1).normal(size=50)
    for seed in range(10):
        params = _params(temperature=0.9, top_k=10, seed=seed)
        probs = _row(impl.sampling_probs(logits, params), 50, "sampling_probs")
        expected = int(np.random.default_rng(seed).choice(50, p=probs))
        token = _token(impl.sample(logits, params), 50)
        assert token == expected, (
            f"seed {seed}: sample must make exactly one draw, "
            f"np.random.default_rng(seed).choice(vocab, p=probs); expected {expected}, got {token}"
        )


# --- the learner's sampler drives mini_vllm's engine ------------------------------------------


class _LearnerSampler:
    """mini_vllm's sampler interface on top of the learner's ``sample``.

    ``generated`` is every token the request holds (prompt + output): vLLM's repetition penalty
    counts the prompt too, and that is what mini_vllm's stock sampler does.
    """

    def __init__(self, impl: Any, prompt_counts: bool = True) -> None:
        self.impl = impl
        self.prompt_counts = prompt_counts

    def sample(self, logits: np.ndarray, params: Any, request: Any = None) -> int:
        tokens = request.all_token_ids if self.prompt_counts else request.output_token_ids
        return self.impl.sample(logits, params, list(tokens))


def _generate(model: Any, sampler: Any = None, **knobs: Any) -> list[int]:
    extra = {} if sampler is None else {"sampler": sampler}
    engine = LLMEngine(model=model, block_size=4, num_blocks=64, **extra)
    params = SamplingParams(**{"max_tokens": 10, "temperature": 0.0, **knobs})
    out = engine.generate(["ab"], params)[0].output_token_ids
    assert len(out) <= 10, f"the engine produced {len(out)} tokens for max_tokens 10"
    return out


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"repetition_penalty": 1.5}, id="greedy_repetition_penalty"),
        pytest.param({"temperature": 0.8, "top_k": 20, "seed": 7}, id="seeded_temperature_top_k"),
        pytest.param({"temperature": 1.5, "min_p": 0.2, "seed": 11}, id="min_p_without_top_p"),
    ],
)
def test_engine_with_your_sampler_matches_mini_vllm(impl, tiny_llama, knobs: dict) -> None:
    mine = _generate(tiny_llama, _LearnerSampler(impl), **knobs)
    stock = _generate(tiny_llama, **knobs)
    assert mine == stock, (
        f"{knobs} on the tiny Llama, prompt 'ab': your pipeline generated {mine}, mini_vllm's "
        f"sampler {stock}. Without top-p + min-p together, the two orders must agree token for "
        "token"
    )


def test_engine_repetition_penalty_counts_the_prompt(impl, tiny_llama) -> None:
    plain = _generate(tiny_llama)
    stock = _generate(tiny_llama, repetition_penalty=1.5)
    output_only = _generate(tiny_llama, _LearnerSampler(impl, prompt_counts=False),
                            repetition_penalty=1.5)
    with_prompt = _generate(tiny_llama, _LearnerSampler(impl), repetition_penalty=1.5)
    assert plain != stock, "the penalty must change greedy's repeat, or this test shows nothing"
    assert with_prompt == stock, f"prompt + output as `generated`: {with_prompt} != {stock}"
    assert output_only != stock, (
        "passing only the output tokens (the course's `generated`) must diverge from vLLM's "
        f"penalty, which also counts the prompt; both gave {stock}"
    )
