"""Kata 17-02 — run vLLM on a CPU and read what the platform decided.

The engine you start here is the real one, on the ``CpuPlatform``. Read its decisions back
(platform, attention backend, eager execution, a KV cache sized from ``VLLM_CPU_KVCACHE_SPACE``),
predict the ones that are arithmetic, and set the measured decode speed against the bandwidth
roofline computed with your own function.
"""

from __future__ import annotations

from typing import Any

from katas.phase17.run_cpu_vllm.scaffold import GiB, PlatformDecisions  # noqa: F401


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The memory-bandwidth ceiling on decode speed, in tokens per second across the batch.

    Every decode step streams all the weights (``n_params * dtype_bytes`` bytes) once, so the
    steps per second are at most bandwidth / weight bytes, and each step makes ``batch`` tokens.
    """
    raise NotImplementedError("decode_tokens_per_second: bandwidth / weight bytes x batch")


def kv_cache_space_bytes(value: str | None) -> int | None:
    """The KV budget ``VLLM_CPU_KVCACHE_SPACE=value`` sets, in bytes.

    The value is a whole number of GiB (vLLM parses it with ``int``, so ``"1.5"`` is an error:
    let the ``ValueError`` through). Unset (``None``) or empty means the knob sets nothing:
    return None.
    """
    raise NotImplementedError("kv_cache_space_bytes: int(value) GiB; None or '' -> None")


def kv_blocks_for(kv_space_bytes: int, bytes_per_token: int, block_size: int) -> int:
    """Whole blocks of ``block_size`` tokens that fit in the KV budget."""
    raise NotImplementedError("kv_blocks_for: floor(budget / (bytes per token x block size))")


def read_platform_decisions(llm: Any) -> PlatformDecisions:
    """Read back what the platform decided for the running ``vllm.LLM``.

    - ``platform``, ``device_type``: ``vllm.platforms.current_platform`` (its class name and its
      ``device_type``).
    - ``attention_backend``: ask the platform what the engine asked it,
      ``current_platform.get_attn_backend_cls(None, AttentionSelectorConfig(head_size, dtype,
      None, None))`` (from ``vllm.v1.attention.selector``), with the model's head size
      (``model_config.get_head_size()``) and dtype. It returns a class path; the name is the
      ``AttentionBackendEnum`` member (``vllm.v1.attention.backends.registry``) whose ``value``
      is that path.
    - ``execution``: ``"eager"`` when ``compilation_config.cudagraph_mode`` is ``NONE``, else
      ``"graphs"``.
    - ``dtype``: ``model_config.dtype`` without the ``torch.`` prefix.
    - ``kv_cache_bytes``, ``num_blocks``, ``block_size``: ``cache_config.kv_cache_memory_bytes``,
      ``num_gpu_blocks``, ``block_size``.

    Everything is on ``llm.llm_engine.vllm_config``, in this process, even when the engine core
    runs in another one.
    """
    raise NotImplementedError("read_platform_decisions: current_platform + llm_engine.vllm_config")
