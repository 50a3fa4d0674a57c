"""Kata 02-04 — decode attention over a paged KV cache, in torch and then in Triton. Your work.

One decode step: every sequence in the batch has one new query per head and a history of
``seq_len`` cached tokens scattered over physical blocks. Token ``t`` of sequence ``b`` lives in
block ``block_tables[b, t // block_size]`` at slot ``t % block_size``. Produce, per head,
``softmax(q · Kᵀ · scale) · V`` over exactly those ``seq_len`` tokens.

Shapes (see ``scaffold.py``): ``query`` ``[num_seqs, num_heads, head_dim]`` float16; both
caches ``[num_blocks, block_size, num_kv_heads, head_dim]`` float16; ``block_tables``
``[num_seqs, max_blocks]`` int32; ``seq_lens`` ``[num_seqs]`` int32. Grouped-query attention:
query head ``h`` reads KV head ``h // (num_heads // num_kv_heads)``. ``scale`` defaults to
``head_dim ** -0.5``. Return a tensor shaped and typed like ``query``.

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
    """Part 1: the slow, obviously correct version in plain torch.

    Recipe, for each sequence ``b``: loop over its logical blocks ``0 .. ceil(seq_len /
    block_size) - 1``; read the physical id from ``block_tables[b, logical]``; take that block's
    keys and values, but only the slots that hold tokens (the last block is usually partly
    filled, and the rest of it is garbage). Concatenate into ``[seq_len, num_kv_heads,
    head_dim]``, convert to float32, repeat each KV head for its group of query heads
    (``repeat_interleave``), then an ordinary softmax attention for the sequence's query.
    Cast the result back to the query's dtype.
    """
    raise NotImplementedError(
        "paged_attention_torch: loop over logical blocks, gather K/V through block_tables, "
        "then softmax(q·Kᵀ·scale)·V"
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
    """Part 2: the kernel. One program handles ``HEADS_PER_PROGRAM`` query heads of one sequence.

    Grid ``(num_heads // HEADS_PER_PROGRAM, num_seqs)``: ``tl.program_id(0)`` picks the run of
    heads, ``tl.program_id(1)`` the sequence. Start with ``HEADS_PER_PROGRAM = 1`` and
    ``TILE_BLOCKS = 1``: one program per (sequence, head), one KV block per iteration. The
    caches share one layout, so one set of strides serves both (the last dimension is
    contiguous: stride 1).

    Recipe:

    1. ``kv_head = head // QUERIES_PER_KV``; ``seq_len = tl.load(seq_lens_ptr + seq)``; load
       the query row(s) (``tl.arange(0, HEAD_DIM)`` along the head dimension).
    2. Online-softmax state in float32: running max ``m = -inf``, denominator ``l = 0``,
       accumulator ``acc = 0`` (``HEAD_DIM`` wide).
    3. Loop ``for start in range(0, seq_len, TILE_BLOCKS * BLOCK_SIZE)``; token offsets
       ``tok = start + tl.arange(0, TILE)`` and ``valid = tok < seq_len``.
    4. Physical block of each token: ``tl.load(block_tables_ptr + seq * stride_table_seq +
       tok // BLOCK_SIZE, mask=valid, other=0)``; convert it to int64 before multiplying by
       ``stride_cache_block`` (large caches overflow int32). Add ``(tok % BLOCK_SIZE) *
       stride_cache_slot + kv_head * stride_cache_head``.
    5. Load the K and V tiles ``[TILE, HEAD_DIM]`` with ``mask=valid[:, None], other=0.0``;
       scores ``s = q·kᵀ · scale`` in float32; set invalid positions to ``-inf``.
    6. ``m_new = max(m, max(s))``; ``alpha = exp(m - m_new)``; ``p = exp(s - m_new)``;
       ``l = l * alpha + sum(p)``; ``acc = acc * alpha + p · v``; ``m = m_new``.
    7. Store ``acc / l`` as the output's dtype.

    For ``HEADS_PER_PROGRAM > 1`` (a GQA group sharing one KV head), make the heads the rows
    of a matrix and use ``tl.dot``, which needs at least 16 rows: pad with masked rows.
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
    """Part 2: allocate the output and launch :func:`paged_attention_kernel`.

    Recipe: read the sizes off the shapes; check that ``head_dim`` and ``block_size`` are
    powers of two (``tl.arange`` needs them); ``out = torch.empty_like(query)``; launch
    ``paged_attention_kernel[grid](...)`` with ``grid = (num_heads // heads_per_program,
    num_seqs)``, the strides from ``tensor.stride(i)``, and the ``tl.constexpr`` arguments by
    keyword. Return ``out``. Under the Triton interpreter (no GPU) the tensors are on the CPU
    and the same launch works.
    """
    raise NotImplementedError(
        "paged_attention_triton: launch paged_attention_kernel on a (heads, sequences) grid"
    )
