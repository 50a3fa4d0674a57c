"""Reference for kata 04-01 — paged attention with the online softmax, one query row, float64.

Caches are ``[num_blocks, block_size, head_dim]`` (one KV head); token ``t`` of a sequence lives
at ``cache[block_table[t // block_size], t % block_size]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dense_attention(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:  # noqa: N803
    """The oracle: every score at once, max-shifted softmax, weighted sum of ``V``'s rows."""
    if len(K) == 0:
        raise ValueError("dense_attention: no keys; the softmax of zero scores is undefined")
    scores = (K @ q) * (1.0 / np.sqrt(q.shape[0]))
    weights = np.exp(scores - scores.max())  # every exponent <= 0: never overflows
    return (weights @ V) / weights.sum()


def paged_online_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_table: Sequence[int],
    seq_len: int,
) -> np.ndarray:
    """``q`` attends over positions ``0 .. seq_len - 1``, read block by block through the table,
    with one running max, one running denominator and one unnormalised accumulator."""
    block_size = k_cache.shape[1]
    if seq_len <= 0:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    num_logical = -(-seq_len // block_size)  # ceil: the last block may be partial
    if len(block_table) < num_logical:
        raise ValueError(
            f"block_table has {len(block_table)} blocks; seq_len {seq_len} with blocks of "
            f"{block_size} needs {num_logical}"
        )
    scale = 1.0 / np.sqrt(q.shape[0])
    # The kernel's names: m is qk_max, denom is exp_sum, acc is accs.
    m, denom, acc = -np.inf, 0.0, np.zeros(q.shape[0], dtype=np.float64)
    for logical in range(num_logical):
        start = logical * block_size
        valid = min(block_size, seq_len - start)  # rows of this block that are ours
        physical = block_table[logical]
        keys = k_cache[physical, :valid]
        values = v_cache[physical, :valid]
        s = (keys @ q) * scale
        m_new = max(m, float(s.max()))
        # History was summed relative to m; move it to m_new. Before the first block there is
        # no history (m = -inf), and the factor is 0 by definition.
        corr = float(np.exp(m - m_new)) if m != -np.inf else 0.0
        p = np.exp(s - m_new)  # s <= m_new: never exponentiates a positive number
        acc = acc * corr + p @ values
        denom = denom * corr + float(p.sum())
        m = m_new
    return acc / denom
