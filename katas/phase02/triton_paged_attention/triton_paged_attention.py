"""Kata 02-04 — decode attention over a paged KV cache, in torch and then in Triton. Your work.

One decode step: every sequence in the batch has one new query per head and a history of
``seq_len`` cached tokens scattered over physical blocks. Token ``t`` of sequence ``b`` lives in
block ``block_tables[b, t // block_size]`` at slot ``t % block_size``. Produce, per head,
``softmax(q · Kᵀ · scale) · V`` over exactly those ``seq_len`` tokens.

Shapes (see ``scaffold.py``): ``query`` ``[num_seqs, num_heads, head_dim]`` float16; both
caches ``[num_blocks, block_size, num_kv_heads, head_dim]`` float16; ``block_tables``
``[num_seqs, max_blocks]`` int32; ``seq_lens`` ``[num_seqs]`` int32. Grouped-query attention:
the query heads split into ``num_kv_heads`` equal, consecutive groups, and group ``g`` reads
KV head ``g`` (8 query heads over 2 KV heads: heads 0-3 read KV head 0, heads 4-7 KV head 1).
``scale`` defaults to ``head_dim ** -0.5``. Return a tensor shaped and typed like ``query``.

Do part 1 first: it is your debugger for part 2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def paged_attention_torch(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Part 1: the slow, obviously correct version in plain torch — your oracle for part 2.

    For each sequence ``b`` and query head ``h``: ``softmax(q · Kᵀ · scale) · V`` over exactly
    the first ``seq_lens[b]`` tokens of that sequence, each read from its block through
    ``block_tables[b]``, with ``h`` reading its group's KV head. Slots past ``seq_len`` (the
    rest of the last block) and table entries past the last block may hold anything, NaN
    included, and must not change the answer. Compute in float32; return a tensor shaped,
    typed and placed like ``query``.
    """
    raise NotImplementedError(
        "paged_attention_torch: decode attention through the block tables, in plain torch"
    )


@triton.jit
def paged_attention_kernel(
    out_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    scale,
    stride_q_seq,
    stride_q_head,
    stride_o_seq,
    stride_o_head,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_table_seq,
    QUERIES_PER_KV: tl.constexpr,
    HEADS_PER_PROGRAM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    TILE_BLOCKS: tl.constexpr,
):
    """Part 2: the kernel. Program ``(i, b)`` of the grid ``(num_heads // HEADS_PER_PROGRAM,
    num_seqs)`` writes the output of query heads ``i * HEADS_PER_PROGRAM`` to
    ``(i + 1) * HEADS_PER_PROGRAM - 1`` of sequence ``b``.

    Parameters: the six tensors as pointers (``out_ptr`` shaped like the query); ``scale``;
    strides, in elements, of the query's and the output's sequence and head dimensions, of the
    caches' block, slot and KV-head dimensions (both caches share one layout, and every last
    dimension is contiguous), and of the block tables' rows. Compile-time constants:
    ``QUERIES_PER_KV`` (query heads per KV head), ``HEADS_PER_PROGRAM`` (divides
    ``QUERIES_PER_KV``, so that all of a program's heads share one KV head; 1 is the simplest
    kernel), ``BLOCK_SIZE`` and ``HEAD_DIM`` (powers of two), and ``TILE_BLOCKS`` (KV blocks per
    loop iteration; 1 is the simplest).

    Contract:

    - the result is part 1's, within max |Δ| <= 1e-2 (accumulate in float32);
    - one pass over each sequence, tile by tile, with no contiguous copy of its K/V and no
      full row of scores held at once (an online softmax);
    - no slot at or past ``seq_len`` is read into the result: those slots, and blocks that
      table padding points at, may hold NaN;
    - physical block ids times the block stride exceed the int32 range on caches of a few GiB.

    ``tl.dot`` needs at least 16 rows on each side; a plain elementwise product and
    ``tl.sum`` works for any ``HEADS_PER_PROGRAM``.
    """
    # Your kernel goes here (paged_attention_triton must launch it once it is written).
    pass


def paged_attention_triton(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Part 2: decode attention over the paged cache, computed by :func:`paged_attention_kernel`.

    Same inputs and result as :func:`paged_attention_torch` (within max |Δ| <= 1e-2): a new
    tensor shaped, typed and placed like ``query``; ``scale`` defaults to ``head_dim ** -0.5``.
    ``head_dim`` and ``block_size`` are powers of two (``tl.arange`` needs that). Under the
    Triton interpreter (no GPU) the tensors are on the CPU and the same launch works.
    """
    raise NotImplementedError(
        "paged_attention_triton: launch paged_attention_kernel on a (heads, sequences) grid"
    )
