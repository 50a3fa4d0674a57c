"""What the lab gives you: the search settings of ``optimal_k`` and the result of ``reconcile``.

Neither is your work; your functions use them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_K = 30
"""``optimal_k`` searches k = 0, 1, ..., max_k (both ends included) unless told otherwise."""

TIE_RTOL = 1e-9
"""Two speedups within this relative distance of each other are a tie, and the smaller k wins.

Ties are real: at alpha = c, one draft buys exactly as many tokens (1 + alpha) as it costs
(1 + c), so k = 0 and k = 1 give the same speedup, yet the float arithmetic may put either one
an ulp ahead. 1e-9 is far above rounding (~1e-16) and far below any real difference the course
shows (the closest, alpha = 0.7 and c = 0.05, k = 5 against k = 6, is 7e-7 apart)."""


@dataclass(frozen=True)
class Reconciliation:
    """A measured speculative-decoding run set against the speedup model."""

    tokens_per_cycle: float
    """Mean tokens one verify pass yields: the accepted drafts plus the correction or bonus."""
    draft_acceptance_rate: float
    """Accepted drafts / proposed drafts, (tokens_per_cycle - 1) / k: vLLM's "acceptance rate"."""
    alpha: float
    """The per-position acceptance probability under which the i.i.d. model yields
    tokens_per_cycle at this k."""
    predicted_speedup: float
    """What the model promises at that alpha, k and draft cost c."""
    measured_speedup: float
    """What the run delivered (baseline inter-token latency / speculative one)."""
    efficiency: float
    """measured_speedup / predicted_speedup: the share of the promise that survived the
    overheads the model leaves out."""
