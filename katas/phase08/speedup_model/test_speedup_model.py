"""Spec for kata 08-04: one cycle yields 1 + α + … + α^k tokens for k·c + 1 target steps; the
ratio is the speedup, which can fall below 1, and whose best k can be 0.

Expected values are exact rationals (computed here with ``fractions``), compared with the
"arithmetic" tolerance; the course's numbers (0.357, 2.353, the optimal-k table) are pinned.
The last tests reconcile kata 08-02's measured EAGLE run with corrected arithmetic: the α
that yields 3.8 tokens per cycle at k = 5 is 0.813, not the course's 0.75.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from katas.phase08.speedup_model.scaffold import DEFAULT_MAX_K, Reconciliation
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok


def exact_tokens(alpha: str, k: int) -> float:
    a = Fraction(alpha)
    return float(sum(a**i for i in range(k + 1)))


def exact_speedup(alpha: str, k: int, c: str) -> float:
    a, cost = Fraction(alpha), Fraction(c)
    return float(sum(a**i for i in range(k + 1)) / (k * cost + 1))


def simulate_tokens_per_cycle(alpha: float, k: int, cycles: int, seed: int) -> float:
    """Oracle, independent of the formula: draft k, keep each with probability alpha until the
    first rejection, emit the kept run plus one."""
    kept = np.random.default_rng(seed).random((cycles, k)) < alpha
    run = np.where(kept.all(axis=1), k, np.argmin(kept, axis=1))
    return float((run + 1).mean())


# -- expected tokens per verify -------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "k"), [
    ("0.7", 5), ("0.5", 3), ("0.2", 5), ("0.9", 13), ("0.3", 1), ("0.5", 0), ("0.99", 20),
])
def test_expected_tokens_formula(impl, alpha: str, k: int) -> None:
    got = impl.expected_tokens_per_verify(float(alpha), k)
    assert_close(got, exact_tokens(alpha, k), cause="arithmetic",
                 what=f"expected_tokens_per_verify({alpha}, {k}) = 1 + α + ... + α^{k} "
                      f"({k + 1} terms: the correction or bonus token counts too)")


@pytest.mark.parametrize("k", [0, 1, 2, 5, 10])
def test_expected_tokens_edges(impl, k: int) -> None:
    none = impl.expected_tokens_per_verify(0.0, k)
    assert none == 1.0, (
        f"α = 0: every draft is rejected, and the verify pass still yields its one token "
        f"(never worse than plain decoding per pass): 1.0, got {none!r} for k = {k}")
    everything = impl.expected_tokens_per_verify(1.0, k)
    assert everything == k + 1, (
        f"α = 1: all {k} drafts pass and the bonus token follows: {k + 1}, got {everything!r} "
        "(the closed form is 0 / 0 there)")


@pytest.mark.parametrize(("alpha", "k"), [(0.2, 5), (0.5, 3), (0.7, 5), (0.9, 8), (0.6, 1)])
def test_expected_tokens_matches_simulation(impl, alpha: float, k: int) -> None:
    simulated = simulate_tokens_per_cycle(alpha, k, 200_000, seed=int(alpha * 100) + k)
    got = impl.expected_tokens_per_verify(alpha, k)
    assert abs(got - simulated) < 0.01 * simulated, (
        f"α = {alpha}, k = {k}: 200 000 simulated cycles (i.i.d. acceptance, stop at the "
        f"first rejection, +1 token) average {simulated:.4f} tokens; your formula says "
        f"{got:.4f}, more than 1% away")


def test_diminishing_returns_in_k(impl) -> None:
    for alpha in (0.3, 0.7, 0.9):
        gains = [impl.expected_tokens_per_verify(alpha, k)
                 - impl.expected_tokens_per_verify(alpha, k - 1) for k in range(1, 11)]
        assert_close(gains, [alpha**k for k in range(1, 11)], cause="float64-reordered",
                     what=f"the k-th draft adds α^k tokens (it counts only if all before it "
                          f"pass), α = {alpha}")


@pytest.mark.parametrize(("alpha", "ceiling"), [(0.5, 2.0), (0.7, 1 / 0.3), (0.9, 10.0)])
def test_the_ceiling_is_one_over_one_minus_alpha(impl, alpha: float, ceiling: float) -> None:
    tokens = [impl.expected_tokens_per_verify(alpha, k) for k in (1, 5, 10, 20)]
    assert all(t < ceiling for t in tokens), (
        f"α = {alpha}: no k reaches 1 / (1 - α) = {ceiling:.4f} tokens per cycle, got "
        f"{[round(t, 4) for t in tokens]} for k = 1, 5, 10, 20")
    far = impl.expected_tokens_per_verify(alpha, 400)
    assert_close(far, ceiling, cause="float64-reordered",
                 what=f"α = {alpha}, k = 400: the series has converged to 1 / (1 - α)")
    free = impl.speedup(alpha, 400, 0.0)
    assert free <= ceiling * (1 + 1e-12), (
        f"even free drafts (c = 0) cannot beat the ceiling {ceiling:.4f}×, got {free}")


# -- speedup --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_free_drafter_always_wins(impl, alpha: float) -> None:
    for k in (0, 1, 3, 8):
        got = impl.speedup(alpha, k, 0.0)
        expected = impl.expected_tokens_per_verify(alpha, k)
        assert got == expected and got >= 1.0, (
            f"c = 0 (an n-gram drafter costs nothing): the speedup is the tokens per cycle, "
            f"{expected}, and never below 1; got {got} for α = {alpha}, k = {k}")


def test_spec_decode_can_lose(impl) -> None:
    got = impl.speedup(0.2, 5, 0.5)
    assert_close(got, 0.35712, cause="arithmetic",
                 what="speedup(α=0.2, k=5, c=0.5) = 1.24992 tokens / 3.5 steps: a mediocre "
                      "drafter at half the target's cost makes decoding 2.8× slower")
    best = impl.optimal_k(0.2, 0.5)
    assert best == 0, (
        f"α = 0.2, c = 0.5: every k ≥ 1 loses (k = 1 gives 1.2 / 1.5 = 0.8×), so the best "
        f"configuration is no speculation, optimal_k = 0; got {best}")


def test_eagle_like_numbers(impl) -> None:
    got = impl.speedup(0.7, 5, 0.05)
    assert_close(got, exact_speedup("0.7", 5, "0.05"), cause="arithmetic",
                 what="speedup(α=0.7, k=5, c=0.05) = 2.94117 / 1.25 = 2.352936: cost is "
                      "k·c for the drafts plus 1 for the verify pass")
    assert_close(impl.speedup(0.7, 0, 0.05), 1.0, cause="arithmetic",
                 what="k = 0 is plain decoding: 1 token for 1 step")


# -- optimal k ------------------------------------------------------------------------------------

# Searching k = 0..30, ties to the smaller k (scaffold.TIE_RTOL). Rows: α; columns: c = 0.05, 0.3.
REFERENCE_TABLE = {0.3: (2, 0), 0.5: (3, 1), 0.7: (6, 2), 0.9: (13, 5)}


def test_optimal_k_reference_table(impl) -> None:
    got = {alpha: (impl.optimal_k(alpha, 0.05), impl.optimal_k(alpha, 0.3))
           for alpha in REFERENCE_TABLE}
    assert got == REFERENCE_TABLE, (
        f"optimal_k by α, as (c = 0.05, c = 0.3): expected {REFERENCE_TABLE}, got {got}. "
        "α = 0.3, c = 0.3 is a tie between k = 0 and k = 1 (1.3 tokens for 1.3 steps), "
        "which goes to the smaller k")


def test_the_near_tie_is_a_real_difference(impl) -> None:
    five, six = impl.speedup(0.7, 5, 0.05), impl.speedup(0.7, 6, 0.05)
    assert_close([five, six], [exact_speedup("0.7", 5, "0.05"), exact_speedup("0.7", 6, "0.05")],
                 cause="arithmetic", what="speedup at α=0.7, c=0.05 for k = 5 and k = 6")
    best = impl.optimal_k(0.7, 0.05)
    assert best == 6, (
        f"α = 0.7, c = 0.05: k = 6 gives 2.3529377, k = 5 gives 2.3529360; 7e-7 apart "
        f"(relative), exactly so in rational arithmetic: not a rounding tie. optimal_k is 6, "
        f"got {best}")


@pytest.mark.parametrize(("alpha", "c"), [
    pytest.param(0.3, 0.3, id="alpha_eq_c_0.3"),
    pytest.param(0.15, 0.15, id="alpha_eq_c_0.15-float_puts_k1_an_ulp_ahead"),
    pytest.param(0.36, 0.36, id="alpha_eq_c_0.36-float_puts_k1_an_ulp_ahead"),
    pytest.param(0.0, 0.0, id="useless_and_free-every_k_ties"),
])
def test_exact_ties_go_to_the_smaller_k(impl, alpha: float, c: float) -> None:
    got = impl.optimal_k(alpha, c)
    assert got == 0, (
        f"α = {alpha}, c = {c}: k = 0 and k = 1 give the same speedup in exact arithmetic "
        f"({1 + alpha:g} tokens for {1 + c:g} steps), and a tie goes to the smaller k (within a "
        f"relative 1e-9, so an ulp of rounding cannot decide it); got {got}")


def test_optimal_k_grows_with_alpha_and_shrinks_with_cost(impl) -> None:
    alphas = [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    costs = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    by_alpha = [impl.optimal_k(a, 0.05) for a in alphas]
    assert all(a <= b for a, b in zip(by_alpha, by_alpha[1:], strict=False)), (
        f"a better drafter deserves longer drafts: optimal_k at c = 0.05 for α = {alphas} "
        f"should never decrease, got {by_alpha}")
    by_cost = [impl.optimal_k(0.8, c) for c in costs]
    assert all(a >= b for a, b in zip(by_cost, by_cost[1:], strict=False)), (
        f"dearer drafts deserve shorter ones: optimal_k at α = 0.8 for c = {costs} should "
        f"never increase, got {by_cost}")
    assert by_alpha[0] < by_alpha[-1] and by_cost[0] > by_cost[-1], (
        f"and both actually move: {by_alpha}, {by_cost}")


def test_optimal_k_searches_up_to_max_k_inclusive(impl) -> None:
    # α = 1 with cheap drafts: every extra draft helps, so the search's upper end wins.
    got = (impl.optimal_k(1.0, 0.01), impl.optimal_k(1.0, 0.01, max_k=10),
           impl.optimal_k(1.0, 0.01, max_k=0))
    assert got == (DEFAULT_MAX_K, 10, 0), (
        f"α = 1, c = 0.01: speedup (k + 1) / (0.01 k + 1) grows with k, so optimal_k is the "
        f"largest k searched: {DEFAULT_MAX_K} by default, 10 with max_k=10, 0 with max_k=0 "
        f"(k = 0..max_k, both ends included); got {got}")


# -- reconciling kata 08-02's EAGLE run -----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5, 8])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.56, 0.8, 0.95, 1.0])
def test_alpha_from_tokens_per_cycle_inverts_the_series(impl, alpha: float, k: int) -> None:
    tokens = exact_tokens(str(alpha), k)
    got = impl.alpha_from_tokens_per_cycle(tokens, k)
    assert abs(got - alpha) < 1e-9, (
        f"the α that yields {tokens:.6f} tokens per cycle at k = {k} is {alpha}, got {got}")


def test_reconcile_the_eagle_run(impl) -> None:
    # Kata 08-02's capture: k = 5, "mean acceptance length 2.8 / 5; acceptance rate 56%",
    # ITL 18.2 -> 9.6 ms (~1.9x), EAGLE's draft cost c ≈ 0.05.
    got = impl.reconcile(2.8, 5, 0.05, 1.9)
    assert isinstance(got, Reconciliation), (
        f"reconcile returns scaffold.Reconciliation, got {type(got).__name__}")
    assert_close([got.tokens_per_cycle, got.draft_acceptance_rate], [3.8, 0.56],
                 cause="arithmetic",
                 what="2.8 accepted drafts per cycle: 3.8 tokens per cycle (plus the "
                      "correction/bonus), and 2.8 / 5 = 56% of drafts accepted")
    assert abs(got.alpha - 0.8126) < 1e-3, (
        f"the per-position α solving (1 - α^6) / (1 - α) = 3.8 is 0.813 (the course's 0.75 "
        f"gives only 3.29 tokens); got {got.alpha}")
    assert_close(impl.expected_tokens_per_verify(got.alpha, 5), 3.8, cause="float64-reordered",
                 what="your α put back into the series must give the measured 3.8 tokens")
    assert_close([got.predicted_speedup, got.measured_speedup, got.efficiency],
                 [3.04, 1.9, 0.625], cause="float64-reordered",
                 what="predicted 3.8 / 1.25 = 3.04× against the measured 1.9×: the run kept "
                      "62.5% of what the model promises")


def test_the_courses_alpha_of_0_75_does_not_fit(impl) -> None:
    tokens = impl.expected_tokens_per_verify(0.75, 5)
    assert_close(tokens, 3.2880859375, cause="arithmetic",
                 what="α = 0.75, k = 5 gives 3.288 tokens per cycle, not the measured 3.8")
    predicted = impl.speedup(0.75, 5, 0.05)
    assert_close(predicted, 2.63046875, cause="arithmetic",
                 what="and predicts 2.63× at c = 0.05, not the course's 3.0× (its 3.78 / 1.25 "
                      "used the measured tokens per cycle, not α = 0.75)")


def test_vllms_log_line_counts_the_bonus(impl) -> None:
    # vLLM's "Mean acceptance length" is 1 + accepted / drafts. Read that way, a logged 2.8
    # is 1.8 accepted drafts per cycle: 36% of 5, not 56%.
    got = impl.reconcile(2.8, 5, 0.05, 1.9, includes_bonus=True)
    assert_close([got.tokens_per_cycle, got.draft_acceptance_rate, got.predicted_speedup],
                 [2.8, 0.36, 2.24], cause="float64-reordered",
                 what="with includes_bonus=True, 2.8 is already tokens per cycle: 36% of drafts "
                      "accepted, 2.8 / 1.25 = 2.24× predicted")
    assert abs(got.alpha - 0.6773) < 1e-3, (
        f"the α yielding 2.8 tokens per cycle at k = 5 is 0.677, got {got.alpha}")


def test_optimal_k_at_the_reconciled_alpha(impl) -> None:
    alpha = impl.reconcile(2.8, 5, 0.05, 1.9).alpha
    got = (impl.optimal_k(alpha, 0.05), impl.optimal_k(0.75, 0.05), impl.optimal_k(0.5, 0.05))
    assert got == (8, 7, 3), (
        f"c = 0.05: optimal_k is 8 at the reconciled α = 0.813 (3.22× against 3.04× at "
        f"k = 5), 7 at the course's α = 0.75 (its '5-7'), 3 at α = 0.5 (its '~3'); got {got}")


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_are_refused(impl) -> None:
    with expect_raises(ValueError, "α is a probability", match="alpha"):
        impl.expected_tokens_per_verify(1.2, 5)
    with expect_raises(ValueError, "a negative number of drafts means nothing", match=r"\bk\b"):
        impl.expected_tokens_per_verify(0.5, -1)
    with expect_raises(ValueError, "a draft step cannot cost less than nothing", match=r"\bc\b"):
        impl.speedup(0.5, 3, -0.1)
    with expect_raises(ValueError, "k = 5 yields at most 6 tokens per cycle",
                       match="tokens_per_cycle"):
        impl.alpha_from_tokens_per_cycle(6.5, 5)
    with expect_raises(ValueError, "with no drafts every α yields one token", match=r"\bk\b"):
        impl.alpha_from_tokens_per_cycle(1.0, 0)
    with expect_raises(ValueError, "6 accepted drafts per cycle cannot happen at k = 5",
                       match="mean_acceptance_length"):
        impl.reconcile(6.0, 5, 0.05, 1.9)
    with expect_raises(ValueError, "a speedup is a positive ratio", match="measured_speedup"):
        impl.reconcile(2.8, 5, 0.05, 0.0)
