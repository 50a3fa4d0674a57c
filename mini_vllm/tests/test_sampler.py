from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import Sampler, SamplingParams, apply_top_k, apply_top_p, softmax


def test_softmax_is_stable_for_huge_logits() -> None:
    p = softmax(np.array([1000.0, 1001.0, 999.0]))
    assert np.isfinite(p).all() and abs(p.sum() - 1.0) < 1e-12 and p.argmax() == 1


def test_greedy_ignores_every_other_knob_and_takes_lowest_index_on_ties() -> None:
    logits = np.array([0.0, 3.0, 3.0, 1.0])
    params = SamplingParams(temperature=0.0, top_k=1, top_p=0.01, seed=123)
    assert Sampler().sample(logits, params) == 1


def test_top_k_keeps_exactly_k_and_disables_at_edges() -> None:
    logits = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    kept = apply_top_k(logits, 2)
    assert np.isfinite(kept).sum() == 2 and set(np.flatnonzero(np.isfinite(kept))) == {3, 4}
    assert np.array_equal(apply_top_k(logits, 0), logits)
    assert np.array_equal(apply_top_k(logits, 5), logits)


def test_top_p_keeps_the_crossing_token() -> None:
    logits = np.log(np.array([0.4, 0.2, 0.4]))
    kept = apply_top_p(logits, 0.5)
    assert list(np.isfinite(kept)) == [True, False, True]
    assert np.array_equal(apply_top_p(logits, 1.0), logits)


def test_seeded_draw_is_one_rng_choice_over_the_final_distribution() -> None:
    rng = np.random.default_rng(0)
    for seed in range(20):
        logits = rng.normal(size=257) * 3
        params = SamplingParams(temperature=0.7, top_k=40, top_p=0.8, seed=seed)
        probs = softmax(apply_top_p(apply_top_k(logits / 0.7, 40), 0.8))
        expected = int(np.random.default_rng(seed).choice(probs.size, p=probs))
        assert Sampler().sample(logits, params) == expected


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.0])
def test_sampled_token_always_survives_the_filters(temperature: float) -> None:
    logits = np.random.default_rng(1).normal(size=257)
    allowed = set(np.flatnonzero(np.isfinite(apply_top_k(logits / temperature, 5))))
    for seed in range(30):
        params = SamplingParams(temperature=temperature, top_k=5, seed=seed)
        assert Sampler().sample(logits, params) in allowed
