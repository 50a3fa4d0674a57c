"""Kata 04-01 — paged attention with the online softmax: one query row, one head, float64.

Fill in the two bodies; grade them with
``pytest --impl=mine katas/phase04/paged_online_attention``.

Cache layout (both caches): ``[num_blocks, block_size, head_dim]`` float64, one KV head. A block
table lists a sequence's physical block ids in logical order, so token ``t`` lives at
``cache[block_table[t // block_size], t % block_size]``. ``block_size`` is
``k_cache.shape[1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dense_attention(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:  # noqa: N803
    """The oracle: ``softmax(K q / sqrt(d)) V`` over contiguous keys and values.

    ``q`` is ``(d,)``; ``K`` and ``V`` are ``(N, d)``, in logical order. Returns the ``(d,)``
    float64 row: every token's score is its key dotted with ``q`` and scaled by
    ``1 / sqrt(d)``; the weights are the softmax of the scores; the output is the weighted sum
    of the value rows. Finite for scores in the thousands (``exp`` must not overflow).
    ``N = 0`` raises ``ValueError`` (a softmax over nothing is undefined).

    The course's worked example: ``q = [1, 0]``, keys ``[1,0] [0,1] [1,0]``, values
    ``[10,0] [0,10] [5,5]``: weights 0.4011 / 0.1978 / 0.4011, output about ``[6.02, 3.98]``.
    """
    raise NotImplementedError("dense_attention: softmax attention over contiguous K and V")


def paged_online_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_table: Sequence[int],
    seq_len: int,
) -> np.ndarray:
    """``q`` attends over the sequence's positions ``0 .. seq_len - 1``, streamed block by block.

    Same answer as :func:`dense_attention` over the sequence's keys and values (to float64
    rounding), computed in one pass over the logical blocks that cover ``[0, seq_len)``,
    each read from the physical block ``block_table`` names for it, keeping only a running
    summary of the blocks already seen: no score vector of length ``seq_len`` is built. The
    signature is ``mini_vllm.attention.RowAttention``'s, so the engine can run a real model on it.

    Contract:

    - reads exactly rows ``0 .. seq_len - 1``: the free slots of the last block, blocks the
      table does not list, and table entries past the blocks ``seq_len`` needs may hold
      anything (NaN, 1e9) and must not change the answer;
    - each of those blocks' keys and values is read once;
    - finite and exact for any finite scores, from around ``-1e6`` to the thousands, including
      all-equal ones; ``seq_len = 1`` returns that token's value row;
    - returns a ``(d,)`` float64 row; the caches are read, never modified;
    - ``seq_len < 1`` raises ``ValueError`` naming ``seq_len``; a table with fewer than
      ``ceil(seq_len / block_size)`` entries raises ``ValueError`` naming ``block_table``.
    """
    raise NotImplementedError(
        "paged_online_attention: online-softmax attention read through the block table")
