"""What the lab gives you: kata 02-04's paged inputs and oracles, plus a torch oracle for stage 1.

None of this is your work. The inputs are kata 02-04's, unchanged (see its ``scaffold.py``):
``make_paged_batch`` builds one decode step with shuffled physical blocks and every unowned
slot poisoned, ``dense_reference`` is the answer computed densely in float32. New here:

- :func:`partition_range`: the token range of one partition, the rule your stage-1 kernel
  follows (in plain Python, for debugging; the kernel computes it itself);
- :func:`partials_reference`: every partition's ``(max_logits, exp_sums, acc)`` in float64, the
  oracle for your stage 1;
- :func:`with_dtype`: the same batch in bfloat16 (or any float dtype);
- :func:`multiprocessor_count`: the SM count the launcher's rule is given;
- :func:`tile_dot`: ``tl.dot`` that also works on bfloat16 under the Triton interpreter.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import triton
import triton.language as tl

from katas.phase02.triton_paged_attention.scaffold import (
    POISON,
    PagedBatch,
    dense_reference,
    gather_dense,
    kernel_device,
    make_paged_batch,
)

__all__ = [
    "POISON",
    "PagedBatch",
    "dense_reference",
    "gather_dense",
    "kernel_device",
    "make_paged_batch",
    "multiprocessor_count",
    "partials_reference",
    "partition_range",
    "tile_dot",
    "with_dtype",
]

INTERPRETER_SMS = 132
"""The SM count reported without a GPU (an H200's), so the rule picks what it would there."""


def multiprocessor_count(device: torch.device | str) -> int:
    """Streaming multiprocessors of ``device``; :data:`INTERPRETER_SMS` for the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return INTERPRETER_SMS
    return _cuda_sms(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@triton.jit
def tile_dot(a, b):
    """``tl.dot(a, b)`` (float32 result), with bfloat16 operands widened to float32 first.

    Call it from your kernel instead of ``tl.dot``. The Triton interpreter multiplies bfloat16
    operands as raw 16-bit integers, which gives garbage; float32 (tf32 on the tensor cores)
    holds every bfloat16 value exactly, so the widening changes no result. float16 operands go
    to ``tl.dot`` as they are. Like ``tl.dot``, both sides need at least 16 rows and columns.
    """
    if a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    return tl.dot(a, b)


def with_dtype(batch: PagedBatch, dtype: torch.dtype) -> PagedBatch:
    """The same batch with the query and both caches cast to ``dtype`` (poison included)."""
    return dataclasses.replace(
        batch,
        query=batch.query.to(dtype),
        key_cache=batch.key_cache.to(dtype),
        value_cache=batch.value_cache.to(dtype),
    )


def partition_range(seq_len: int, block_size: int, num_splits: int, split: int) -> range:
    """Tokens of partition ``split``: whole logical blocks, ``ceil(blocks / num_splits)`` of
    them per partition, the last partition cut at ``seq_len``; empty past the last block.

    130 tokens in blocks of 16 (9 blocks), 4 splits: 3 blocks each, so ``range(0, 48)``,
    ``range(48, 96)``, ``range(96, 130)`` and ``range(144, 130)`` (empty).
    """
    blocks_per_split = math.ceil(math.ceil(seq_len / block_size) / num_splits)
    start = split * blocks_per_split * block_size
    return range(start, min(start + blocks_per_split * block_size, seq_len))


def partials_reference(
    batch: PagedBatch, num_splits: int, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every partition's summary, in float64 on the CPU.

    Returns ``(max_logits, exp_sums, acc)`` shaped ``[num_seqs, num_heads, num_splits]``,
    the same, and ``[num_seqs, num_heads, num_splits, head_dim]``: over the partition's tokens
    ``t``, with ``s_t = scale * q · k_t``, ``m = max s_t``, ``l = sum exp(s_t - m)`` and
    ``acc = sum exp(s_t - m) * v_t`` (not divided by ``l``). An empty partition is
    ``(-inf, 0, 0)``.
    """
    num_seqs, num_heads, head_dim = batch.query.shape
    scale = head_dim**-0.5 if scale is None else scale
    group = num_heads // batch.num_kv_heads
    m = torch.full((num_seqs, num_heads, num_splits), float("-inf"), dtype=torch.float64)
    l = torch.zeros(num_seqs, num_heads, num_splits, dtype=torch.float64)  # noqa: E741
    acc = torch.zeros(num_seqs, num_heads, num_splits, head_dim, dtype=torch.float64)
    for b in range(num_seqs):
        keys, values = gather_dense(batch, b)
        k = keys.cpu().double().repeat_interleave(group, dim=1)  # [seq_len, heads, dim]
        v = values.cpu().double().repeat_interleave(group, dim=1)
        q = batch.query[b].cpu().double()
        for split in range(num_splits):
            tokens = partition_range(len(keys), batch.block_size, num_splits, split)
            if not tokens:
                continue
            part = slice(tokens.start, tokens.stop)
            s = torch.einsum("hd,thd->ht", q, k[part]) * scale
            m[b, :, split] = s.max(dim=1).values
            p = torch.exp(s - m[b, :, split, None])
            l[b, :, split] = p.sum(dim=1)
            acc[b, :, split] = torch.einsum("ht,thd->hd", p, v[part])
    return m, l, acc
