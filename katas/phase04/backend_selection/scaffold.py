"""What the lab provides for kata 04-02: the hardware a selection is made for, and the backends.

Two small data types carry every input the selector needs:

- ``Platform``: ``"cuda"`` with a compute capability ``(major, minor)``, or ``"cpu"`` without
  one. The GPUs of the course's matrix are ready-made below (``A100``, ``L4``, ``H100``), plus a
  Blackwell (``B200``), an older Turing card (``T4``) and ``CPU``.
- ``BackendSpec``: what one attention backend can run, declared the way vLLM's backend classes
  declare it (``AttentionBackend.supported_dtypes``, ``supports_head_size``,
  ``supports_compute_capability``, ``supports_sliding_window``, ``is_mla``). ``BACKENDS`` holds
  the seven backends of this kata, keyed by the name vLLM gives them.

The table is a faithful subset of vLLM 0.32 (see the README for what it leaves out). Reading it is
part of the kata; deciding what to do with it is yours.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float16", "bfloat16", "float32")
HALF = frozenset({"float16", "bfloat16"})
ANY_DTYPE = frozenset(DTYPES)


@dataclass(frozen=True)
class Platform:
    """The hardware a selection is made for.

    ``name`` is ``"cuda"`` or ``"cpu"``. ``capability`` is the CUDA compute capability
    ``(major, minor)`` (Ampere A100 is ``(8, 0)``, Hopper H100 ``(9, 0)``) and must be ``None``
    on ``"cpu"``. Invalid combinations raise ``ValueError`` when the object is built.
    """

    name: str
    capability: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in ("cuda", "cpu"):
            raise ValueError(f"platform name must be 'cuda' or 'cpu', got {self.name!r}")
        if self.name == "cpu" and self.capability is not None:
            raise ValueError(f"a cpu platform has no compute capability, got {self.capability}")
        if self.name == "cuda":
            cap = self.capability
            if (not isinstance(cap, tuple) or len(cap) != 2
                    or not all(isinstance(v, int) and v >= 0 for v in cap)):
                raise ValueError(f"a cuda platform needs a capability (major, minor), got {cap!r}")

    def __str__(self) -> str:
        if self.capability is None:
            return self.name
        return f"{self.name} sm{self.capability[0]}{self.capability[1]}"


A100 = Platform("cuda", (8, 0))  # Ampere
L4 = Platform("cuda", (8, 9))  # Ada Lovelace: the GPU of the course's captured output
H100 = Platform("cuda", (9, 0))  # Hopper: FlashAttention's FA3 path
B200 = Platform("cuda", (10, 0))  # Blackwell
T4 = Platform("cuda", (7, 5))  # Turing: older than FlashAttention's floor
CPU = Platform("cpu")


@dataclass(frozen=True)
class BackendSpec:
    """What one attention backend can run. Each ``supports_*`` answers for one input alone."""

    name: str
    platform: str  # the platform whose kernels it ships: "cuda" or "cpu"
    is_mla: bool  # reads an MLA latent KV cache (and only that) instead of per-head K and V
    dtypes: frozenset[str]
    sliding_window: bool  # implements a sliding-window mask
    head_sizes: frozenset[int] | None = None  # an explicit list, or None: the rule below
    head_size_multiple: int = 1
    min_head_size: int = 1
    max_head_size: int | None = None
    min_capability: tuple[int, int] | None = None  # cuda only: lowest compute capability
    capability_majors: frozenset[int] | None = None  # cuda only: the only GPU generations

    def supports_dtype(self, dtype: str) -> bool:
        return dtype in self.dtypes

    def supports_head_size(self, head_size: int) -> bool:
        if self.head_sizes is not None:
            return head_size in self.head_sizes
        if head_size < self.min_head_size or head_size % self.head_size_multiple:
            return False
        return self.max_head_size is None or head_size <= self.max_head_size

    def supports_capability(self, capability: tuple[int, int] | None) -> bool:
        """True for every capability this backend's kernels were built for (``None``: cpu)."""
        if capability is None:
            return self.min_capability is None and self.capability_majors is None
        if self.min_capability is not None and capability < self.min_capability:
            return False
        return self.capability_majors is None or capability[0] in self.capability_majors

    def supports_sliding_window(self) -> bool:
        return self.sliding_window


_CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})

BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        # FlashAttention (FA2 on Ampere/Ada, FA3 on Hopper): the hand-tuned default.
        BackendSpec("FLASH_ATTN", "cuda", False, HALF, True, head_size_multiple=8,
                    max_head_size=256, min_capability=(8, 0)),
        # FlashInfer: plan-based kernels for a fixed set of head sizes.
        BackendSpec("FLASHINFER", "cuda", False, HALF, True,
                    head_sizes=frozenset({64, 128, 256, 512}), min_capability=(8, 0)),
        # Triton: JIT-compiled, portable, the one that also runs float32.
        BackendSpec("TRITON_ATTN", "cuda", False, ANY_DTYPE, True, min_head_size=32),
        # FlashMLA: DeepSeek's kernel for the MLA latent cache, Hopper and Blackwell only.
        BackendSpec("FLASHMLA", "cuda", True, HALF, False,
                    head_sizes=frozenset({320, 512, 576}), capability_majors=frozenset({9, 10})),
        # Triton MLA: the portable reader of the latent cache.
        BackendSpec("TRITON_MLA", "cuda", True, HALF, False),
        # vLLM's CPU kernels, one per KV layout.
        BackendSpec("CPU_ATTN", "cpu", False, ANY_DTYPE, True, head_sizes=_CPU_HEAD_SIZES),
        BackendSpec("CPU_MLA", "cpu", True, ANY_DTYPE, False, head_sizes=frozenset({576})),
    )
}
