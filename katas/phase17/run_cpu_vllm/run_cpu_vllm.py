"""Kata 17-02 — run vLLM on a CPU and read what the platform decided.

The engine you start here is the real one, on the ``CpuPlatform``. Read its decisions back
(platform, attention backend, eager execution, a KV cache sized from ``VLLM_CPU_KVCACHE_SPACE``),
predict the ones that are arithmetic, and set the measured decode speed against the bandwidth
roofline computed with your own functions. The arithmetic needs no vLLM; reading the engine does.
"""

from __future__ import annotations

from typing import Any

from katas.phase17.run_cpu_vllm.scaffold import GiB, PlatformDecisions  # noqa: F401


def decode_step_bytes(n_params: float, dtype_bytes: float) -> float:
    """Bytes one decode step streams from memory: every weight of the model, once.

    (The KV cache reads are ignored: for a short context they are tiny next to the weights.)
    Example: an 8B model in bf16 streams 16 GB per step.
    """
    raise NotImplementedError("decode_step_bytes: the bytes of weights one decode step reads")


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The memory-bandwidth ceiling on decode speed, in tokens per second across the batch.

    ``mem_bandwidth`` is in bytes per second. A decode step cannot be faster than the time it
    takes to stream its bytes, and each step makes one token for each of the ``batch``
    sequences. Example: 8B bf16 weights at 2 TB/s top out at 125 tok/s, and at 8,000 tok/s
    with a batch of 64.
    """
    raise NotImplementedError("decode_tokens_per_second: the bandwidth ceiling on decode speed")


def roofline_fraction(measured_tok_s: float, ceiling_tok_s: float) -> float:
    """The share of the bandwidth ceiling a measured decode speed reaches (1.0 = all of it).

    Raises ``ValueError`` for a ceiling that is not positive or a negative measured speed. A
    result above 1.0 is returned, not refused: it says the roofline's inputs are off.
    """
    raise NotImplementedError("roofline_fraction: measured speed relative to the ceiling")


def kv_cache_space_bytes(value: str | None) -> int | None:
    """The KV budget ``VLLM_CPU_KVCACHE_SPACE=value`` sets, in bytes.

    The value is a whole number of GiB (vLLM parses it with ``int``, so ``"1.5"`` is an error:
    let the ``ValueError`` through). Unset (``None``) or empty means the knob sets nothing:
    return None.
    """
    raise NotImplementedError("kv_cache_space_bytes: the bytes VLLM_CPU_KVCACHE_SPACE sets")


def kv_blocks_for(kv_space_bytes: int, bytes_per_token: int, block_size: int) -> int:
    """Whole blocks of ``block_size`` tokens that fit in the KV budget.

    ``bytes_per_token`` already counts K and V for every layer. Example: SmolLM2's 23,040
    bytes per token in blocks of 128 fit 364 whole blocks in 1 GiB.
    """
    raise NotImplementedError("kv_blocks_for: whole blocks that fit in the KV budget")


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
