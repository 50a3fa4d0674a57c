"""What the lab gives you: paged inputs, the dense gather and the dense baseline.

None of this is your work. :func:`make_paged_batch` builds one decode step's inputs for a batch
of sequences: a query per sequence, K/V caches whose blocks are scattered over the pool in
random order, the block tables that say where each sequence's blocks went, and every slot that
no sequence owns filled with poison, so that a kernel that reads past ``seq_len`` produces
garbage instead of a plausible answer. :func:`dense_reference` is the answer computed the
boring way: gather each sequence's K/V into a contiguous tensor with the address formula, then
run ordinary attention in float32.

Layouts (vLLM's, for one layer):

- ``query``        ``[batch, num_heads, head_dim]``                       float16
- ``key_cache``    ``[num_blocks, block_size, num_kv_heads, head_dim]``   float16
- ``value_cache``  same as ``key_cache``
- ``block_tables`` ``[batch, max_blocks]`` int32; row ``b`` maps sequence ``b``'s logical
  block ``i`` to a physical block; entries past the sequence's last block are padding
- ``seq_lens``     ``[batch]`` int32, each at least 1 (the current token is already cached)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pytest_vllm_katas.triton_fallback import interpreter_enabled

POISON = {
    # The largest finite float16: a score against it overflows the softmax.
    "huge": float(torch.finfo(torch.float16).max),
    # Survives any arithmetic except a masked load or a select: p * NaN is NaN even when p == 0.
    "nan": float("nan"),
}
"""Values written into every cache slot no sequence owns (see :func:`make_paged_batch`)."""


@dataclass(frozen=True)
class PagedBatch:
    """One decode step's inputs; all tensors live on the same device."""

    query: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor

    @property
    def block_size(self) -> int:
        return self.key_cache.shape[1]

    @property
    def num_kv_heads(self) -> int:
        return self.key_cache.shape[2]

    def args(self) -> tuple[torch.Tensor, ...]:
        """The kata's argument order: query, key_cache, value_cache, block_tables, seq_lens."""
        return self.query, self.key_cache, self.value_cache, self.block_tables, self.seq_lens


def kernel_device() -> str:
    """Where kernels run here: ``"cuda"`` on a GPU, ``"cpu"`` under the Triton interpreter."""
    if interpreter_enabled() or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def make_paged_batch(
    seq_lens: Sequence[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int = 16,
    poison: str = "huge",
    seed: int = 0,
    device: str | None = None,
    block_tables: Sequence[Sequence[int]] | None = None,
) -> PagedBatch:
    """A random paged batch: distinct, shuffled physical blocks; unused slots poisoned.

    Each sequence ``b`` owns ``ceil(seq_lens[b] / block_size)`` physical blocks, drawn without
    replacement from a random permutation of the pool, so logical order and physical order
    never agree. The pool has a few spare blocks no one owns; table padding points at one of
    them. With ``block_tables`` given (one list per sequence, exactly the blocks it owns), those
    ids are used instead; the pool is then just large enough to hold the largest id plus a
    spare. Values are drawn on the CPU from ``seed`` (the same batch on every device), then
    moved to ``device`` (default :func:`kernel_device`).
    """
    if any(n < 1 for n in seq_lens):
        raise ValueError(f"every sequence holds at least its current token, got {list(seq_lens)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
    fill = POISON[poison]
    # Two streams: where blocks go never changes what they hold, so the same seed gives the
    # same logical K/V under any placement (a test moves blocks and expects the same output).
    gen = torch.Generator().manual_seed(seed)
    placement = torch.Generator().manual_seed(seed + 1_000_003)
    blocks_per_seq = [math.ceil(n / block_size) for n in seq_lens]

    if block_tables is None:
        used = sum(blocks_per_seq)
        num_blocks = used + max(2, used // 4)
        ids = torch.randperm(num_blocks, generator=placement).tolist()
        owned, start = [], 0
        for n in blocks_per_seq:
            owned.append(ids[start : start + n])
            start += n
        spare = ids[start]
    else:
        owned = [list(row) for row in block_tables]
        if [len(row) for row in owned] != blocks_per_seq:
            raise ValueError(f"block_tables must list {blocks_per_seq} blocks per sequence")
        flat = [i for row in owned for i in row]
        if len(set(flat)) != len(flat):
            raise ValueError("a physical block may belong to one sequence only")
        spare = max(flat) + 1
        num_blocks = spare + 1

    max_blocks = max(blocks_per_seq)
    table = torch.full((len(seq_lens), max_blocks), spare, dtype=torch.int32)
    for b, row in enumerate(owned):
        table[b, : len(row)] = torch.tensor(row, dtype=torch.int32)

    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    key_cache = torch.full(shape, fill, dtype=torch.float16)
    value_cache = torch.full(shape, fill, dtype=torch.float16)
    for b, n in enumerate(seq_lens):
        blocks, slots = _physical_slots(table[b], n, block_size)
        key_cache[blocks, slots] = torch.randn(n, num_kv_heads, head_dim, generator=gen).half()
        value_cache[blocks, slots] = torch.randn(n, num_kv_heads, head_dim, generator=gen).half()
    query = torch.randn(len(seq_lens), num_heads, head_dim, generator=gen).half()

    device = device or kernel_device()
    return PagedBatch(
        query=query.to(device),
        key_cache=key_cache.to(device),
        value_cache=value_cache.to(device),
        block_tables=table.to(device),
        seq_lens=torch.tensor(list(seq_lens), dtype=torch.int32).to(device),
    )


def _physical_slots(
    table_row: torch.Tensor, seq_len: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The address formula, for tokens ``0 .. seq_len-1`` of one sequence:
    token ``t`` lives in block ``table_row[t // block_size]`` at slot ``t % block_size``."""
    t = torch.arange(seq_len, device=table_row.device)
    return table_row[t // block_size].long(), t % block_size


def gather_dense(batch: PagedBatch, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence ``seq``'s keys and values, contiguous: two ``[seq_len, num_kv_heads, head_dim]``."""
    n = int(batch.seq_lens[seq])
    blocks, slots = _physical_slots(batch.block_tables[seq], n, batch.block_size)
    return batch.key_cache[blocks, slots], batch.value_cache[blocks, slots]


def dense_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
) -> torch.Tensor:
    """``softmax(q·Kᵀ·scale)·V`` for one sequence, in float32, returned in the query's dtype.

    ``query`` is ``[num_heads, head_dim]``; ``keys``/``values`` are ``[seq_len, num_kv_heads,
    head_dim]``. Query head ``h`` reads KV head ``h // (num_heads // num_kv_heads)``.
    """
    group = query.shape[0] // keys.shape[1]
    k = keys.float().repeat_interleave(group, dim=1)
    v = values.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("hd,thd->ht", query.float(), k) * scale
    return torch.einsum("ht,thd->hd", torch.softmax(scores, dim=-1), v).to(query.dtype)


def dense_reference(batch: PagedBatch, scale: float | None = None) -> torch.Tensor:
    """The dense baseline for a whole batch: ``[batch, num_heads, head_dim]``."""
    scale = batch.query.shape[-1] ** -0.5 if scale is None else scale
    out = torch.empty_like(batch.query)
    for b in range(batch.query.shape[0]):
        keys, values = gather_dense(batch, b)
        out[b] = dense_attention(batch.query[b], keys, values, scale)
    return out
