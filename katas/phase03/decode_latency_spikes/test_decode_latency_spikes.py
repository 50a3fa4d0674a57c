"""Spec for kata 03-05: one 257-token balloon unchunked, eight 33-token installments at 32."""

from __future__ import annotations

import math
from types import ModuleType

import pytest

from katas.phase03.decode_latency_spikes.scaffold import VICTIM_PROMPT
from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

UNCHUNKED = [257, 2] + [1] * 13
CHUNKED_AT_32 = [33] * 8 + [2] + [1] * 6


def _profile(impl: ModuleType, threshold: int, **kwargs: int):  # noqa: ANN202
    profile = impl.decode_step_costs(threshold, **kwargs)
    fields = ("costs", "victim_output_token_ids", "num_steps")
    missing = [f for f in fields if not hasattr(profile, f)]
    assert not missing, f"decode_step_costs returns a SpikeProfile{fields}; got {profile!r}"
    costs = profile.costs
    assert isinstance(costs, list | tuple) and all(isinstance(c, int) for c in costs), (
        f"SpikeProfile.costs is a list of ints, one per victim step; got {costs!r}"
    )
    return profile


def _costs(impl: ModuleType, threshold: int, **kwargs: int) -> list[int]:
    return list(_profile(impl, threshold, **kwargs).costs)


def test_unchunked_profile_is_one_257_token_balloon(impl) -> None:
    got = _costs(impl, 0)
    assert got == UNCHUNKED, (
        f"without chunking, the long prompt's 256 tokens ride in one step with the victim's 1 "
        f"(257), then the long request's one decode beside the victim's (2), then the victim "
        f"alone; expected {UNCHUNKED}, got {got}"
    )


def test_threshold_32_pays_in_eight_installments_of_33(impl) -> None:
    got = _costs(impl, 32)
    assert got == CHUNKED_AT_32, (
        f"at threshold 32 the 256-token prefill takes ceil(256 / 32) = 8 steps of 32 + 1, then 2, "
        f"then 1s; expected {CHUNKED_AT_32}, got {got}"
    )


@pytest.mark.parametrize(
    ("threshold", "kwargs", "expected"),
    [
        pytest.param(64, {}, [65] * 4 + [2] + [1] * 10, id="threshold_64-four_steps_of_65"),
        pytest.param(100, {}, [101, 101, 57, 2] + [1] * 11, id="threshold_100-last_chunk_56"),
        pytest.param(256, {}, UNCHUNKED, id="threshold_equal_to_the_prompt_is_no_chunking"),
        pytest.param(16, {}, [17] * 15, id="threshold_16-prefill_outlasts_the_victim"),
        pytest.param(1, {}, [2] * 15, id="threshold_1-pristine_latency_for_the_victim"),
        pytest.param(0, dict(long_prompt_len=100), [101, 2] + [1] * 13, id="100_token_prompt"),
        pytest.param(
            30,
            dict(long_prompt_len=100),
            [31, 31, 31, 11, 2] + [1] * 10,
            id="100_token_prompt-threshold_30",
        ),
        pytest.param(0, dict(max_tokens=4), [257, 2, 1], id="victim_with_4_tokens"),
        pytest.param(0, dict(max_tokens=2), [257], id="victim_with_2_tokens-the_smallest"),
        pytest.param(
            0,
            dict(max_num_batched_tokens=64),
            [64] * 4 + [5, 2] + [1] * 9,
            id="budget_64-caps_every_step_without_a_threshold",
        ),
    ],
)
def test_profile_for_other_settings(impl, threshold: int, kwargs: dict, expected: list[int]):
    got = _costs(impl, threshold, **kwargs)
    assert got == expected, (
        f"threshold {threshold}, {kwargs or 'defaults'}: expected victim step costs {expected}, "
        f"got {got}"
    )


def test_unchunked_prefill_spikes_one_decode_step(impl) -> None:
    costs = _costs(impl, 0)
    assert len(costs) >= 2, f"the victim decodes 15 more tokens after the arrival; got {costs}"
    worst, second, *_ = sorted(costs, reverse=True)
    assert worst >= 257 and second <= 3, (
        f"exactly one balloon: the worst step should cost >= 257 and the next worst <= 3; got "
        f"{worst} and {second}"
    )


