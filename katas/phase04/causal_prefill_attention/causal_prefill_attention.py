"""Kata 04-03 — causal prefill attention over a paged KV cache (numpy, float64).

Fill in the two bodies; grade them with
``pytest --impl=mine katas/phase04/causal_prefill_attention``.

One request, one head. A prefill chunk is ``M`` query rows at consecutive positions
``start_pos .. start_pos + M - 1``. The model runner has already written the chunk's own K/V,
so when attention runs the cache holds positions ``0 .. start_pos + M - 1``. Cache layout:
``[num_blocks, block_size, head_dim]``; position ``p`` lives at
``cache[block_table[p // block_size], p % block_size]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dense_causal_attention(Q: np.ndarray, K: np.ndarray, V: np.ndarray,
                           start_pos: int) -> np.ndarray:
    """Causal attention of a chunk over contiguous keys and values: your oracle.

    ``Q`` is ``[M, d]``: row ``i`` is the query at position ``start_pos + i``. ``K`` and ``V``
    are ``[N, d]`` in position order, with ``N >= start_pos + M``. Returns ``[M, d]`` float64:
    row ``i`` is scaled dot-product attention (scores scaled by ``1 / sqrt(d)``, softmax,
    weighted sum of values) of ``Q[i]`` over positions ``0 .. start_pos + i``, its own position
    included. Rows of ``K`` / ``V`` after a row's position (the rest of the chunk, or anything
    past it) must not change that row.

    Raises ``ValueError`` when ``start_pos`` is negative (the message names ``start_pos``) or
    when ``K`` or ``V`` has fewer than ``start_pos + M`` rows.

    Example: ``start_pos = 5``, ``M = 4`` over a 9-token ``K``: the rows attend over 6, 7, 8 and
    9 tokens.
    """
    raise NotImplementedError("dense_causal_attention: each query over its causal prefix")


def paged_causal_prefill_attention(Q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                                   block_table: Sequence[int], start_pos: int) -> np.ndarray:
    """The same result as ``dense_causal_attention``, read through the block table.

    ``Q`` is ``[M, d]`` (``M >= 1``), row ``i`` at position ``start_pos + i``; ``k_cache`` and
    ``v_cache`` are ``[num_blocks, block_size, d]`` and hold positions
    ``0 .. start_pos + M - 1`` where ``block_table`` (logical block -> physical block) puts
    them. Returns ``[M, d]`` float64: row ``i`` attends over positions ``0 .. start_pos + i``
    (scale ``1 / sqrt(d)``). This is ``mini_vllm.attention.ChunkAttention``, the signature the
    engine calls once per request and head.

    Contract:

    - the causal mask is a bound on what each row reads, not a matrix: slots past the context
      (the rest of the last block, blocks the table lists after it, blocks it does not list)
      may hold anything, NaN included, and must not reach any row;
    - a row's result depends only on its position and the cache, not on where its chunk
      starts: the rows of a 12-token prefill equal those of the same tokens run as 5 + 7;
    - finite for scores in the thousands;
    - the caches are read, never written.

    Raises ``ValueError`` when ``start_pos`` is negative (the message names ``start_pos``) or
    when the table has fewer than ``ceil((start_pos + M) / block_size)`` blocks (the message
    says how many blocks are needed). Extra entries after those are ignored.
    """
    raise NotImplementedError(
        "paged_causal_prefill_attention: each row over its prefix, through the block table")
