"""Kata 08-04 — the speculative-decoding speedup model.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase08/speedup_model``.

One cycle: a drafter proposes ``k`` tokens, each costing ``c`` (draft step time / target step
time), and the target verifies them all in one pass costing 1. Each drafted position is accepted
with probability ``alpha``, independently, until the first rejection; the verify pass always adds
one token of its own (the correction at the rejected position, or the bonus when all ``k`` pass).
"""

from __future__ import annotations

from katas.phase08.speedup_model.scaffold import (  # noqa: F401  (TIE_RTOL: what you will need)
    DEFAULT_MAX_K,
    TIE_RTOL,
    Reconciliation,
)


def expected_tokens_per_verify(alpha: float, k: int) -> float:
    """Expected tokens one cycle of ``k`` drafts yields (``k`` an integer >= 0).

    Between 1 (``alpha = 0``: only the verify pass's own token) and ``k + 1`` (``alpha = 1``:
    every draft plus the bonus; make sure this case returns exactly ``k + 1``). Example:
    ``alpha = 0.7, k = 5`` → 2.94117.

    Raises ``ValueError`` naming ``alpha`` outside [0, 1] and naming ``k`` when it is negative.
    """
    raise NotImplementedError("expected_tokens_per_verify: tokens one verify pass yields")


def speedup(alpha: float, k: int, c: float) -> float:
    """Tokens per unit of target-step time, relative to plain decoding (1 token per step).

    A cycle costs its ``k`` draft steps plus the one verify pass. ``k = 0`` is plain decoding
    (1.0). Examples: ``(0.7, 5, 0.05)`` → 2.352936; ``(0.2, 5, 0.5)`` → 0.35712, a loss. With
    ``c = 0`` it equals :func:`expected_tokens_per_verify`. Raises ``ValueError`` naming ``c``
    when ``c < 0`` (and as :func:`expected_tokens_per_verify` for ``alpha`` and ``k``).
    """
    raise NotImplementedError("speedup: tokens per cycle over the cycle's cost")


def optimal_k(alpha: float, c: float, max_k: int = DEFAULT_MAX_K) -> int:
    """The draft length ``k`` in ``0, 1, ..., max_k`` (both ends included) with the best speedup.

    0 means "do not speculate". Ties: every ``k`` whose speedup is within a relative
    ``TIE_RTOL`` of the best counts as best, and the smallest of them is returned. Examples:
    ``(0.2, 0.5)`` → 0; ``(0.7, 0.05)`` → 6; ``(0.3, 0.3)`` → 0 (``k = 0`` and ``k = 1`` tie).
    Raises ``ValueError`` naming ``max_k`` when it is negative.
    """
    raise NotImplementedError("optimal_k: the draft length with the best speedup")


def alpha_from_tokens_per_cycle(tokens_per_cycle: float, k: int) -> float:
    """The ``alpha`` in [0, 1] at which :func:`expected_tokens_per_verify` ``(alpha, k)`` equals
    ``tokens_per_cycle``: the per-position acceptance that explains a measured mean.

    Accurate to 1e-9 or better (the tests put your answer back into the series). 1 token → 0.0;
    ``k + 1`` tokens → 1.0; 3.8 at ``k = 5`` → about 0.813. Raises ``ValueError`` naming ``k``
    when ``k < 1`` (with no drafts every alpha yields 1 token) and naming ``tokens_per_cycle``
    when it lies outside ``[1, k + 1]``.
    """
    raise NotImplementedError("alpha_from_tokens_per_cycle: back-solve alpha from a mean")


def reconcile(mean_acceptance_length: float, k: int, c: float, measured_speedup: float, *,
              includes_bonus: bool = False) -> Reconciliation:
    """Set a measured run against the model; returns ``scaffold.Reconciliation``.

    ``mean_acceptance_length`` is the run's logged mean: accepted drafts per cycle when
    ``includes_bonus`` is False (the course's convention: its "2.8 / 5" is 56% of 5 drafts), or
    tokens per cycle when True (vLLM's log line adds the 1 itself). Every field is described in
    ``Reconciliation``; ``predicted_speedup`` is :func:`speedup` at the back-solved ``alpha``.

    Course numbers: ``reconcile(2.8, 5, 0.05, 1.9)`` → 3.8 tokens per cycle, 56% of drafts
    accepted, alpha ≈ 0.813, 3.04× predicted, efficiency 0.625.

    Raises ``ValueError`` naming ``measured_speedup`` when it is not > 0, and naming
    ``mean_acceptance_length`` when the tokens per cycle it implies fall outside
    ``[1, k + 1]``.
    """
    raise NotImplementedError("reconcile: a measured run against the model")

