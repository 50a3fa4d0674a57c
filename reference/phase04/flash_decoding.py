"""Reference for kata 04-04 — flash-decoding: attend to key ranges apart, merge the summaries.

A summary of attention over a key range is ``(m, denom, acc)``: the largest score, the sum of
``exp(score - m)``, and the same weights times the values, *not* divided. Summaries of disjoint
ranges merge into the summary of their union; only the last step divides.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: ``(m, denom, acc)``: max score, sum of exp(score - m), unnormalized weighted sum of values.
Summary = tuple[float, float, np.ndarray]


def attend_partial(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> Summary:
    """The summary of ``q`` attending to the key range ``K [n, d]`` / ``V [n, d_v]``."""
    if len(K) == 0:
        # The empty range: the merge's identity (it adds nothing, whatever it is merged with).
        return -np.inf, 0.0, np.zeros(V.shape[1:], dtype=np.result_type(q, V))
    scores = (K @ q) * (1.0 / np.sqrt(q.shape[0]))
    m = float(scores.max())
    weights = np.exp(scores - m)  # every exponent <= 0: nothing overflows
    return m, float(weights.sum()), weights @ V


def merge_partials(summaries: Iterable[Summary]) -> Summary:
    """The summary of the union of disjoint key ranges, from their summaries (any order)."""
    summaries = list(summaries)
    if not summaries:
        raise ValueError("merge_partials needs at least one summary (it cannot tell acc's size)")
    m_star = max(m for m, _, _ in summaries)
    acc = np.zeros_like(summaries[0][2])
    if m_star == -np.inf:
        return -np.inf, 0.0, acc  # only empty ranges: their union is empty too
    denom = 0.0
    for m, part_denom, part_acc in summaries:
        rescale = np.exp(m - m_star)  # <= 1; exactly 0 for an empty range (m = -inf)
        denom += part_denom * rescale
        acc = acc + part_acc * rescale
    return m_star, float(denom), acc


def finalize(summary: Summary) -> np.ndarray:
    """The attention output a summary stands for: ``acc / denom``."""
    _, denom, acc = summary
    if not denom > 0:
        raise ValueError("finalize: the summary covers no keys (denom is 0); there is no output")
    return acc / denom


def partitioned_attention(q: np.ndarray, K: np.ndarray, V: np.ndarray,
                          num_partitions: int) -> np.ndarray:
    """Attention of ``q`` over ``K`` / ``V``, computed as ``num_partitions`` independent ranges."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
    if len(K) == 0:
        raise ValueError("partitioned_attention: K is empty; attention over no keys is undefined")
    k_parts, v_parts = np.array_split(K, num_partitions), np.array_split(V, num_partitions)
    # More partitions than keys leaves some ranges empty: they have nothing to say, skip them.
    summaries = [attend_partial(q, k, v) for k, v in zip(k_parts, v_parts, strict=True) if len(k)]
    return finalize(merge_partials(summaries))
