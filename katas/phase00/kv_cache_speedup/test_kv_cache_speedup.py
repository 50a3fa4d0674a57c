"""Spec for kata 00-01: caching K/V changes the work from quadratic to linear, and nothing else."""

from __future__ import annotations

import pytest

from katas.phase00.kv_cache_speedup.scaffold import VOCAB_SIZE, KVWork

pytestmark = pytest.mark.cpu_ok

PROMPT = [1, 2, 3, 4, 5]  # P = 5, the course's worked example
STRATEGIES = ["generate_no_cache", "generate_with_cache"]

# (prompt length, new tokens): tiny edges, the worked example, and a long run.
SHAPES = [
    pytest.param(1, 1, id="one_token_prompt-one_new_token"),
    pytest.param(5, 0, id="five_token_prompt-nothing_generated"),
    pytest.param(5, 10, id="five_token_prompt-ten_new_tokens"),
    pytest.param(3, 64, id="three_token_prompt-64_new_tokens"),
    pytest.param(40, 25, id="forty_token_prompt-25_new_tokens"),
]


# The two n_new=1000 tests share one pair of runs per module under test (half a million
# compute_kv calls is the slowest thing in this kata). The module is kept in the entry so that
# its id cannot be reused by another module.
_THOUSAND: dict[int, tuple[object, tuple[int, int]]] = {}


def _prompt(length: int) -> list[int]:
    return [(7 * i + 3) % VOCAB_SIZE for i in range(length)]


