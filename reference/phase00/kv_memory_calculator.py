"""Reference for kata 00-02 — the KV-cache capacity formulas, in exact integer bytes."""

from __future__ import annotations


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies."""
    # The leading 2 is K and V. num_kv_heads, not the query-head count: under GQA several
    # query heads share one KV head, and only KV heads are cached.
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def kv_bytes_per_seq(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int, seq_len: int
) -> int:
    """Bytes of KV cache one sequence of ``seq_len`` tokens occupies."""
    return kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes) * seq_len


def max_concurrent_seqs(gpu_bytes: int, weight_bytes: int, kv_bytes_per_seq: int) -> int:
    """How many whole sequences fit in the memory left after the weights."""
    free_bytes = gpu_bytes - weight_bytes
    if free_bytes <= 0:
        # Weights fill (or overflow) the device: no room, and a capacity is never negative.
        return 0
    # Floor: a partial sequence cannot be served. The engine applies the same floor in
    # whole blocks when it sizes its block pool (Phase 02).
    return free_bytes // kv_bytes_per_seq
