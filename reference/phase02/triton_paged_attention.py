"""Reference solution for kata 02-04: decode attention over a paged KV cache, in torch and Triton.

Two implementations of one function. ``paged_attention_torch`` is the slow, obviously correct
one: a Python loop over each sequence's logical blocks, gathering through the block table.
``paged_attention_triton`` launches ``paged_attention_kernel``, which streams the same blocks
through an online softmax without ever materialising a sequence's K/V contiguously.

Program mapping: one program per (sequence, run of ``HEADS_PER_PROGRAM`` query heads that share
one KV head). The launcher picks the whole GQA group (up to 16 heads), so each program reads its
KV head's blocks once and serves every query head that attends to them; with
``HEADS_PER_PROGRAM = 1`` it is the course's one program per (sequence, head).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# Tuned on an H100 (fp16, head_dim 128, block_size 16): benchmarks/bench_triton_paged_attention.py
_TILE_TOKENS = 128  # KV tokens per loop iteration: 8 blocks of 16, long loads, few iterations
_NUM_WARPS = 8
_NUM_STAGES = 3  # loads of the next tiles in flight while this one is reduced


def paged_attention_torch(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention, the slow way: gather each sequence block by block, then softmax."""
    num_seqs, num_heads, head_dim = query.shape
    block_size, num_kv_heads = key_cache.shape[1], key_cache.shape[2]
    group = num_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(query)
    for b in range(num_seqs):
        seq_len = int(seq_lens[b])
        keys, values = [], []
        for logical in range(math.ceil(seq_len / block_size)):
            physical = int(block_tables[b, logical])
            # The tail block is only partly filled: its slots past seq_len belong to no one.
            used = min(block_size, seq_len - logical * block_size)
            keys.append(key_cache[physical, :used])
            values.append(value_cache[physical, :used])
        k = torch.cat(keys).float().repeat_interleave(group, dim=1)  # [seq_len, heads, dim]
        v = torch.cat(values).float().repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,thd->ht", query[b].float(), k) * scale
        out[b] = torch.einsum("ht,thd->hd", torch.softmax(scores, dim=-1), v).to(query.dtype)
    return out


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
    """One program: ``HEADS_PER_PROGRAM`` query heads of one sequence against their KV head.

    Grid ``(num_heads // HEADS_PER_PROGRAM, num_seqs)``. The heads are the rows of a small
    matrix so that both products run on ``tl.dot`` (which wants at least 16 rows: the spare rows
    hold zeros and are never stored). Each iteration covers ``TILE_BLOCKS`` logical blocks.
    """
    head_run = tl.program_id(0)
    seq = tl.program_id(1)
    first_head = head_run * HEADS_PER_PROGRAM
    kv_head = first_head // QUERIES_PER_KV
    seq_len = tl.load(seq_lens_ptr + seq)

    ROWS: tl.constexpr = 16 if HEADS_PER_PROGRAM < 16 else HEADS_PER_PROGRAM
    TILE: tl.constexpr = TILE_BLOCKS * BLOCK_SIZE
    rows = tl.arange(0, ROWS)
    row_ok = rows < HEADS_PER_PROGRAM
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        q_ptr + seq * stride_q_seq + (first_head + rows)[:, None] * stride_q_head + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )

    # Online softmax state per row: running max, running denominator, unnormalised output.
    m = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l = tl.zeros([ROWS], dtype=tl.float32)  # noqa: E741 - the name the literature uses
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)

    table_row = block_tables_ptr + seq * stride_table_seq
    for start in range(0, seq_len, TILE):
        tok = start + tl.arange(0, TILE)
        valid = tok < seq_len
        # The indirection: logical block tok // BLOCK_SIZE lives in physical block `block`.
        # int64 because block * stride overflows int32 on caches of a few GiB.
        block = tl.load(table_row + tok // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = (
            block * stride_cache_block
            + (tok % BLOCK_SIZE) * stride_cache_slot
            + kv_head * stride_cache_head
        )
        # Masked loads never touch the tail's unused slots (they may hold anything, even NaN).
        k = tl.load(k_cache_ptr + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_cache_ptr + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)

        s = tl.dot(q, tl.trans(k)) * scale  # [ROWS, TILE], fp32 accumulation
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: every tile has a valid token
        alpha = tl.exp(m - m_new)  # rescales what was accumulated under the old max
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)  # noqa: E741
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new

    out = acc / l[:, None]
    tl.store(
        out_ptr
        + seq * stride_o_seq
        + (first_head + rows)[:, None] * stride_o_head
        + dims[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None],
    )


def paged_attention_triton(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention over a paged KV cache with :func:`paged_attention_kernel`."""
    num_seqs, num_heads, head_dim = query.shape
    _, block_size, num_kv_heads, cache_head_dim = key_cache.shape
    if value_cache.shape != key_cache.shape or value_cache.stride() != key_cache.stride():
        raise ValueError("key_cache and value_cache must have the same shape and layout")
    if cache_head_dim != head_dim or num_heads % num_kv_heads:
        raise ValueError(
            f"query {tuple(query.shape)} does not fit a cache of {tuple(key_cache.shape)}"
        )
    for name, size in (("head_dim", head_dim), ("block_size", block_size)):
        if size & (size - 1):
            raise ValueError(f"{name}={size}: tl.arange needs a power of two")
    if query.stride(-1) != 1 or key_cache.stride(-1) != 1:
        raise ValueError("query and the caches need a contiguous last dimension")

    queries_per_kv = num_heads // num_kv_heads
    heads_per_program = math.gcd(queries_per_kv, 16)  # the whole group, up to 16 rows
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(query)
    grid = (num_heads // heads_per_program, num_seqs)
    paged_attention_kernel[grid](
        out,
        query,
        key_cache,
        value_cache,
        block_tables,
        seq_lens,
        scale,
        query.stride(0),
        query.stride(1),
        out.stride(0),
        out.stride(1),
        key_cache.stride(0),
        key_cache.stride(1),
        key_cache.stride(2),
        block_tables.stride(0),
        QUERIES_PER_KV=queries_per_kv,
        HEADS_PER_PROGRAM=heads_per_program,
        BLOCK_SIZE=block_size,
        HEAD_DIM=head_dim,
        TILE_BLOCKS=max(1, _TILE_TOKENS // block_size),
        num_warps=_NUM_WARPS,
        num_stages=_NUM_STAGES,
    )
    return out