def _generate(
    impl, strategy: str, prompt: list[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Call ``impl.<strategy>`` and check the shape of its answer before anything reads it."""
    generate = getattr(impl, strategy)
    result = generate(prompt, n_new) if meter is None else generate(prompt, n_new, meter)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"{strategy} must return a pair (tokens, work); got {type(result).__name__} "
        f"{result!r:.100}"
    )
    tokens, work = result
    assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens), (
        f"{strategy}: the first element must be the list of token ids (prompt + generated); "
        f"got {type(tokens).__name__} {tokens!r:.100}"
    )
    assert isinstance(work, int) and not isinstance(work, bool), (
        f"{strategy}: the second element must be the total K/V work as an int (meter.units); "
        f"got {type(work).__name__} {work!r:.60}"
    )
    return tokens, work


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_both_produce_identical_tokens(impl, prompt_len: int, n_new: int) -> None:
    prompt = _prompt(prompt_len)
    uncached, _ = _generate(impl, "generate_no_cache", prompt, n_new)
    cached, _ = _generate(impl, "generate_with_cache", prompt, n_new)
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(uncached, cached, strict=False)) if a != b), None
    )
    assert uncached == cached, (
        f"caching must not change the output (P={prompt_len}, n_new={n_new}): the runs differ "
        f"at index {first_difference} (lengths {len(uncached)} and {len(cached)}); the cache "
        f"saves K/V work, the model still needs the whole context: pass the full sequence to "
        f"next_token in both"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_output_is_prompt_then_generated_tokens(
    impl, strategy: str, prompt_len: int, n_new: int
) -> None:
    prompt = _prompt(prompt_len)
    tokens, _ = _generate(impl, strategy, prompt, n_new)
    assert len(tokens) == prompt_len + n_new, (
        f"{strategy} should return the prompt plus {n_new} new tokens "
        f"({prompt_len + n_new} in all); got {len(tokens)}"
    )
    assert tokens[:prompt_len] == prompt, (
        f"{strategy} should return the full sequence, starting with the {prompt_len}-token "
        f"prompt; it starts {tokens[:prompt_len][:8]}..., the prompt is {prompt[:8]}..."
    )
    outside = [t for t in tokens[prompt_len:] if not 0 <= t < VOCAB_SIZE]
    assert not outside, (
        f"{strategy} produced token ids outside range({VOCAB_SIZE}): {outside[:5]}; "
        f"every new token must come from next_token"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prompt_is_not_modified(impl, strategy: str) -> None:
    prompt = list(PROMPT)
    _generate(impl, strategy, prompt, 3)
    assert prompt == PROMPT, (
        f"{strategy} changed the caller's prompt list to {prompt} (was {PROMPT}): "
        f"work on a copy"
    )


def test_worked_example_costs_95_versus_15(impl) -> None:
    uncached, cached = _work_pair(impl, 10)
    assert (uncached, cached) == (95, 15), (
        f"P=5, n_new=10 should cost 5+6+...+14 = 95 units without a cache and 5+10 = 15 with "
        f"one; got {uncached} and {cached}"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_no_cache_is_quadratic(impl, prompt_len: int, n_new: int) -> None:
    _, work = _generate(impl, "generate_no_cache", _prompt(prompt_len), n_new)
    expected = sum(range(prompt_len, prompt_len + n_new))
    assert work == expected, (
        f"P={prompt_len}, n_new={n_new}: without a cache step i re-reads the P + i tokens "
        f"already there, so the total is sum(P .. P+n_new-1) = {expected}; got {work}"
    )


@pytest.mark.parametrize(("prompt_len", "n_new"), SHAPES)
def test_cached_is_linear(impl, prompt_len: int, n_new: int) -> None:
    _, work = _generate(impl, "generate_with_cache", _prompt(prompt_len), n_new)
    expected = prompt_len + n_new
    assert work == expected, (
        f"P={prompt_len}, n_new={n_new}: with a cache every token's K/V is computed once, "
        f"P + n_new = {expected}; got {work}"
    )


def _work_pair(impl, n_new: int) -> tuple[int, int]:
    """(uncached work, cached work) for the worked prompt and ``n_new`` new tokens."""
    if n_new == 1000 and id(impl) in _THOUSAND and _THOUSAND[id(impl)][0] is impl:
        return _THOUSAND[id(impl)][1]
    _, uncached = _generate(impl, "generate_no_cache", list(PROMPT), n_new)
    _, cached = _generate(impl, "generate_with_cache", list(PROMPT), n_new)
    if n_new == 1000:
        _THOUSAND[id(impl)] = (impl, (uncached, cached))
    return uncached, cached


def test_work_ratio_grows_with_length(impl) -> None:
    ratios = []
    for n_new in (10, 100, 1000):
        uncached, cached = _work_pair(impl, n_new)
        assert cached > 0, f"n_new={n_new}: the cached run reported no work at all"
        ratios.append(uncached / cached)
    assert ratios[0] < ratios[1] < ratios[2], (
        f"the no-cache / cached ratio should keep growing with length (it is ~N/2); "
        f"got {ratios} at n_new = 10, 100, 1000"
    )
    assert ratios[2] > 100, f"at n_new=1000 the ratio should exceed 100x, got {ratios[2]:.1f}x"


def test_thousand_tokens_cost_504500_versus_1005(impl) -> None:
    uncached, cached = _work_pair(impl, 1000)
    assert (uncached, cached) == (504_500, 1_005), (
        f"P=5, n_new=1000 should cost 504,500 units uncached and 1,005 cached; "
        f"got {uncached:,} and {cached:,}"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_work_is_the_given_meters_total(impl, strategy: str) -> None:
    meter = KVWork()
    _, work = _generate(impl, strategy, list(PROMPT), 10, meter)
    assert meter.units > 0, (
        f"{strategy} was given a meter but charged nothing to it: use the meter passed in "
        f"(make a fresh KVWork() only when it is None)"
    )
    assert work == meter.units, (
        f"{strategy} should return the meter's total as the work: meter.units is "
        f"{meter.units}, returned {work}"
    )


def test_cached_run_computes_each_position_exactly_once(impl) -> None:
    meter = KVWork()
    tokens, _ = _generate(impl, "generate_with_cache", list(PROMPT), 10, meter)
    positions = [position for _, position in meter.computed]
    expected = list(range(len(tokens)))
    repeated = sorted({p for p in positions if positions.count(p) > 1})
    missing = sorted(set(expected) - set(positions))
    assert sorted(positions) == expected, (
        f"with a cache each position 0..{len(tokens) - 1} has its K/V computed exactly once; "
        f"computed twice or more: {repeated}, never computed: {missing}"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_kv_is_computed_for_the_token_at_its_position(impl, strategy: str) -> None:
    meter = KVWork()
    tokens, _ = _generate(impl, strategy, list(PROMPT), 10, meter)
    wrong = [(t, p) for t, p in meter.computed
             if not 0 <= p < len(tokens) or tokens[p] != t]
    assert not wrong, (
        f"{strategy}: compute_kv(token, position) must name the token that sits at that "
        f"position of the returned sequence (positions from 0); these calls do not: {wrong[:5]}"
    )
