"""Paged attention in numpy: write this step's K/V through the slot mapping, read the context
through the block table.

Upstream twins: ``vllm/v1/attention/backends/utils.py: CommonAttentionMetadata`` (what one step's
attention needs), ``reshape_and_cache`` (the write, a CUDA op in ``csrc/cache_kernels.cu``) and the
backends' ``forward`` (``vllm/v1/attention/backends/*.py``), which run varlen attention over the
paged cache.

KV cache layout, per layer and per K or V: ``[num_blocks, block_size, num_kv_heads, head_dim]``.
Token ``p`` of a request lives in block ``block_table[p // block_size]`` at offset
``p % block_size``; flattened, that is slot ``block * block_size + offset``.

Requests are packed back to back (varlen): request ``i``'s query rows are
``query_start_loc[i]:query_start_loc[i + 1]``, and they are the *last* rows of its context of
``seq_lens[i]`` tokens (the rest is already in the cache). Causality inside a chunk: the query at
position ``p`` sees context positions ``0..p``.

Decodes (one query row) are batched into one gather and a few batched matmuls; a prefill chunk is
attended per request, as upstream's backends split decode and prefill. No Python loop runs per
token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class AttentionMetadata:
    """One step's view of the batch, built by the model runner, shared by every layer."""

    #: ``[num_reqs + 1]``: request ``i``'s rows are ``query_start_loc[i]:query_start_loc[i+1]``.
    query_start_loc: np.ndarray
    #: ``[num_reqs]``: context length once this step's tokens are in (computed + scheduled).
    seq_lens: np.ndarray
    #: ``[num_reqs, max_blocks]``: physical block ids per request, padded with 0 (the null block).
    block_table: np.ndarray
    #: ``[num_tokens]``: the flat slot each scheduled token's K/V is written to.
    slot_mapping: np.ndarray
    block_size: int

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens)

    # Derived once per step, then shared by every layer (cached on the instance).

    @cached_property
    def query_lens(self) -> np.ndarray:
        return np.diff(self.query_start_loc)

    @cached_property
    def decode_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
        """For the one-row (decode) requests: their rows, block tables, context lengths, and
        which gathered positions lie past each one's length (``None`` when none do)."""
        decodes = np.flatnonzero(self.query_lens == 1)
        if not decodes.size:
            return None
        lens = self.seq_lens[decodes]
        longest = int(lens.max())
        tables = self.block_table[decodes, : -(-longest // self.block_size)]
        beyond = np.arange(longest)[None, :] >= lens[:, None]  # [b, longest]
        return self.query_start_loc[decodes], tables, lens, beyond if beyond.any() else None

    @cached_property
    def prefills(self) -> np.ndarray:
        """Requests with more than one query row (a prompt or a prefill chunk)."""
        return np.flatnonzero(self.query_lens > 1)


def write_to_kv_cache(key: np.ndarray, value: np.ndarray, key_cache: np.ndarray,
                      value_cache: np.ndarray, slot_mapping: np.ndarray) -> None:
    """Store each token's K and V (``[num_tokens, num_kv_heads, head_dim]``) at its slot."""
    num_blocks, block_size = key_cache.shape[:2]
    flat_k = key_cache.reshape(num_blocks * block_size, *key_cache.shape[2:])
    flat_v = value_cache.reshape(num_blocks * block_size, *value_cache.shape[2:])
    flat_k[slot_mapping] = key
    flat_v[slot_mapping] = value


def _gather_context(cache: np.ndarray, block_ids: np.ndarray) -> np.ndarray:
    """``[..., num_blocks_read * block_size, num_kv_heads, head_dim]`` read through a table."""
    gathered = cache[block_ids]  # [..., nblk, block_size, kvh, d]
    return gathered.reshape(*block_ids.shape[:-1], -1, *cache.shape[2:])


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def paged_attention(query: np.ndarray, key_cache: np.ndarray, value_cache: np.ndarray,
                    metadata: AttentionMetadata, scale: float) -> np.ndarray:
    """Causal attention of every query row over its request's paged context.

    ``query`` is ``[num_tokens, num_heads, head_dim]``; grouped-query attention maps query head
    ``h`` to KV head ``h // (num_heads // num_kv_heads)``. Returns ``[num_tokens, num_heads,
    head_dim]`` in the query's dtype. The cache must already hold this step's K/V.
    """
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = key_cache.shape[2]
    group = num_heads // num_kv_heads
    block_size = metadata.block_size
    out = np.empty_like(query)
    starts = metadata.query_start_loc
    seq_lens = metadata.seq_lens

    plan = metadata.decode_plan
    if plan is not None:
        rows, tables, lens, beyond = plan
        longest = beyond.shape[1] if beyond is not None else int(lens.max())
        keys = _gather_context(key_cache, tables)[:, :longest]  # [b, L, kvh, d]
        values = _gather_context(value_cache, tables)[:, :longest]
        q = query[rows].reshape(len(rows), num_kv_heads, group, head_dim)
        # [b, kvh, g, d] @ [b, kvh, d, L] -> [b, kvh, g, L]
        scores = np.matmul(q, keys.transpose(0, 2, 3, 1))
        scores *= scale
        if beyond is not None:
            # Padding past a request's length (others in the batch are longer): zero weight.
            scores[np.broadcast_to(beyond[:, None, None, :], scores.shape)] = -np.inf
        probs = _softmax_rows(scores)
        # [b, kvh, g, L] @ [b, kvh, L, d] -> [b, kvh, g, d]
        out[rows] = np.matmul(probs, values.transpose(0, 2, 1, 3)).reshape(
            len(rows), num_heads, head_dim)

    for i in metadata.prefills:
        start, stop, seq_len = int(starts[i]), int(starts[i + 1]), int(seq_lens[i])
        q_len = stop - start
        num_blocks_read = -(-seq_len // block_size)
        table = metadata.block_table[i, :num_blocks_read]
        keys = _gather_context(key_cache, table[None])[0, :seq_len]  # [S, kvh, d]
        values = _gather_context(value_cache, table[None])[0, :seq_len]
        q = query[start:stop].reshape(q_len, num_kv_heads, group, head_dim).transpose(1, 2, 0, 3)
        # [kvh, g, Q, d] @ [kvh, 1, d, S] -> [kvh, g, Q, S]
        scores = np.matmul(q, keys.transpose(1, 2, 0)[:, None]) * scale
        # Query j sits at position seq_len - q_len + j and sees positions up to its own.
        q_pos = np.arange(seq_len - q_len, seq_len)
        future = np.arange(seq_len)[None, :] > q_pos[:, None]  # [Q, S]
        scores[..., future] = -np.inf
        probs = _softmax_rows(scores)
        # [kvh, g, Q, S] @ [kvh, 1, S, d] -> [kvh, g, Q, d]
        ctx = np.matmul(probs, values.transpose(1, 0, 2)[:, None])
        out[start:stop] = ctx.transpose(2, 0, 1, 3).reshape(q_len, num_heads, head_dim)
    return out


# -- other backends --------------------------------------------------------------------------
# What a model's attention layer calls: paged_attention's signature. The engine picks one at
# start-up (LLMEngine(attn_backend=...)) and the runner installs it for every forward pass
# (mini_vllm.forward_context), as vLLM's selector picks FlashAttention, FlashInfer, Triton...

AttentionBackend = Callable[[np.ndarray, np.ndarray, np.ndarray, AttentionMetadata, float],
                            np.ndarray]

#: One request's chunk of query rows, one head, over that head's paged context:
#: ``(queries [M, d], key_cache [num_blocks, block_size, d], value_cache, block_table,
#: start_pos) -> [M, d]``. Row ``i`` sits at position ``start_pos + i`` and sees positions
#: ``0..start_pos + i``; the cache already holds them all. Scale ``1 / sqrt(d)``.
ChunkAttention = Callable[[np.ndarray, np.ndarray, np.ndarray, list[int], int], np.ndarray]

#: One query row, one head: ``(q [d], key_cache, value_cache, block_table, seq_len) -> [d]``,
#: attending over positions ``0..seq_len - 1``.
RowAttention = Callable[[np.ndarray, np.ndarray, np.ndarray, list[int], int], np.ndarray]


def row_by_row(attend_row: RowAttention) -> ChunkAttention:
    """A chunk attention from a one-row one: causality is each row's ``seq_len``, its position
    plus one (a token sees itself)."""

    def attend_chunk(queries: np.ndarray, key_cache: np.ndarray, value_cache: np.ndarray,
                     block_table: list[int], start_pos: int) -> np.ndarray:
        return np.stack([attend_row(q, key_cache, value_cache, block_table, start_pos + i + 1)
                         for i, q in enumerate(queries)])

    return attend_chunk


def per_head_backend(attend_chunk: ChunkAttention) -> AttentionBackend:
    """A backend built from a single-request, single-head attention (a kata's): one call per
    request and query head, with that head's KV-head slice of the cache.

    Slow by design (a Python loop over requests and heads) and exact: with float64 weights the
    engine's tokens must equal the stock backend's.
    """

    def backend(query: np.ndarray, key_cache: np.ndarray, value_cache: np.ndarray,
                metadata: AttentionMetadata, scale: float) -> np.ndarray:
        num_tokens, num_heads, head_dim = query.shape
        if not np.isclose(scale, head_dim ** -0.5):
            raise ValueError(f"this backend attends with scale 1/sqrt({head_dim}); the model "
                             f"asked for {scale}")
        group = num_heads // key_cache.shape[2]
        out = np.empty_like(query)
        for i in range(metadata.num_reqs):
            start, stop = int(metadata.query_start_loc[i]), int(metadata.query_start_loc[i + 1])
            seq_len = int(metadata.seq_lens[i])
            table = metadata.block_table[i, :-(-seq_len // metadata.block_size)].tolist()
            for h in range(num_heads):
                kv_head = h // group
                rows = np.asarray(attend_chunk(
                    query[start:stop, h], key_cache[:, :, kv_head], value_cache[:, :, kv_head],
                    table, seq_len - (stop - start)))
                if rows.shape != (stop - start, head_dim):
                    raise ValueError(
                        f"attention for request {i}, head {h} returned shape {rows.shape}; "
                        f"expected {(stop - start, head_dim)} (one row per query)")
                out[start:stop, h] = rows
        return out

    return backend
