"""Reference solution for kata 04-05: split-KV (flash-decoding) paged attention in Triton.

Kata 02-04's kernel gives one program to each (sequence, KV head) and walks the whole context
in it. At batch 1 that is 8 programs for 132 SMs. Here the context of each sequence is cut into
``num_splits`` partitions of whole blocks; a first kernel (:func:`split_kv_partials_kernel`)
gives each (sequence, KV head, partition) its own program, which writes the partition's softmax
summary ``(m, l, acc)`` unnormalised; a second kernel (:func:`split_kv_reduce_kernel`) merges
the summaries of one (sequence, head) into the output. With one partition there is nothing to
merge, and the first kernel writes the output itself: that is kata 02-04's kernel again.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from katas.phase04.triton_split_kv_decode.scaffold import multiprocessor_count

# Stage-1 launch configs (tokens per tile, warps, pipeline stages), tuned on an H200 (fp16,
# head_dim 128, block_size 16): benchmarks/bench_triton_paged_attention.py --graphs --sweep-splits
_ONE_PASS_CONFIG = (128, 8, 3)  # one split: kata 02-04's kernel, with its config
_SPLIT_CONFIG = (64, 4, 3)  # short partitions, several programs per SM
_REDUCE_WARPS = 4

# The documented rule of choose_num_splits, measured on an H200 (the same sweep).
PROGRAMS_PER_SM = 2  # at least this many stage-1 programs per SM when the batch is small
MIN_SPLIT_TOKENS = 64  # no partition shorter than one tile of the split config


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """How many partitions to cut every sequence into (the rule is documented in the stub)."""
    streams = num_seqs * num_kv_heads  # K/V streams; each is read once, split or not
    if streams >= num_sms:
        return 1  # a full wave already: splitting only adds the merge
    # A power of two: whole waves of programs, and power-of-two contexts cut evenly.
    wanted = triton.next_power_of_2(math.ceil(PROGRAMS_PER_SM * num_sms / streams))
    longest = max(1, max_context // MIN_SPLIT_TOKENS)
    return min(wanted, longest)


@triton.jit
def split_kv_partials_kernel(
    out_ptr,
    max_logits_ptr,
    exp_sums_ptr,
    acc_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    scale,
    num_heads,
    num_splits,
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
    WRITE_OUTPUT: tl.constexpr,
):
    """Stage 1: one program per (run of query heads sharing a KV head, sequence, partition).

    Partition ``split`` of a sequence with ``n`` blocks is the run of ``ceil(n / num_splits)``
    logical blocks starting at block ``split * ceil(n / num_splits)``, cut at ``seq_len``.
    """
    head_run = tl.program_id(0)
    seq = tl.program_id(1)
    split = tl.program_id(2)
    first_head = head_run * HEADS_PER_PROGRAM
    kv_head = first_head // QUERIES_PER_KV
    seq_len = tl.load(seq_lens_ptr + seq)

    # This program's token range [start, end): whole blocks, the last one cut at seq_len.
    num_blocks = (seq_len + BLOCK_SIZE - 1) // BLOCK_SIZE
    blocks_per_split = (num_blocks + num_splits - 1) // num_splits
    start = split * blocks_per_split * BLOCK_SIZE
    end = tl.minimum(start + blocks_per_split * BLOCK_SIZE, seq_len)

    ROWS: tl.constexpr = 16 if HEADS_PER_PROGRAM < 16 else HEADS_PER_PROGRAM
    # tl.dot's operand type: the cache's, but bfloat16 goes in as float32 (scaffold.tile_dot
    # says why); written inline because a nested jit call is slow under the interpreter.
    CACHE: tl.constexpr = k_cache_ptr.dtype.element_ty
    DOT: tl.constexpr = tl.float32 if CACHE == tl.bfloat16 else CACHE
    TILE: tl.constexpr = TILE_BLOCKS * BLOCK_SIZE
    rows = tl.arange(0, ROWS)
    row_ok = rows < HEADS_PER_PROGRAM
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        q_ptr + seq * stride_q_seq + (first_head + rows)[:, None] * stride_q_head + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    ).to(DOT)

    # The partition's summary: running max, sum of exponentials, unnormalised output.
    # An empty partition (start >= end) keeps (-inf, 0, 0): it weighs nothing in the merge.
    m = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l = tl.zeros([ROWS], dtype=tl.float32)  # noqa: E741 - the name the literature uses
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)

    table_row = block_tables_ptr + seq * stride_table_seq
    for tile_start in range(start, end, TILE):
        tok = tile_start + tl.arange(0, TILE)
        valid = tok < end  # the partition's end, which is never past seq_len
        # int64: block * stride passes 2**31 on caches of a few GiB.
        block = tl.load(table_row + tok // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = (
            block * stride_cache_block
            + (tok % BLOCK_SIZE) * stride_cache_slot
            + kv_head * stride_cache_head
        )
        k = tl.load(k_cache_ptr + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_cache_ptr + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)

        s = tl.dot(q, tl.trans(k.to(DOT))) * scale  # [ROWS, TILE], fp32 accumulation
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: every tile has a valid token
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)  # noqa: E741
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype).to(DOT), v.to(DOT))
        m = m_new

    heads = first_head + rows
    if WRITE_OUTPUT:
        # One partition holds the whole sequence: normalise here and skip stage 2.
        out = acc / l[:, None]
        tl.store(
            out_ptr + seq * stride_o_seq + heads[:, None] * stride_o_head + dims[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None],
        )
    else:
        # Partials are contiguous [num_seqs, num_heads, num_splits(, HEAD_DIM)], float32.
        part = (seq * num_heads + heads) * num_splits + split
        tl.store(max_logits_ptr + part, m, mask=row_ok)
        tl.store(exp_sums_ptr + part, l, mask=row_ok)
        tl.store(acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=row_ok[:, None])


@triton.jit
def split_kv_reduce_kernel(
    out_ptr,
    max_logits_ptr,
    exp_sums_ptr,
    acc_ptr,
    num_heads,
    num_splits,
    stride_o_seq,
    stride_o_head,
    HEAD_DIM: tl.constexpr,
    SPLITS_POW2: tl.constexpr,
):
    """Stage 2: one program per (head, sequence) merges that head's ``num_splits`` summaries."""
    head = tl.program_id(0)
    seq = tl.program_id(1)
    splits = tl.arange(0, SPLITS_POW2)
    used = splits < num_splits
    dims = tl.arange(0, HEAD_DIM)
    part = (seq * num_heads + head) * num_splits + splits

    m = tl.load(max_logits_ptr + part, mask=used, other=float("-inf"))
    l = tl.load(exp_sums_ptr + part, mask=used, other=0.0)  # noqa: E741
    acc = tl.load(acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], mask=used[:, None], other=0.0)

    # Bring every summary to the common max; empty partitions (m = -inf) get weight 0.
    m_all = tl.max(m, axis=0)  # finite: partition 0 always holds token 0
    weight = tl.exp(m - m_all)
    l_all = tl.sum(l * weight, axis=0)
    out = tl.sum(acc * weight[:, None], axis=0) / l_all
    tl.store(
        out_ptr + seq * stride_o_seq + head * stride_o_head + dims,
        out.to(out_ptr.dtype.element_ty),
    )


