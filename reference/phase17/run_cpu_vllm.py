"""Reference for kata 17-02 — reading the CPU platform's decisions off a running vLLM."""

from __future__ import annotations

from typing import Any

from katas.phase17.run_cpu_vllm.scaffold import GiB, PlatformDecisions


def decode_step_bytes(n_params: float, dtype_bytes: float) -> float:
    """Bytes one decode step streams from memory: every weight, once."""
    return n_params * dtype_bytes


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The memory-bandwidth ceiling on decode speed, in tokens per second across the batch."""
    # One step reads every weight once and serves the whole batch: steps/s is fixed by the
    # bandwidth, tokens/s grows with the batch until the step turns compute-bound.
    return mem_bandwidth / decode_step_bytes(n_params, dtype_bytes) * batch


def roofline_fraction(measured_tok_s: float, ceiling_tok_s: float) -> float:
    """How much of the bandwidth ceiling a measured decode speed reaches (1.0 = all of it)."""
    if not ceiling_tok_s > 0:
        raise ValueError(f"a roofline ceiling must be positive, got {ceiling_tok_s} tok/s")
    if measured_tok_s < 0:
        raise ValueError(f"a measured speed cannot be negative, got {measured_tok_s} tok/s")
    # Above 1.0 is reported, not refused: it means the roofline's inputs are wrong (a bandwidth
    # measured on a busy machine, say), which is worth seeing, not hiding.
    return measured_tok_s / ceiling_tok_s


def kv_cache_space_bytes(value: str | None) -> int | None:
    """The KV budget ``VLLM_CPU_KVCACHE_SPACE=value`` sets, in bytes."""
    if value is None or value == "":
        return None
    return int(value) * GiB  # whole GiB, as CpuPlatform.check_and_update_config parses it


def kv_blocks_for(kv_space_bytes: int, bytes_per_token: int, block_size: int) -> int:
    """Whole blocks of ``block_size`` tokens that fit in the KV budget."""
    return kv_space_bytes // (bytes_per_token * block_size)


def read_platform_decisions(llm: Any) -> PlatformDecisions:
    """Read back what the platform decided for the running ``vllm.LLM``."""
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.attention.selector import AttentionSelectorConfig

    config = llm.llm_engine.vllm_config
    model, cache = config.model_config, config.cache_config
    # The same question the model runner asks for every attention layer; the platform, not the
    # engine, answers it. (Only MLA backends log their choice, so asking beats reading logs.)
    path = current_platform.get_attn_backend_cls(
        None, AttentionSelectorConfig(model.get_head_size(), model.dtype, None, None)
    )
    # Each enum member's value is its default class path (get_path() would raise for members
    # that are declared but not registered in this build, such as TORCH_SDPA).
    backend = next(b.name for b in AttentionBackendEnum if b.value == path)
    graphs_off = config.compilation_config.cudagraph_mode.name == "NONE"
    return PlatformDecisions(
        platform=type(current_platform).__name__,
        device_type=current_platform.device_type,
        attention_backend=backend,
        execution="eager" if graphs_off else "graphs",
        dtype=str(model.dtype).removeprefix("torch."),
        kv_cache_bytes=cache.kv_cache_memory_bytes,
        num_blocks=cache.num_gpu_blocks,
        block_size=cache.block_size,
    )
