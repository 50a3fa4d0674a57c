"""Spec for kata 03-06: 544 scheduled tokens uncached, 96 cached — outputs bit-identical."""

from __future__ import annotations

from types import ModuleType

import pytest

from katas.phase03.prefix_cache_savings.scaffold import Odometer
from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

SYSTEM = "S" * 64  # 64 byte-tokens: exactly 16 full blocks of 4
PROMPTS = [SYSTEM + str(i) for i in range(8)]  # 65 tokens each, the last one unique
FOLLOWERS = len(PROMPTS) - 1


def _run(
    impl: ModuleType, prompts: list[str], *, enable_caching: bool, **kwargs: int
) -> Odometer:
    """One run, its result checked for shape before any test reads it."""
    got = impl.run_and_count(prompts, enable_caching=enable_caching, **kwargs)
    assert isinstance(got, Odometer), (
        f"run_and_count returns an Odometer(total, step_totals, outputs) from scaffold.py, got "
        f"{type(got).__name__}: {got!r}"
    )
    assert isinstance(got.step_totals, list) and got.step_totals, (
        f"step_totals is a non-empty list with one reading per engine step, got "
        f"{got.step_totals!r}"
    )
    assert len(got.outputs) == len(prompts), (
        f"outputs holds one list of token ids per prompt ({len(prompts)}), got "
        f"{len(got.outputs)}"
    )
    return got


def _both(impl: ModuleType, prompts: list[str], **kwargs: int) -> tuple[Odometer, Odometer]:
    """The same run with caching off, then on."""
    return (
        _run(impl, prompts, enable_caching=False, **kwargs),
        _run(impl, prompts, enable_caching=True, **kwargs),
    )


def test_caching_off_pays_full_price_for_everyone(impl) -> None:
    off = _run(impl, PROMPTS, enable_caching=False)
    assert off.total == 544, (
        f"without a cache each request computes its 65 prompt tokens and 3 decodes (the 4th "
        f"sampled token is never fed back): 8 x 68 = 544; got {off.total}"
    )


def test_caching_on_computes_the_shared_prefix_once(impl) -> None:
    on = _run(impl, PROMPTS, enable_caching=True)
    assert on.total == 96, (
        f"with a cache the first request pays 65 + 3 = 68 and each of the 7 followers adopts 16 "
        f"cached blocks, computes its 1 unique token and 3 decodes: 68 + 7 x 4 = 96; got "
        f"{on.total}"
    )


def test_savings_equal_followers_times_shared_full_blocks(impl) -> None:
    off, on = _both(impl, PROMPTS)
    saved = off.total - on.total
    assert saved == FOLLOWERS * 16 * 4 == 448, (
        f"savings = followers x shared full blocks x block size = 7 x 16 x 4 = 448; got {saved}"
    )
    assert round(saved / off.total, 2) == 0.82, f"448 of 544 is 82%; got {saved / off.total:.1%}"


def test_outputs_are_identical_with_and_without_caching(impl) -> None:
    off, on = _both(impl, PROMPTS)
    assert all(len(o) == 4 for o in on.outputs), (
        f"one output of max_tokens=4 tokens per prompt (greedy, ignore_eos); got lengths "
        f"{[len(o) for o in on.outputs]}"
    )
    greedy = [r.output_token_ids for r in LLMEngine(block_size=4, enable_caching=False).generate(
        PROMPTS, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))]
    assert off.outputs == greedy, (
        f"the runs must be greedy (temperature=0.0), so they are reproducible: the caching-off "
        f"run should produce {greedy[:2]}..., got {off.outputs[:2]}..."
    )
    assert_same_outputs(off.outputs, on.outputs, labels=("caching off", "caching on"))


def test_followers_hit_blocks_cached_in_the_same_schedule_call(impl) -> None:
    off, on = _both(impl, PROMPTS)
    assert (off.step_totals[0], on.step_totals[0]) == (520, 72), (
        f"all 8 requests are admitted in step 1. Off: 8 x 65 = 520. On: the first request's "
        f"blocks are registered as it is allocated, so the 7 admitted after it in the same "
        f"schedule() call already hit them: 65 + 7 x 1 = 72. Got {off.step_totals[0]} and "
        f"{on.step_totals[0]}"
    )
    assert off.step_totals[1:] == on.step_totals[1:] == [8, 8, 8], (
        f"then 3 decode steps of 8 requests x 1 token; got {off.step_totals} and {on.step_totals}"
    )


