"""Reference for kata 06-01: symmetric int8 fake-quant, per output channel and per tensor.

Storage format: ``q`` is int8 in ``[-127, 127]`` with the weight's shape ``[out, in]``; the
scales are float32, one per output row (per channel) or one for the whole matrix (per tensor).
``W ~= scale * q``; every value is off by at most half its scale.
"""

from __future__ import annotations

import numpy as np

QMAX = 127  # symmetric int8: the grid is -127 .. 127 (255 points); -128 is never used


def _weight(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D [out, in] weight, got shape {W.shape}")
    if not np.issubdtype(W.dtype, np.floating):
        raise ValueError(f"W must be a floating-point array, got dtype {W.dtype}")
    if not np.all(np.isfinite(W)):
        raise ValueError("W holds NaN or inf: no finite scale covers it")
    return W


def _row_scales(scales: np.ndarray | float, rows: int) -> np.ndarray:
    """``scales`` as something that broadcasts over ``[rows, in]``: a scalar stays a scalar,
    a per-row vector becomes a column."""
    s = np.asarray(scales, dtype=np.float32)
    if s.ndim == 0:
        return s
    if s.shape != (rows,):
        raise ValueError(f"scales must be a scalar or have one entry per output row ({rows}), "
                         f"got shape {s.shape}")
    return s[:, None]


def quantize_with_scales(W: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """``W / scale`` rounded to the nearest integer and clipped to ``[-127, 127]``, as int8."""
    W = _weight(W)
    s = _row_scales(scales, W.shape[0])
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ValueError("every scale must be positive and finite")
    q = np.round(W / s)  # numpy rounds half to even
    q = np.clip(q, -QMAX, QMAX)  # before the cast: 128 would wrap to -128
    return q.astype(np.int8)


def _scales_from_absmax(absmax: np.ndarray) -> np.ndarray:
    scales = (absmax / QMAX).astype(np.float32)
    scales[scales == 0] = 1.0  # an all-zero row: any scale works, 1 is the convention
    return scales


def quantize_per_channel(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One scale per output row: ``scale[o] = max|W[o]| / 127`` (1 for an all-zero row)."""
    W = _weight(W)
    scales = _scales_from_absmax(np.abs(W).max(axis=1))
    return quantize_with_scales(W, scales), scales


def quantize_per_tensor(W: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """One scale for the whole matrix: ``max|W| / 127`` (1 for an all-zero matrix)."""
    W = _weight(W)
    scale = _scales_from_absmax(np.abs(W).max(keepdims=True).reshape(1))[0]
    return quantize_with_scales(W, scale), scale


def dequantize(q: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """``scale * q`` as float32, with a scalar or a per-row vector of scales."""
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"q must be a 2-D [out, in] array, got shape {q.shape}")
    return _row_scales(scales, q.shape[0]) * q.astype(np.float32)


def quant_linear(x: np.ndarray, q: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """The layer with fake-quant weights: ``x @ dequantize(q, scales).T``."""
    return np.asarray(x) @ dequantize(q, scales).T


def memory_bytes(W: np.ndarray) -> int:
    """Bytes the unquantized weight occupies."""
    return int(np.asarray(W).nbytes)


def memory_bytes_quant(q: np.ndarray, scales: np.ndarray | float) -> int:
    """Bytes the quantized weight occupies: the int8 values plus the scales, as stored."""
    return int(np.asarray(q).nbytes + np.asarray(scales).nbytes)
