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

    ``block_table[i]`` is the physical block that holds the sequence's logical block ``i``
    (its positions ``i * block_size .. (i + 1) * block_size - 1``, in order). Return an integer
    numpy array of length ``num_tokens`` (empty for 0). A decode step writes one token at
    ``start = seq_len``; a chunk of a prefill writes a range that starts mid-sequence.

    Example: table ``[7, 2, 9]``, blocks of 4, positions 2..5 live in rows ``[30, 31, 8, 9]``.
    """
    raise NotImplementedError("build_slot_mapping: the cache rows of a range of positions")


def write_kv(
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    new_k: np.ndarray,
    new_v: np.ndarray,
    slot_mapping: np.ndarray,
) -> None:
    """Scatter ``new_k`` / ``new_v`` (``[num_tokens, num_kv_heads, head_dim]``) into the caches.

    Row ``i`` of the new K/V goes to cache row ``slot_mapping[i]``, in place; no other row
    changes. Returns nothing.
    """
    raise NotImplementedError("write_kv: scatter the new K/V rows into the caches")


def paged_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_table: Sequence[int] | np.ndarray,
    seq_len: int,
    block_size: int,
) -> np.ndarray:
    """One decode step of attention over a paged cache; returns ``[num_heads, head_dim]``.

    ``q`` is ``[num_heads, head_dim]``; the caches hold the sequence's first ``seq_len``
    tokens at the rows the block table gives them. Output head ``h`` is ordinary scaled
    dot-product attention of ``q[h]`` over exactly those ``seq_len`` tokens (scores scaled by
    ``1 / sqrt(head_dim)``, softmax, weighted sum of values), float64, equal to attention over
    a contiguous copy of the same keys and values.

    Contract:

    - the slots of the last block past ``seq_len`` belong to nobody and may hold anything
      (the tests fill them with 1e6): they must not change the answer;
    - grouped-query attention: the query heads split into ``num_kv_heads`` equal, consecutive
      groups, and group ``g`` reads KV head ``g`` (with as many KV heads as query heads, head
      ``h`` reads KV head ``h``);
    - finite for scores in the thousands (no ``exp`` overflow);
    - the caches are read, never modified.

    The course's worked example: one head, ``q = [1, 0]``, keys ``[1,0] [0,1] [1,0]``, values
    ``[10,0] [0,10] [5,5]``: weights about 0.40 / 0.20 / 0.40, output about ``[6, 4]``.
    """
    raise NotImplementedError("paged_attention: one decode step of attention through the table")
