"""Reference: batched multi-adapter LoRA (lab 11-01)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The adapter id of a row that runs the base model only.
NO_ADAPTER = -1


def lora_scaling(lora_alpha: float, r: int) -> float:
    """The factor a LoRA's delta is multiplied by: ``lora_alpha / r``."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    return lora_alpha / r


def _check_pair(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> None:
    if x.ndim != 2 or A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"x, A and B must be 2-D, got {x.shape}, {A.shape}, {B.shape}")
    if A.shape[1] != x.shape[1] or B.shape[1] != A.shape[0]:
        raise ValueError(f"shapes do not chain: x {x.shape}, A {A.shape} (r, in), "
                         f"B {B.shape} (out, r)")


def lora_delta(x: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """``scaling * (x @ A.T) @ B.T``: shrink to rank r, then expand; ``B @ A`` is never built."""
    _check_pair(x, A, B)
    shrunk = x @ A.T          # [n, r]
    return scaling * (shrunk @ B.T)   # [n, out]


def apply_single(x: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray,
                 scaling: float) -> np.ndarray:
    """One adapter for every row: ``x @ W.T + lora_delta(x, A, B, scaling)``."""
    return x @ W.T + lora_delta(x, A, B, scaling)


def apply_batched(x: np.ndarray, W: np.ndarray,
                  adapters: Mapping[int, tuple[np.ndarray, np.ndarray]],
                  adapter_ids: Sequence[int] | np.ndarray,
                  scalings: Mapping[int, float]) -> np.ndarray:
    """Row ``i`` gets ``adapters[adapter_ids[i]]``'s delta, or none for ``NO_ADAPTER``; one base
    matmul for the whole batch, one shrink/expand per adapter group."""
    ids = np.asarray(adapter_ids)
    if ids.shape != (x.shape[0],):
        raise ValueError(f"adapter_ids must have one id per row of x ({x.shape[0]}), "
                         f"got shape {ids.shape}")
    unknown = sorted({int(i) for i in ids} - set(adapters) - {NO_ADAPTER})
    missing_scale = sorted({int(i) for i in ids} - set(scalings) - {NO_ADAPTER})
    if unknown or missing_scale:
        raise ValueError(f"adapter ids {unknown or missing_scale} are in adapter_ids but not in "
                         f"{'adapters' if unknown else 'scalings'} (base rows use {NO_ADAPTER})")
    out = x @ W.T
    for aid in np.unique(ids):
        if aid == NO_ADAPTER:
            continue
        rows = np.flatnonzero(ids == aid)
        A, B = adapters[int(aid)]
        out[rows] += lora_delta(x[rows], A, B, scalings[int(aid)])
    return out
