"""Kata 00-02 — the KV-cache memory calculator. Your work goes here.

Three integer formulas: bytes of K/V per token, per sequence, and how many whole sequences
fit in the memory the weights leave free. All sizes are in bytes; use integer arithmetic.
"""

from __future__ import annotations


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies.

    Every layer stores one key and one value vector per KV head, each ``head_dim`` numbers of
    ``dtype_bytes`` bytes: ``2 x num_layers x num_kv_heads x head_dim x dtype_bytes``.
    Llama-3-8B in fp16 ``(32, 8, 128, 2)`` gives 131,072 (128 KiB).
    """
    raise NotImplementedError("kv_bytes_per_token: 2 x layers x kv_heads x head_dim x dtype_bytes")


def kv_bytes_per_seq(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int, seq_len: int
) -> int:
    """Bytes of KV cache one sequence of ``seq_len`` tokens occupies.

    The per-token figure (reuse ``kv_bytes_per_token``) times ``seq_len``. Llama-3-8B fp16 at
    2,048 tokens gives 268,435,456 (256 MiB).
    """
    raise NotImplementedError("kv_bytes_per_seq: kv_bytes_per_token(...) x seq_len")


def max_concurrent_seqs(gpu_bytes: int, weight_bytes: int, kv_bytes_per_seq: int) -> int:
    """How many whole sequences fit in the memory left after the weights.

    ``(gpu_bytes - weight_bytes) // kv_bytes_per_seq`` — floor division, because a fraction of
    a sequence cannot be served — and 0, never negative, when the weights leave no room.
    """
    raise NotImplementedError("max_concurrent_seqs: free bytes // bytes per sequence, 0 if none")
