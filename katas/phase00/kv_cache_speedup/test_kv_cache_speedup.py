"""Spec for kata 00-01: caching K/V changes the work from quadratic to linear, and nothing else."""

from __future__ import annotations

import pytest

from katas.phase00.kv_cache_speedup.scaffold import VOCAB_SIZE, KVWork

pytestmark = pytest.mark.cpu_ok

PROMPT = [1, 2, 3, 4, 5]  # P = 5, the course's worked example

# (prompt length, new tokens): tiny edges, the worked example, and a long run.
SHAPES = [
    pytest.param(1, 1, id="one_token_prompt-one_new_token"),
    pytest.param(5, 0, id="five_token_prompt-nothing_generated"),
    pytest.param(5, 10, id="five_token_prompt-ten_new_tokens"),
    pytest.param(3, 64, id="three_token_prompt-64_new_tokens"),
    pytest.param(40, 25, id="forty_token_prompt-25_new_tokens"),
]


def _prompt(length: int) -> list[int]:
    return [(7 * i + 3) % VOCAB_SIZE for i in range(length)]


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_both_produce_identical_tokens(impl, prompt_len: int, n_new: int) -> None:
    prompt = _prompt(prompt_len)
    uncached, _ = impl.generate_no_cache(prompt, n_new)
    cached, _ = impl.generate_with_cache(prompt, n_new)
    assert uncached == cached, (
        "caching must not change the output: the cached run produced different tokens "
        "(is next_token called with the full sequence in both?)"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_output_is_prompt_then_generated_tokens(impl, prompt_len: int, n_new: int) -> None:
    prompt = _prompt(prompt_len)
    for generate in (impl.generate_no_cache, impl.generate_with_cache):
        tokens, _ = generate(prompt, n_new)
        assert len(tokens) == prompt_len + n_new, (
            f"{generate.__name__} should return the prompt plus {n_new} new tokens "
            f"({prompt_len + n_new} in all), got {len(tokens)}"
        )
        assert tokens[:prompt_len] == prompt, (
            f"{generate.__name__} should return the full sequence, starting with the prompt"
        )
        assert all(0 <= t < VOCAB_SIZE for t in tokens[prompt_len:]), (
            f"{generate.__name__} produced a token outside the vocabulary: use next_token"
        )


def test_prompt_is_not_modified(impl) -> None:
    prompt = list(PROMPT)
    impl.generate_no_cache(prompt, 3)
    impl.generate_with_cache(prompt, 3)
    assert prompt == PROMPT, "generation appended to the caller's prompt list: work on a copy"


def test_worked_example_costs_95_versus_15(impl) -> None:
    _, uncached = impl.generate_no_cache(PROMPT, 10)
    _, cached = impl.generate_with_cache(PROMPT, 10)
    assert (uncached, cached) == (95, 15), (
        f"P=5, n_new=10 should cost 5+6+...+14 = 95 units without a cache and 5+10 = 15 with "
        f"one; got {uncached} and {cached}"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_no_cache_is_quadratic(impl, prompt_len: int, n_new: int) -> None:
    _, work = impl.generate_no_cache(_prompt(prompt_len), n_new)
    expected = sum(range(prompt_len, prompt_len + n_new))
    assert work == expected, (
        f"without a cache step i re-reads P + i tokens, so the total is "
        f"sum(P .. P+n_new-1) = {expected}; got {work}"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_cached_is_linear(impl, prompt_len: int, n_new: int) -> None:
    _, work = impl.generate_with_cache(_prompt(prompt_len), n_new)
    expected = prompt_len + n_new
    assert work == expected, (
        f"with a cache every token's K/V is computed once: P + n_new = {expected}; got {work}"
    )


def test_work_ratio_grows_with_length(impl) -> None:
    ratios = []
    for n_new in (10, 100, 1000):
        _, uncached = impl.generate_no_cache(PROMPT, n_new)
        _, cached = impl.generate_with_cache(PROMPT, n_new)
        ratios.append(uncached / cached)
    assert ratios[0] < ratios[1] < ratios[2], (
        f"the no-cache / cached ratio should keep growing with length (it is ~N/2); "
        f"got {ratios} at n_new = 10, 100, 1000"
    )
    assert ratios[2] > 100, f"at n_new=1000 the ratio should exceed 100x, got {ratios[2]:.1f}x"


def test_thousand_tokens_cost_504500_versus_1005(impl) -> None:
    _, uncached = impl.generate_no_cache(PROMPT, 1000)
    _, cached = impl.generate_with_cache(PROMPT, 1000)
    assert (uncached, cached) == (504_500, 1_005), (
        f"P=5, n_new=1000 should cost 504,500 units uncached and 1,005 cached; "
        f"got {uncached:,} and {cached:,}"
    )


def test_cached_run_computes_each_position_exactly_once(impl) -> None:
    meter = KVWork()
    tokens, work = impl.generate_with_cache(PROMPT, 10, meter)
    assert work == meter.units, "return the meter's total (meter.units) as the work"
    positions = [position for _, position in meter.computed]
    assert sorted(positions) == list(range(len(tokens))), (
        f"with a cache each position 0..{len(tokens) - 1} has its K/V computed exactly once; "
        f"computed positions were {positions}"
    )


@pytest.mark.parametrize("strategy", ["generate_no_cache", "generate_with_cache"])
def test_every_kv_is_computed_for_the_token_at_its_position(impl, strategy: str) -> None:
    meter = KVWork()
    tokens, _ = getattr(impl, strategy)(PROMPT, 10, meter)
    wrong = [(t, p) for t, p in meter.computed if p >= len(tokens) or tokens[p] != t]
    assert not wrong, (
        f"compute_kv(token, position) must name the token that sits at that position in the "
        f"sequence; these calls do not: {wrong[:5]}"
    )
