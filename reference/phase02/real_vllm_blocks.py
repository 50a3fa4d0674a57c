"""Reference for kata 02-03 — the KV-capacity arithmetic of a real vLLM, and reading it back."""

from __future__ import annotations

from typing import Any

from katas.phase02.real_vllm_blocks.scaffold import DTYPE_BYTES, KVCapacity, ModelShape


def model_shape(hf_config: Any, dtype: str) -> ModelShape:
    """Read the KV-relevant shape off a Hugging Face config."""
    heads = hf_config.num_attention_heads
    # Multi-head attention configs (OPT, GPT-2) have no num_key_value_heads: every head is a KV
    # head. GQA configs (Llama 3, SmolLM2) say how many KV heads the query heads share.
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    # Some configs set head_dim explicitly (and it need not be hidden/heads); others leave it
    # out or None and imply the even split.
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return ModelShape(
        num_layers=hf_config.num_hidden_layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dtype_bytes=DTYPE_BYTES[dtype],
    )


def kv_bytes_per_token(shape: ModelShape) -> int:
    """Bytes of KV cache one token occupies: K and V, every layer, every KV head."""
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * shape.dtype_bytes


def kv_capacity(
    shape: ModelShape, kv_space_bytes: int, block_size: int, max_model_len: int
) -> KVCapacity:
    """The capacity the engine will report for a KV budget of ``kv_space_bytes``."""
    block_bytes = kv_bytes_per_token(shape) * block_size
    # Whole blocks only: the tail of the budget that cannot hold a full block stays unused.
    num_blocks = kv_space_bytes // block_bytes
    num_tokens = num_blocks * block_size
    return KVCapacity(num_blocks, num_tokens, num_tokens / max_model_len)


def read_kv_capacity(vllm_config: Any) -> KVCapacity:
    """What a running engine says about its KV cache, read from its resolved ``VllmConfig``."""
    cache = vllm_config.cache_config
    # The field is called num_gpu_blocks on every platform; on CPU the blocks live in RAM.
    return KVCapacity(
        num_blocks=cache.num_gpu_blocks,
        num_tokens=cache.kv_cache_size_tokens,
        max_concurrency=cache.kv_cache_max_concurrency,
    )


def cached_prefix_tokens(prompt_len: int, block_size: int) -> int:
    """Tokens a second, identical prompt finds in the prefix cache."""
    # The last prompt token is always recomputed: its logits pick the first output token.
    return ((prompt_len - 1) // block_size) * block_size
