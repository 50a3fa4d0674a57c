"""Kata 04-05 — split-KV (flash-decoding) decode attention over a paged cache, in Triton. Your work.

The inputs are kata 02-04's (see ``scaffold.py``): ``query`` ``[num_seqs, num_heads, head_dim]``
float16 or bfloat16; both caches ``[num_blocks, block_size, num_kv_heads, head_dim]`` with one
shared layout (read their strides, do not assume contiguity); ``block_tables`` ``[num_seqs,
max_blocks]`` int32; ``seq_lens`` ``[num_seqs]`` int32, each at least 1. Query head ``h`` reads
KV head ``h // (num_heads // num_kv_heads)``; ``scale`` defaults to ``head_dim ** -0.5``.

The answer is still ``softmax(q · Kᵀ · scale) · V`` per head. What changes is who computes it:
each sequence's context is cut into ``num_splits`` partitions, a first kernel summarises every
partition on its own, and a second kernel merges the summaries.

**Partition rule.** A sequence of ``seq_len`` tokens holds ``n = ceil(seq_len / block_size)``
blocks. Every partition gets ``c = ceil(n / num_splits)`` whole logical blocks: partition
``j`` covers tokens ``[j * c * block_size, min((j + 1) * c * block_size, seq_len))``. Trailing
partitions may be empty (130 tokens in blocks of 16, 4 splits: 48, 48, 34 and 0 tokens).

**Partials.** Three float32 tensors, contiguous: ``max_logits`` and ``exp_sums`` ``[num_seqs,
num_heads, num_splits]``, ``acc`` ``[num_seqs, num_heads, num_splits, head_dim]``. Over the
partition's tokens ``t``, with ``s_t = scale · q · k_t``: ``max_logits = max s_t``,
``exp_sums = Σ exp(s_t - max_logits)``, ``acc = Σ exp(s_t - max_logits) · v_t``, not divided by
``exp_sums``. An empty partition is ``(-inf, 0, 0)``. (``scaffold.partials_reference`` computes
exactly these in float64.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from katas.phase04.triton_split_kv_decode.scaffold import multiprocessor_count, tile_dot  # noqa: F401


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """How many partitions to cut every sequence of a decode batch into.

    The rule (its two constants are module-level names of the reference, measured on an H200):

    - ``streams = num_seqs * num_kv_heads``, the K/V streams that must each be read once;
    - if ``streams >= num_sms``: 1 (the unsplit kernel already fills the GPU);
    - otherwise enough splits for ``PROGRAMS_PER_SM = 2`` programs per SM,
      ``ceil(2 * num_sms / streams)``, rounded up to a power of two, but no more than
      ``max_context // MIN_SPLIT_TOKENS`` (``MIN_SPLIT_TOKENS = 64``), and never fewer than 1.

    With 132 SMs and 8 KV heads: batch 1 at 32k tokens gives 64 (33 rounded up), batch 4 at
    16k gives 16, batch 16 gives 4, batch 1 at 1k gives 16 (capped by the context), batch 17
    and up gives 1. Returns an int >= 1.
    """
    raise NotImplementedError("choose_num_splits: the split count from batch, heads and SMs")


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
    """Stage 1. Program ``(i, b, j)`` of the grid ``(num_heads // HEADS_PER_PROGRAM, num_seqs,
    num_splits)`` summarises partition ``j`` of sequence ``b`` (the module docstring's rule)
    for query heads ``i * HEADS_PER_PROGRAM`` to ``(i + 1) * HEADS_PER_PROGRAM - 1``.

    Parameters: the output and the three partial tensors as pointers, then kata 02-04's
    tensors (query, caches, block tables, sequence lengths); ``scale``; ``num_heads`` and
    ``num_splits`` (the partials' dimensions); strides, in elements, of the query's and the
    output's sequence and head dimensions, of the caches' block, slot and KV-head dimensions,
    and of the block tables' rows. Compile-time: ``QUERIES_PER_KV``, ``HEADS_PER_PROGRAM``
    (divides ``QUERIES_PER_KV``; 1 is the simplest), ``BLOCK_SIZE``, ``HEAD_DIM`` (powers of
    two), ``TILE_BLOCKS`` (blocks per loop iteration) and ``WRITE_OUTPUT``.

    Contract:

    - ``WRITE_OUTPUT`` false: write this program's heads' partials at ``[b, h, j]`` (module
      docstring); every program writes, an empty partition included;
    - ``WRITE_OUTPUT`` true (only with ``num_splits == 1``): the one partition is the whole
      sequence, so write the finished attention output to ``out_ptr`` (shaped like the query,
      in its dtype) and no partials: kata 02-04's kernel;
    - read no token outside the partition, and none at or past ``seq_len`` (those slots, and
      blocks that table padding points at, may hold NaN);
    - accumulate in float32; block id times the block stride exceeds the int32 range on
      caches of a few GiB.

    ``tl.dot`` needs at least 16 rows on each side; under the Triton interpreter it turns
    bfloat16 operands into garbage, so use ``scaffold.tile_dot`` in its place (or an
    elementwise product and ``tl.sum``).
    """
    # Your stage-1 kernel goes here (split_kv_partials must launch it once it is written).
    pass


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
    """Stage 2. Program ``(h, b)`` of the grid ``(num_heads, num_seqs)`` merges the
    ``num_splits`` partials of head ``h`` of sequence ``b`` into ``out[b, h]``.

    Parameters: the output (``[num_seqs, num_heads, head_dim]``, any float dtype, strides
    given) and the three contiguous float32 partial tensors as pointers; ``num_heads``;
    ``num_splits``; the output's sequence and head strides; ``HEAD_DIM``; ``SPLITS_POW2``, a
    power of two >= ``num_splits`` (``tl.arange`` needs one).

    Contract: the result is attention over the union of the partitions, within fp32 rounding;
    empty partitions ``(-inf, 0, 0)`` contribute nothing and never make a NaN (partition 0
    always holds token 0, so the merged maximum is finite); nothing past ``num_splits`` is
    read.
    """
    # Your stage-2 kernel goes here (merge_partials must launch it once it is written).
    pass


def split_kv_partials(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    num_splits: int,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1 alone: launch :func:`split_kv_partials_kernel` and return its partials
    ``(max_logits, exp_sums, acc)`` (module docstring: shapes, float32, on the query's device).

    Raises ``ValueError`` when ``num_splits < 1``, and, like kata 02-04, when the caches differ
    in shape or layout, do not fit the query, or have a ``head_dim`` / ``block_size`` that is
    not a power of two.
    """
    raise NotImplementedError(
        "split_kv_partials: launch stage 1 on a (heads, sequences, splits) grid"
    )


def merge_partials(
    max_logits: torch.Tensor, exp_sums: torch.Tensor, acc: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Stage 2 alone: launch :func:`split_kv_reduce_kernel` on partials shaped as
    :func:`split_kv_partials` returns them; a new ``[num_seqs, num_heads, head_dim]`` tensor
    of ``dtype`` on their device."""
    raise NotImplementedError("merge_partials: launch stage 2 on a (heads, sequences) grid")


def split_kv_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Decode attention over the paged cache, split along the context and merged.

    Same inputs and result as kata 02-04's ``paged_attention_triton`` (a new tensor shaped,
    typed and placed like ``query``), plus ``num_splits``: None asks
    :func:`choose_num_splits` with ``max_context = block_tables.shape[1] * block_size`` (the
    table's width bounds every context, and is known without reading the GPU) and
    ``num_sms = multiprocessor_count(query.device)`` (from the scaffold). With one split,
    stage 1 writes the output itself (``WRITE_OUTPUT``); with more, stage 1 then stage 2.
    Raises ``ValueError`` like :func:`split_kv_partials`.
    """
    raise NotImplementedError(
        "split_kv_attention: choose the split count, then run stage 1 (and stage 2)"
    )