@pytest.mark.parametrize("threshold", [16, 32, 64], ids=lambda t: f"threshold_{t}")
def test_chunked_prefill_caps_the_spike(impl, threshold: int) -> None:
    costs = _costs(impl, threshold)
    assert costs, "the victim decodes 15 more tokens after the arrival; got no costs"
    elevated = [c for c in costs if c > 2]
    assert max(costs) <= threshold + 1, (
        f"no victim step may cost more than one chunk plus its own token ({threshold + 1}); "
        f"got {costs}"
    )
    assert len(elevated) >= min(math.ceil(256 / threshold), len(costs)), (
        f"the prefill did not vanish, it spread: expect ceil(256 / {threshold}) elevated steps "
        f"(as many as the victim lives for); got {costs}"
    )


@pytest.mark.parametrize("threshold", [0, 32, 64, 100], ids=lambda t: f"threshold_{t}")
def test_chunking_conserves_the_work(impl, threshold: int) -> None:
    total = sum(_costs(impl, threshold))
    assert total == 272, (
        f"the victim sees the same work in every schedule: 256 (prefill) + 15 (its decodes) + 1 "
        f"(the long request's decode) = 272; got {total} at threshold {threshold}"
    )


def test_chunking_does_not_change_the_decode_streams_output(impl) -> None:
    outputs = {t: _profile(impl, t).victim_output_token_ids for t in (0, 1, 32)}
    alone = LLMEngine().generate(
        [VICTIM_PROMPT], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    )[0]
    assert outputs[0] == outputs[1] == outputs[32] == alone.output_token_ids, (
        f"interference changes when the victim's tokens come, never which: expected "
        f"{alone.output_token_ids} (the victim alone); got {outputs}"
    )


@pytest.mark.parametrize("threshold", [0, 1, 32], ids=lambda t: f"threshold_{t}")
def test_decode_stream_is_never_starved(impl, threshold: int) -> None:
    profile = _profile(impl, threshold)
    assert len(profile.costs) == profile.num_steps == 15, (
        f"running requests are served first, so the victim advances in every one of the "
        f"{profile.num_steps} steps it lives through after the arrival (15 decodes for 16 "
        f"tokens); it was scheduled in {len(profile.costs)}"
    )


def test_victim_must_be_decoding_when_the_prompt_lands(impl) -> None:
    with expect_raises(ValueError, "a victim with max_tokens=1 finishes in its prefill step, so "
                       "it is never decoding when the long prompt lands"):
        impl.decode_step_costs(0, max_tokens=1)


def test_spike_ratio_of_the_two_profiles(impl) -> None:
    unchunked, chunked = impl.spike_ratio(UNCHUNKED), impl.spike_ratio(CHUNKED_AT_32)
    assert (unchunked, chunked) == (257.0, 33.0), (
        f"worst step over calmest step: 257 / 1 unchunked, 33 / 1 at threshold 32; got "
        f"{unchunked} and {chunked}"
    )
    assert 7.7 < unchunked / chunked < 7.8, (
        f"chunking cuts the worst-case step about 8x (257 / 33 = 7.79); got "
        f"{unchunked} / {chunked}"
    )


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        pytest.param([1, 1, 1], 1.0, id="flat_profile"),
        pytest.param([4, 2, 8], 4.0, id="unsorted"),
        pytest.param([7], 1.0, id="single_step"),
        pytest.param([3, 2], 1.5, id="not_a_whole_ratio"),
    ],
)
def test_spike_ratio_is_worst_over_calmest(impl, costs: list[int], expected: float) -> None:
    got = impl.spike_ratio(costs)
    assert got == expected, f"spike_ratio({costs}) is max / min = {expected}, got {got}"


@pytest.mark.parametrize("costs", [[], [0, 3]], ids=["no_steps", "a_zero_cost_step"])
def test_spike_ratio_refuses_meaningless_profiles(impl, costs: list[int]) -> None:
    with expect_raises(ValueError, f"spike_ratio({costs}) has no meaning: it needs at least one "
                       f"step, and every step of a victim costs at least its own token"):
        impl.spike_ratio(costs)
