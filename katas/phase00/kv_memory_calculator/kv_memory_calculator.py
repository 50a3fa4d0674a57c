"""Kata 00-02 — the KV-cache memory calculator. Your work goes here.

Three integer functions: the bytes of K/V cache one token occupies, the bytes one sequence
occupies, and how many whole sequences fit in the memory the weights leave free. All sizes are
exact byte counts (ints); no unit conversion happens inside these functions.

Worked example (the course's, in binary units): Llama-3-8B in fp16 — 32 layers, 8 KV heads,
head_dim 128, 2 bytes per number — holds 131,072 bytes (128 KiB) per token and 268,435,456
bytes (256 MiB) per 2,048-token sequence; a 24 GiB GPU whose weights take 16 GiB fits 32 such
sequences.
"""

from __future__ import annotations


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies, as an int.

    At every one of ``num_layers`` layers the cache keeps, for each of ``num_kv_heads`` KV
    heads, the token's key vector and its value vector; each vector is ``head_dim`` numbers of
    ``dtype_bytes`` bytes. Only KV heads are cached (under grouped-query attention several
    query heads share one). Llama-3-8B fp16 ``(32, 8, 128, 2)``: 131,072.
    """
    raise NotImplementedError("kv_bytes_per_token: bytes of K/V one token occupies")


def kv_bytes_per_seq(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int, seq_len: int
) -> int:
    """Bytes of KV cache one sequence of ``seq_len`` tokens occupies, as an int.

    Every one of its ``seq_len`` tokens holds its K/V for the life of the request. Llama-3-8B
    fp16 at 2,048 tokens: 268,435,456 (256 MiB).
    """
    raise NotImplementedError("kv_bytes_per_seq: bytes of K/V one whole sequence occupies")


def max_concurrent_seqs(gpu_bytes: int, weight_bytes: int, kv_bytes_per_seq: int) -> int:
    """How many whole sequences of ``kv_bytes_per_seq`` bytes fit beside the weights.

    The weights take ``weight_bytes`` of the GPU's ``gpu_bytes`` first; the rest holds KV
    cache. A fraction of a sequence cannot be served, so the answer is a whole number (an int)
    that never overstates the capacity, and it is 0 — never negative — when the weights leave
    no room. 24 GiB GPU, 16 GiB of weights, 256 MiB per sequence: 32.
    """
    raise NotImplementedError("max_concurrent_seqs: whole sequences that fit beside the weights")
