"""Reference for kata 04-02 — which attention backend an engine runs, decided once, in order."""

from __future__ import annotations

from katas.phase04.backend_selection.scaffold import BACKENDS, DTYPES, Platform

# The platform default chains, most preferred first, each ending in the portable fallback.
# Tuples, so no caller can reorder or shrink them: select_backend filters a copy.
_CUDA_CHAIN = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN")
_BLACKWELL_CHAIN = ("FLASHINFER", "FLASH_ATTN", "TRITON_ATTN")  # sm10x: FlashInfer leads
_CUDA_MLA_CHAIN = ("FLASHMLA", "TRITON_MLA")
_CPU_CHAIN = ("CPU_ATTN",)
_CPU_MLA_CHAIN = ("CPU_MLA",)


def default_chain(platform: Platform, is_mla: bool = False) -> list[str]:
    """The platform's ranked candidates for a model, before any capability filter."""
    if platform.name == "cpu":
        return list(_CPU_MLA_CHAIN if is_mla else _CPU_CHAIN)
    if is_mla:
        return list(_CUDA_MLA_CHAIN)
    if platform.capability is not None and platform.capability[0] == 10:
        return list(_BLACKWELL_CHAIN)
    return list(_CUDA_CHAIN)


def _spec(backend: str):
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown attention backend {backend!r}; valid options are: "
                         f"{', '.join(BACKENDS)}") from None


def _check_inputs(dtype: str, head_size: int, sliding_window: int | None) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size <= 0:
        raise ValueError(f"head_size must be a positive int, got {head_size!r}")
    if sliding_window is not None and (isinstance(sliding_window, bool)
                                       or not isinstance(sliding_window, int)
                                       or sliding_window <= 0):
        raise ValueError(f"sliding_window must be None (full attention) or a positive number "
                         f"of tokens, got {sliding_window!r}")


def unsupported_reasons(backend: str, platform: Platform, dtype: str, head_size: int,
                        is_mla: bool = False, sliding_window: int | None = None) -> list[str]:
    """Every reason ``backend`` cannot run this configuration; empty when it can."""
    spec = _spec(backend)
    _check_inputs(dtype, head_size, sliding_window)
    reasons = []
    if spec.platform != platform.name:
        reasons.append(f"{backend} is a {spec.platform} backend, not a {platform.name} one")
    elif not spec.supports_capability(platform.capability):
        reasons.append(f"compute capability {platform.capability} not supported")
    if not spec.supports_dtype(dtype):
        reasons.append(f"dtype {dtype} not supported")
    if not spec.supports_head_size(head_size):
        reasons.append(f"head size {head_size} not supported")
    if is_mla and not spec.is_mla:
        reasons.append("cannot read an MLA latent KV cache")
    if not is_mla and spec.is_mla:
        reasons.append("reads only an MLA latent KV cache (non-MLA model)")
    if sliding_window is not None and not spec.supports_sliding_window():
        reasons.append("sliding window not supported")
    return reasons


def select_backend(platform: Platform, dtype: str, head_size: int, is_mla: bool = False,
                   sliding_window: int | None = None, override: str | None = None) -> str:
    """The attention backend an engine on ``platform`` runs for this model, by vLLM's rules."""
    _check_inputs(dtype, head_size, sliding_window)
    args = (platform, dtype, head_size, is_mla, sliding_window)

    # 1. An explicit override beats everything else, MLA included, but is still checked.
    if override is not None:
        if not isinstance(override, str):
            raise ValueError(f"override must be a backend name or None, got {override!r}")
        name = _spec(override.upper()).name
        reasons = unsupported_reasons(name, *args)
        if not reasons:
            return name
        if platform.name == "cuda":
            # vLLM's CUDA platform never falls back silently from a backend you asked for.
            raise ValueError(f"Selected backend {name} is not valid for this configuration "
                             f"on {platform}. Reason: {reasons}")
        # vLLM's CPU platform logs "Cannot use <name> backend on CPU." and picks its own.

    # 2. + 3. MLA picks the MLA family; the platform ranks its candidates.
    chain = default_chain(platform, is_mla)

    # 4. + 5. The first candidate with no reason against it; the chain ends in the fallback.
    rejected = {}
    for name in chain:
        reasons = unsupported_reasons(name, *args)
        if not reasons:
            return name
        rejected[name] = reasons
    raise ValueError(f"No valid attention backend for {platform} with dtype={dtype}, "
                     f"head_size={head_size}, is_mla={is_mla}, sliding_window={sliding_window}. "
                     f"Reasons: {rejected}")
