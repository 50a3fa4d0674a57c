"""Reference for kata 08-04 — the speculative-decoding speedup model.

One cycle drafts k tokens (cost k·c, in target-step units) and verifies them in one target pass
(cost 1). Each position is kept with probability alpha, independently, until the first
rejection, and the pass always adds one token (the correction, or the bonus when all k pass).
"""

from __future__ import annotations

from katas.phase08.speedup_model.scaffold import DEFAULT_MAX_K, TIE_RTOL, Reconciliation


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is a probability, in [0, 1]; got {alpha!r}")


def _check_count(value: int, name: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def expected_tokens_per_verify(alpha: float, k: int) -> float:
    """E[tokens per cycle] = 1 + alpha + ... + alpha^k: token i counts iff drafts 1..i all pass."""
    _check_alpha(alpha)
    _check_count(k, "k")
    if alpha == 1.0:
        return float(k + 1)  # the closed form's 0 / 0: every draft passes, plus the bonus
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def speedup(alpha: float, k: int, c: float) -> float:
    """Tokens per cycle over the cycle's cost (k drafts at c each, one verify at 1)."""
    if c < 0:
        raise ValueError(f"c (draft step cost / target step cost) must be >= 0, got {c!r}")
    return expected_tokens_per_verify(alpha, k) / (k * c + 1.0)


def optimal_k(alpha: float, c: float, max_k: int = DEFAULT_MAX_K) -> int:
    """The k in 0..max_k with the largest speedup; the smallest such k on a tie (TIE_RTOL)."""
    _check_count(max_k, "max_k")
    values = [speedup(alpha, k, c) for k in range(max_k + 1)]
    best = max(values)
    return next(k for k, s in enumerate(values) if s >= best * (1.0 - TIE_RTOL))


def alpha_from_tokens_per_cycle(tokens_per_cycle: float, k: int) -> float:
    """The alpha whose expected tokens per cycle at this k is ``tokens_per_cycle``."""
    _check_count(k, "k", minimum=1)  # with no drafts every alpha yields 1 token
    if not 1.0 <= tokens_per_cycle <= k + 1:
        raise ValueError(f"tokens_per_cycle must lie in [1, k + 1] = [1, {k + 1}], got "
                         f"{tokens_per_cycle!r}")
    if tokens_per_cycle == k + 1:
        return 1.0  # only alpha = 1 keeps every draft (bisection would stop an ulp short)
    # The series is strictly increasing in alpha on [0, 1]: bisect to the last bit.
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if expected_tokens_per_verify(mid, k) < tokens_per_cycle:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def reconcile(mean_acceptance_length: float, k: int, c: float, measured_speedup: float, *,
              includes_bonus: bool = False) -> Reconciliation:
    """Set a measured run (its logged mean acceptance length and speedup) against the model."""
    if not measured_speedup > 0:
        raise ValueError(f"measured_speedup must be > 0, got {measured_speedup!r}")
    _check_count(k, "k", minimum=1)
    tokens = mean_acceptance_length if includes_bonus else mean_acceptance_length + 1.0
    if not 1.0 <= tokens <= k + 1:
        raise ValueError(
            f"mean_acceptance_length {mean_acceptance_length!r} means {tokens!r} tokens per "
            f"cycle, outside [1, k + 1] = [1, {k + 1}] (includes_bonus={includes_bonus})")
    alpha = alpha_from_tokens_per_cycle(tokens, k)
    predicted = speedup(alpha, k, c)
    return Reconciliation(
        tokens_per_cycle=tokens,
        draft_acceptance_rate=(tokens - 1.0) / k,
        alpha=alpha,
        predicted_speedup=predicted,
        measured_speedup=measured_speedup,
        efficiency=measured_speedup / predicted,
    )