def _check_inputs(query, key_cache, value_cache) -> None:
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


def _launch_stage1(query, key_cache, value_cache, block_tables, seq_lens, num_splits, scale,
                   out, partials) -> None:
    """Stage 1 on the grid (head runs, sequences, partitions); ``partials`` None: one
    partition, written to ``out`` normalised."""
    num_seqs, num_heads, _ = query.shape
    block_size, num_kv_heads = key_cache.shape[1], key_cache.shape[2]
    queries_per_kv = num_heads // num_kv_heads
    heads_per_program = math.gcd(queries_per_kv, 16)  # the whole group, up to 16 rows
    write_output = partials is None
    tile_tokens, num_warps, num_stages = _ONE_PASS_CONFIG if write_output else _SPLIT_CONFIG
    # The pointers a program does not write still need a tensor behind them.
    max_logits, exp_sums, acc = (out, out, out) if write_output else partials
    grid = (num_heads // heads_per_program, num_seqs, num_splits)
    split_kv_partials_kernel[grid](
        out, max_logits, exp_sums, acc,
        query, key_cache, value_cache, block_tables, seq_lens,
        scale, num_heads, num_splits,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2), block_tables.stride(0),
        QUERIES_PER_KV=queries_per_kv,
        HEADS_PER_PROGRAM=heads_per_program,
        BLOCK_SIZE=block_size,
        HEAD_DIM=key_cache.shape[3],
        TILE_BLOCKS=max(1, tile_tokens // block_size),
        WRITE_OUTPUT=write_output,
        num_warps=num_warps,
        num_stages=num_stages,
    )


def _partials(query, key_cache, value_cache, block_tables, seq_lens, num_splits, scale):
    """Stage 1 into one fresh float32 buffer (one allocation: launches are CPU-bound)."""
    num_seqs, num_heads, head_dim = query.shape
    rows = num_seqs * num_heads * num_splits
    buffer = torch.empty(rows * (head_dim + 2), dtype=torch.float32, device=query.device)
    max_logits = buffer[:rows].view(num_seqs, num_heads, num_splits)
    exp_sums = buffer[rows : 2 * rows].view(num_seqs, num_heads, num_splits)
    acc = buffer[2 * rows :].view(num_seqs, num_heads, num_splits, head_dim)
    # out_ptr is not written when the partials are; the query fills its slot.
    _launch_stage1(query, key_cache, value_cache, block_tables, seq_lens, num_splits, scale,
                   query, (max_logits, exp_sums, acc))
    return max_logits, exp_sums, acc


def split_kv_partials(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    num_splits: int,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1 alone: every partition's ``(max_logits, exp_sums, acc)``, unnormalised."""
    _check_inputs(query, key_cache, value_cache)
    if num_splits < 1:
        raise ValueError(f"num_splits must be at least 1, got {num_splits}")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return _partials(query, key_cache, value_cache, block_tables, seq_lens, num_splits, scale)


def merge_partials(
    max_logits: torch.Tensor, exp_sums: torch.Tensor, acc: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Stage 2 alone: merge each (sequence, head)'s partitions into ``[num_seqs, num_heads,
    head_dim]`` of ``dtype``."""
    num_seqs, num_heads, num_splits, head_dim = acc.shape
    out = torch.empty(num_seqs, num_heads, head_dim, dtype=dtype, device=acc.device)
    split_kv_reduce_kernel[(num_heads, num_seqs)](
        out, max_logits, exp_sums, acc, num_heads, num_splits, out.stride(0), out.stride(1),
        HEAD_DIM=head_dim,
        SPLITS_POW2=triton.next_power_of_2(num_splits),
        num_warps=_REDUCE_WARPS,
    )
    return out


def split_kv_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Decode attention over a paged cache, split along the context and merged."""
    _check_inputs(query, key_cache, value_cache)
    num_seqs, num_heads, head_dim = query.shape
    block_size, num_kv_heads = key_cache.shape[1], key_cache.shape[2]
    if num_splits is None:
        # The table's width bounds every context, and it is known without a device sync.
        max_context = block_tables.shape[1] * block_size
        num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context,
                                       multiprocessor_count(query.device))
    if num_splits < 1:
        raise ValueError(f"num_splits must be at least 1, got {num_splits}")
    scale = head_dim**-0.5 if scale is None else scale
    if num_splits == 1:
        out = torch.empty_like(query)
        _launch_stage1(query, key_cache, value_cache, block_tables, seq_lens, 1, scale,
                       out, None)
        return out
    partials = _partials(query, key_cache, value_cache, block_tables, seq_lens, num_splits, scale)
    return merge_partials(*partials, query.dtype)
