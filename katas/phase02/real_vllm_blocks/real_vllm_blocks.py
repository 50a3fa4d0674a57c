"""Kata 02-03 — predict the KV capacity a real vLLM reports, and watch identical prompts share.

The engine carves a byte budget into fixed-size blocks. Predict the carving from the model's
shape, read what the engine really did, and check they agree to the block.
"""

from __future__ import annotations

from typing import Any

from katas.phase02.real_vllm_blocks.scaffold import (  # noqa: F401
    DTYPE_BYTES,
    KVCapacity,
    ModelShape,
)


def model_shape(hf_config: Any, dtype: str) -> ModelShape:
    """Read the KV-relevant shape off a Hugging Face config (``config.json`` as an object).

    ``num_layers`` is ``num_hidden_layers``. ``num_kv_heads`` is ``num_key_value_heads``, or
    ``num_attention_heads`` when the config has no such field (plain multi-head attention).
    ``head_dim`` is the config's ``head_dim`` when present and not None, else
    ``hidden_size // num_attention_heads``. ``dtype_bytes`` is ``DTYPE_BYTES[dtype]``.
    """
    raise NotImplementedError("model_shape: read the KV-relevant shape off a config")


def kv_bytes_per_token(shape: ModelShape) -> int:
    """Bytes of KV cache one token occupies: K and V, every layer, every KV head.

    The course's model, OPT-125m in fp16 (12 layers, 12 KV heads of 64), costs 36,864 bytes.
    """
    raise NotImplementedError("kv_bytes_per_token: bytes of K/V one token occupies")


def kv_capacity(
    shape: ModelShape, kv_space_bytes: int, block_size: int, max_model_len: int
) -> KVCapacity:
    """The capacity the engine will report for a KV budget of ``kv_space_bytes``.

    A block holds ``block_size`` tokens; only whole blocks count (bytes left over that cannot
    hold one are unused), and only tokens in whole blocks count. ``max_concurrency`` is how
    many requests of ``max_model_len`` tokens the cache holds, as an unrounded float. The
    course's capture: 8788 blocks of 16 tokens are 140,608 tokens, 68.65625 requests of 2,048.
    """
    raise NotImplementedError("kv_capacity: carve a byte budget into whole blocks")


def read_kv_capacity(vllm_config: Any) -> KVCapacity:
    """What a running engine says about its KV cache, read from its resolved ``VllmConfig``.

    ``vllm_config.cache_config`` carries ``num_gpu_blocks`` (blocks, even on a CPU),
    ``kv_cache_size_tokens`` and ``kv_cache_max_concurrency``.
    """
    raise NotImplementedError("read_kv_capacity: the three numbers a running engine reports")


def cached_prefix_tokens(prompt_len: int, block_size: int) -> int:
    """Tokens a second, identical prompt finds in the prefix cache.

    Only full blocks are cached, and a request never takes its own last prompt token from the
    cache (it must compute it to get logits), so the hit covers the full blocks of the first
    ``prompt_len - 1`` tokens.
    """
    raise NotImplementedError("cached_prefix_tokens: tokens a repeated prompt finds cached")
