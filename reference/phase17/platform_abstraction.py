"""Reference for kata 17-01 — a Platform, a registry, and start-up resolution."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from katas.phase17.platform_abstraction.scaffold import FALLBACK_DTYPE, GiB

_KNOBS = ("absolute_gib", "memory_fraction")


@dataclass(frozen=True)
class Platform:
    """One kind of hardware, as the engine sees it."""

    name: str
    device_type: str
    attention_backend: str
    supported_dtypes: tuple[str, ...]
    supports_graphs: bool
    kv_cache_knob: str

    def check_dtype(self, dtype: str) -> str:
        """The dtype the engine will really use when ``dtype`` is asked for."""
        if dtype in self.supported_dtypes:
            return dtype
        # Upstream's CpuPlatform does the same with float16: warn and carry on, because refusing
        # to start over a dtype the user may not even have chosen (it came from config.json)
        # helps nobody.
        warnings.warn(
            f"{self.name} does not support {dtype}; falling back to {FALLBACK_DTYPE}",
            UserWarning,
            stacklevel=2,
        )
        return FALLBACK_DTYPE

    def kv_cache_bytes(self, device_memory_bytes: int, setting: float) -> int:
        """The bytes the KV cache may take, read through this platform's knob."""
        if self.kv_cache_knob == "absolute_gib":
            # RAM is shared with the OS and everything else, so a CPU user names an absolute
            # budget; vLLM parses VLLM_CPU_KVCACHE_SPACE as whole GiB.
            return int(setting) * GiB
        if self.kv_cache_knob == "memory_fraction":
            # HBM belongs to the engine, so a share of it is the natural unit.
            return int(device_memory_bytes * setting)
        raise ValueError(f"{self.name}: unknown kv_cache_knob {self.kv_cache_knob!r}; "
                         f"expected one of {', '.join(_KNOBS)}")


def make_default_platforms() -> dict[str, Platform]:
    """A fresh registry holding the in-tree platforms, ``"cpu"`` then ``"cuda"``."""
    cpu = Platform(
        name="cpu",
        device_type="cpu",
        attention_backend="CPU_ATTN",
        supported_dtypes=("float32", "bfloat16"),
        supports_graphs=False,
        kv_cache_knob="absolute_gib",
    )
    cuda = Platform(
        name="cuda",
        device_type="cuda",
        attention_backend="FLASH_ATTN",
        supported_dtypes=("float32", "float16", "bfloat16"),
        supports_graphs=True,
        kv_cache_knob="memory_fraction",
    )
    return {cpu.name: cpu, cuda.name: cuda}


def register_platform(registry: dict[str, Platform], platform: Platform) -> None:
    """Add ``platform`` under its name; a name already taken raises ``ValueError``."""
    if platform.name in registry:
        raise ValueError(f"a platform named {platform.name!r} is already registered; "
                         "a plugin must pick a name of its own")
    registry[platform.name] = platform


def resolve_platform(
    registry: dict[str, Platform], devices: list[str], override: str | None = None
) -> Platform:
    """Pick the platform the engine runs on, once, at start-up."""
    if override is not None:
        if override not in registry:
            raise ValueError(f"unknown platform {override!r}; registered: {', '.join(registry)}")
        return registry[override]
    present = set(devices)
    for platform in registry.values():  # dicts keep registration order
        if platform.device_type != "cpu" and platform.device_type in present:
            return platform
    if "cpu" not in registry:
        raise LookupError("no accelerator found and no 'cpu' platform registered")
    return registry["cpu"]
