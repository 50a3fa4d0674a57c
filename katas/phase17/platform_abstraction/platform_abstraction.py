"""Kata 17-01 — the platform abstraction: one engine, any silicon.

A ``Platform`` answers every hardware question the engine asks (which dtype, which attention
backend, can it capture graphs, how big may the KV cache be). A registry maps names to platforms;
resolution picks one at start-up. The engine core (``scaffold.configure_engine``) only asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from katas.phase17.platform_abstraction.scaffold import FALLBACK_DTYPE, GiB  # noqa: F401


@dataclass(frozen=True)
class Platform:
    """One kind of hardware, as the engine sees it.

    ``kv_cache_knob`` says how the user sizes the KV cache on this hardware:
    ``"absolute_gib"`` (a number of GiB, like ``VLLM_CPU_KVCACHE_SPACE``) or
    ``"memory_fraction"`` (a share of device memory, like ``gpu_memory_utilization``).
    """

    name: str
    device_type: str
    attention_backend: str
    supported_dtypes: tuple[str, ...]
    supports_graphs: bool
    kv_cache_knob: str

    def check_dtype(self, dtype: str) -> str:
        """The dtype the engine will really use when ``dtype`` is asked for.

        A supported dtype comes back unchanged, silently. Anything else falls back to
        ``FALLBACK_DTYPE`` with a ``UserWarning`` that names the platform and the dtype: the
        engine must start, and the user must hear about it.
        """
        raise NotImplementedError("Platform.check_dtype: supported -> as is; else warn + float32")

    def kv_cache_bytes(self, device_memory_bytes: int, setting: float) -> int:
        """The bytes the KV cache may take, read through this platform's knob.

        ``"absolute_gib"``: ``setting`` counts whole GiB, whatever the device memory (a fraction
        of a GiB is dropped: 2.5 means 2 GiB, like the integer ``VLLM_CPU_KVCACHE_SPACE``).
        ``"memory_fraction"``: that share of ``device_memory_bytes``, in whole bytes rounded
        down (0.5 of 24 GiB is 12 GiB). Any other knob raises ``ValueError`` naming it: there is
        no sensible default size for a KV cache.
        """
        raise NotImplementedError("Platform.kv_cache_bytes: GiB knob or fraction of memory")


def make_default_platforms() -> dict[str, Platform]:
    """A fresh registry holding the in-tree platforms, ``"cpu"`` then ``"cuda"``.

    cpu: device ``"cpu"``, backend ``"CPU_ATTN"``, dtypes float32 and bfloat16 (no float16),
    no graphs, knob ``"absolute_gib"``. cuda: device ``"cuda"``, backend ``"FLASH_ATTN"``,
    dtypes float32, float16 and bfloat16, graphs, knob ``"memory_fraction"``.
    """
    raise NotImplementedError("make_default_platforms: a new dict with the cpu and cuda platforms")


def register_platform(registry: dict[str, Platform], platform: Platform) -> None:
    """Add ``platform`` under its name; a name already taken raises ``ValueError``.

    Refusing duplicates is what stops a plugin from silently shadowing ``cpu`` or ``cuda``.
    The registry must be unchanged after a refusal.
    """
    raise NotImplementedError("register_platform: add by name, refuse a name already registered")


def resolve_platform(
    registry: dict[str, Platform], devices: list[str], override: str | None = None
) -> Platform:
    """Pick the platform the engine runs on, once, at start-up.

    1. ``override`` given: that platform; an unknown name raises ``ValueError`` listing the
       registered names (never a silent fallback).
    2. Otherwise the first registered platform, in registration order, whose ``device_type`` is
       in ``devices`` and is not ``"cpu"`` (an accelerator wins).
    3. Otherwise the ``"cpu"`` platform: the floor, even for an empty device list.
    """
    raise NotImplementedError("resolve_platform: override, else first accelerator, else cpu")
