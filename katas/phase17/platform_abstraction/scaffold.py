"""What the lab provides for kata 17-01: the engine core that asks a platform, never names one.

``configure_engine`` stands for the hardware-agnostic part of vLLM (``EngineArgs`` ->
``VllmConfig`` -> model runner). It reads every hardware decision off the ``Platform`` it is
given. A test checks that its source never mentions a device, so a new platform can change the
engine's decisions only by being a new ``Platform`` object: no core edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GiB = 1 << 30
# What an unsupported dtype falls back to: every platform can compute in float32.
FALLBACK_DTYPE = "float32"


@dataclass(frozen=True)
class EngineDecisions:
    """The hardware-dependent choices the engine makes at start-up."""

    platform: str
    dtype: str  # the dtype the weights and KV cache will really use
    attention_backend: str
    execution: str  # "graphs" (captured) or "eager"
    kv_cache_bytes: int  # the memory the KV cache may use, from the platform's knob


def configure_engine(
    platform: Any,
    requested_dtype: str,
    device_memory_bytes: int,
    kv_setting: float,
    enforce_eager: bool = False,
) -> EngineDecisions:
    """Make the engine's start-up decisions by asking ``platform`` (a kata ``Platform``)."""
    can_capture = platform.supports_graphs and not enforce_eager
    return EngineDecisions(
        platform=platform.name,
        dtype=platform.check_dtype(requested_dtype),
        attention_backend=platform.attention_backend,
        execution="graphs" if can_capture else "eager",
        kv_cache_bytes=platform.kv_cache_bytes(device_memory_bytes, kv_setting),
    )
