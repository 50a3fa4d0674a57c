"""Exact tail probabilities for the statistical tests of sampling katas (no scipy needed).

A sampling test compares counts drawn with a fixed seed against what the distribution predicts;
its failure threshold is a p-value, and the false-alarm rate it states is that threshold.
"""

from __future__ import annotations

import math


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > ``x``), exactly: the closed form at df = 1
    or 2, then ``sf(df + 2) = sf(df) + (x/2)^(df/2) e^(-x/2) / Gamma(df/2 + 1)``."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    d = 2 - df % 2
    sf = math.exp(-x / 2) if d == 2 else math.erfc(math.sqrt(x / 2))
    while d < df:
        sf += math.exp(d / 2 * math.log(x / 2) - x / 2 - math.lgamma(d / 2 + 1))
        d += 2
    return sf
