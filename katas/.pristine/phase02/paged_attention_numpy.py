"""Kata 02-06 — paged attention in pure numpy: the write map, the scatter, the gather.

Fill in the three bodies; grade them with
``pytest --impl=mine katas/phase02/paged_attention_numpy``.

Cache layout (both caches): ``[num_blocks * block_size, num_kv_heads, head_dim]`` float64, one
row per slot, so slot ``s`` of physical block ``b`` is row ``b * block_size + s``. A block table
lists a sequence's physical block ids in logical order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def build_slot_mapping(
    block_table: Sequence[int] | np.ndarray, block_size: int, start: int, num_tokens: int
) -> np.ndarray:
    """The cache rows of logical positions ``start, start + 1, ..., start + num_tokens - 1``.

    For position ``t``: ``block_table[t // block_size] * block_size + t % block_size``.
    Return an integer numpy array of length ``num_tokens``. A decode step writes one token at
    ``start = seq_len``; a chunk of a prefill writes a range that starts mid-sequence.
    """
    raise NotImplementedError("build_slot_mapping: block_table[t // bs] * bs + t % bs per token")


def write_kv(
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    new_k: np.ndarray,
    new_v: np.ndarray,
    slot_mapping: np.ndarray,
) -> None:
    """Scatter ``new_k`` / ``new_v`` (``[num_tokens, num_kv_heads, head_dim]``) into the caches.

    Row ``i`` of the new K/V goes to cache row ``slot_mapping[i]``, in place; touch no other
    row. Fancy indexing does it in one line per cache.
    """
    raise NotImplementedError("write_kv: k_cache[slot_mapping] = new_k (and the same for V)")


def paged_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_table: Sequence[int] | np.ndarray,
    seq_len: int,
    block_size: int,
) -> np.ndarray:
    """One decode step of attention over a paged cache; returns ``[num_heads, head_dim]``.

    ``q`` is ``[num_heads, head_dim]``. Recipe, in this order:

    1. gather exactly ``seq_len`` rows of K and V through the table (the slots of positions
       ``0 .. seq_len - 1``) — not every slot of every listed block: the tail of the last
       block holds garbage;
    2. query head ``h`` reads KV head ``h // (num_heads // num_kv_heads)`` (grouped-query
       attention; with as many KV heads as query heads that is ``h``);
    3. per head: ``scores = (K_h @ q_h) * (1 / sqrt(head_dim))``;
       ``w = exp(scores - scores.max())``; ``w /= w.sum()``; ``out_h = w @ V_h``.

    Do not modify the caches.
    """
    raise NotImplementedError("paged_attention: gather seq_len rows, softmax(K q / sqrt(d)) @ V")
