"""Reference for kata 02-06 — the paged-attention data path in numpy float64.

Cache layout (both caches): ``[num_blocks * block_size, num_kv_heads, head_dim]``, one row per
slot, so slot ``s`` of physical block ``b`` is row ``b * block_size + s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def build_slot_mapping(
    block_table: Sequence[int] | np.ndarray, block_size: int, start: int, num_tokens: int
) -> np.ndarray:
    """Cache rows of the logical positions ``start .. start + num_tokens - 1`` (the write map)."""
    positions = np.arange(start, start + num_tokens, dtype=np.int64)
    table = np.asarray(block_table, dtype=np.int64)
    return table[positions // block_size] * block_size + positions % block_size


def write_kv(
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    new_k: np.ndarray,
    new_v: np.ndarray,
    slot_mapping: np.ndarray,
) -> None:
    """Scatter one step's new K/V rows into the caches, in place (upstream: reshape_and_cache)."""
    k_cache[slot_mapping] = new_k
    v_cache[slot_mapping] = new_v


def paged_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_table: Sequence[int] | np.ndarray,
    seq_len: int,
    block_size: int,
) -> np.ndarray:
    """One decode step: ``q [num_heads, head_dim]`` attends over the sequence's first
    ``seq_len`` tokens, read through ``block_table``. Returns ``[num_heads, head_dim]``."""
    if seq_len > len(block_table) * block_size:
        raise ValueError(f"seq_len {seq_len} exceeds the table's {len(block_table)} blocks")
    # The read map: exactly seq_len rows. The rest of the last block is not this sequence's.
    slots = build_slot_mapping(block_table, block_size, 0, seq_len)
    keys, values = k_cache[slots], v_cache[slots]  # [seq_len, num_kv_heads, head_dim] copies
    num_heads, head_dim = q.shape
    group = num_heads // keys.shape[1]  # query heads per KV head (GQA); 1 for plain MHA
    scale = 1.0 / np.sqrt(head_dim)
    out = np.empty((num_heads, head_dim), dtype=np.float64)
    for head in range(num_heads):
        kv_head = head // group
        scores = (keys[:, kv_head, :] @ q[head]) * scale
        weights = np.exp(scores - scores.max())  # the max shift keeps exp finite
        weights /= weights.sum()
        out[head] = weights @ values[:, kv_head, :]
    return out
