"""Reference for kata 04-03 — causal prefill attention over a paged KV cache, numpy float64.

One request, one head. The chunk's queries sit at positions ``start_pos .. start_pos + M - 1``;
the cache already holds their K/V (the runner writes before attention runs), so row ``i``
attends over positions ``0 .. start_pos + i``. The causal mask is the loop bound of each row's
block walk: nothing past a row's own position is ever read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dense_causal_attention(Q: np.ndarray, K: np.ndarray, V: np.ndarray,
                           start_pos: int) -> np.ndarray:
    """The oracle: per query row, slice the causal prefix, score, softmax, blend."""
    Q = np.asarray(Q, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    num_rows, head_dim = Q.shape
    if start_pos < 0:
        raise ValueError(f"start_pos must be >= 0, got {start_pos}")
    if len(K) < start_pos + num_rows or len(V) < start_pos + num_rows:
        raise ValueError(
            f"{num_rows} query rows from start_pos {start_pos} need K and V for positions "
            f"0..{start_pos + num_rows - 1}; got {len(K)} keys and {len(V)} values")
    scale = 1.0 / np.sqrt(head_dim)
    out = np.empty((num_rows, head_dim), dtype=np.float64)
    for i in range(num_rows):
        seen = start_pos + i + 1  # positions 0..start_pos+i: the row sees itself
        scores = (K[:seen] @ Q[i]) * scale
        weights = np.exp(scores - scores.max())
        out[i] = (weights @ V[:seen]) / weights.sum()
    return out


def _attend_one_row(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                    block_table: Sequence[int], seq_len: int) -> np.ndarray:
    """Kata 04-01's recurrence: one query over positions ``0 .. seq_len - 1``, streamed one
    logical block at a time with a running max, denominator and accumulator."""
    block_size = k_cache.shape[1]
    scale = 1.0 / np.sqrt(q.shape[0])
    running_max = -np.inf
    denom = 0.0
    acc = np.zeros(q.shape[0], dtype=np.float64)
    for logical in range(-(-seq_len // block_size)):  # ceil: a partial last block counts
        first = logical * block_size
        valid = min(block_size, seq_len - first)  # the loop bound: the mask, nothing more
        physical = block_table[logical]
        keys = k_cache[physical, :valid]
        values = v_cache[physical, :valid]
        scores = (keys @ q) * scale
        new_max = max(running_max, float(scores.max()))
        # exp(-inf) is 0: on the first block the empty history simply drops out.
        correction = np.exp(running_max - new_max)
        weights = np.exp(scores - new_max)
        acc = acc * correction + weights @ values
        denom = denom * correction + weights.sum()
        running_max = new_max
    return acc / denom


def paged_causal_prefill_attention(Q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                                   block_table: Sequence[int], start_pos: int) -> np.ndarray:
    """A chunk of ``M`` query rows over the paged cache; returns ``[M, head_dim]``."""
    Q = np.asarray(Q, dtype=np.float64)
    num_rows, head_dim = Q.shape
    block_size = k_cache.shape[1]
    if start_pos < 0:
        raise ValueError(f"start_pos must be >= 0, got {start_pos}")
    context = start_pos + num_rows  # positions 0..context-1 are in the cache
    needed = -(-context // block_size)
    if len(block_table) < needed:
        raise ValueError(
            f"positions 0..{context - 1} span {needed} blocks of {block_size}; the block table "
            f"lists only {len(block_table)}")
    out = np.empty((num_rows, head_dim), dtype=np.float64)
    for i in range(num_rows):
        # Row i sits at position start_pos + i; its K/V is already in the cache, so +1.
        out[i] = _attend_one_row(Q[i], k_cache, v_cache, block_table, start_pos + i + 1)
    return out