def test_odometer_is_the_sum_of_every_step(impl) -> None:
    for reading in _both(impl, PROMPTS):
        assert reading.total == sum(reading.step_totals), (
            f"total must be the sum of the per-step readings; got {reading.total} vs "
            f"{reading.step_totals}"
        )


@pytest.mark.parametrize(
    ("shared", "saved"),
    [
        pytest.param(64, 448, id="16_full_blocks_shared"),
        pytest.param(66, 448, id="16_and_a_half_blocks-the_half_is_recomputed"),
        pytest.param(5, 28, id="a_one_block_sliver"),
        pytest.param(3, 0, id="less_than_a_block-nothing_to_share"),
    ],
)
def test_savings_follow_the_full_block_formula(impl, shared: int, saved: int) -> None:
    prompts = ["S" * shared + str(i) for i in range(8)]
    off, on = _both(impl, prompts)
    assert off.total - on.total == saved == FOLLOWERS * 4 * (shared // 4), (
        f"a {shared}-token shared prefix holds {shared // 4} full blocks of 4; only full blocks "
        f"are cached, so savings = 7 x 4 x {shared // 4} = {saved}; got {off.total - on.total}"
    )
    assert_same_outputs(off.outputs, on.outputs, labels=("caching off", "caching on"))


def test_unshared_prompts_save_nothing(impl) -> None:
    prompts = [f"case {i}: " + "abcdefghij" * 6 for i in range(8)]  # 68 tokens, only "case" shared
    off, on = _both(impl, prompts)
    saved = off.total - on.total
    assert saved / off.total < 0.25 and saved == FOLLOWERS * 4, (
        f"prompts that share one block-aligned sliver ('case') save 7 x 4 = 28 of {off.total} "
        f"tokens, far under 25%; got {saved} ({saved / off.total:.1%})"
    )


def test_identical_prompts_hit_the_num_tokens_minus_one_cap(impl) -> None:
    off, on = _both(impl, [SYSTEM] * 8)
    saved = off.total - on.total
    assert (off.total, on.total, saved) == (536, 116, 420), (
        f"8 identical 64-token prompts: a follower may adopt at most num_tokens - 1 = 63 tokens, "
        f"i.e. 15 full blocks (60), because the last token must be computed for its logits. Off "
        f"8 x 67 = 536, on 67 + 7 x (4 + 3) = 116, saved 7 x 60 = 420; got {off.total}, "
        f"{on.total}, {saved}"
    )


@pytest.mark.parametrize(
    ("block_size", "cached_total"),
    [
        pytest.param(16, 96, id="block_16-four_full_blocks"),
        pytest.param(48, 208, id="block_48-one_full_block-16_left_to_compute"),
    ],
)
def test_block_size_sets_the_granularity_of_sharing(impl, block_size: int, cached_total: int):
    off, on = _both(impl, PROMPTS, block_size=block_size)
    assert (off.total, on.total) == (544, cached_total), (
        f"block_size {block_size}: caching off still costs 544; on, a follower adopts "
        f"{64 // block_size} full block(s) and computes the rest, for a total of {cached_total}; "
        f"got {off.total} and {on.total}"
    )


def test_decodes_are_paid_by_everyone_cache_or_not(impl) -> None:
    off, on = _both(impl, PROMPTS, max_tokens=8)
    assert (off.total, on.total) == (576, 128), (
        f"with max_tokens=8 every request adds 7 decodes, cached or not: off 8 x (65 + 7) = 576, "
        f"on (65 + 7) + 7 x (1 + 7) = 128, still saving 448; got {off.total} and {on.total}"
    )


def test_requests_run_through_eos_to_max_tokens(impl) -> None:
    # Greedy "hello" samples EOS (256) as its 7th token; the odometer needs exact lengths.
    reading = _run(impl, ["hello"], enable_caching=False, max_tokens=8)
    assert len(reading.outputs[0]) == 8 and reading.total == 5 + 7, (
        f"with ignore_eos=True the request runs to all 8 tokens: 5 prompt + 7 decode tokens "
        f"scheduled; got {len(reading.outputs[0])} tokens and {reading.total} scheduled"
    )
