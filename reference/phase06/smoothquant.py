"""Reference for kata 06-04 — activation outliers, W8A8 fake quantization and the SmoothQuant
migration, in numpy float64.

Layouts: activations ``x`` are ``[tokens, in_features]``, weights ``w`` are ``[out_features,
in_features]`` (a linear layer computes ``x @ w.T``), so input channel ``j`` is column ``j`` of
both. Symmetric int8 on the grid ``[-127, 127]``.
"""

from __future__ import annotations

import numpy as np

QMAX = 127


def _absmax_scale(absmax: np.ndarray) -> np.ndarray:
    """``absmax / 127``, with 1.0 where ``absmax`` is 0 (an all-zero slice quantizes to 0)."""
    return np.where(absmax > 0, absmax / QMAX, 1.0)


def quantize_per_tensor(t: np.ndarray) -> tuple[np.ndarray, float]:
    """One scale for the whole tensor: ``scale = max|t| / 127``; ``q = round(t / scale)``."""
    t = np.asarray(t, dtype=np.float64)
    scale = float(_absmax_scale(np.abs(t).max(initial=0.0)))
    q = np.clip(np.round(t / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One scale per output channel (row of ``w``): ``scales[i] = max|w[i, :]| / 127``."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"quantize_per_channel expects a 2-D [out, in] weight, got shape "
                         f"{w.shape}")
    scales = _absmax_scale(np.abs(w).max(axis=1, initial=0.0))
    q = np.clip(np.round(w / scales[:, None]), -QMAX, QMAX).astype(np.int8)
    return q, scales


def fake_quant(t: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Quantize to int8 and straight back to float64 (per tensor, or per row of a weight)."""
    if per_channel:
        q, scales = quantize_per_channel(t)
        return q.astype(np.float64) * scales[:, None]
    q, scale = quantize_per_tensor(t)
    return q.astype(np.float64) * scale


def w8a8_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` as an int8 kernel computes it: int8 x int8 products summed exactly, then
    rescaled by the activation's one scale and each output channel's weight scale."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"w8a8_matmul needs x [tokens, in] and w [out, in] with the same in; "
                         f"got x {x.shape} and w {w.shape}")
    qx, sx = quantize_per_tensor(x)
    qw, sw = quantize_per_channel(w)
    # The int32 accumulator of a real kernel, through BLAS: every product is at most 127 * 127
    # and every partial sum an integer far below 2**53, so float64 holds each one exactly.
    acc = qx.astype(np.float64) @ qw.astype(np.float64).T
    return acc * sx * sw[None, :]


def smooth(x: np.ndarray, w: np.ndarray, alpha: float = 0.5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SmoothQuant's migration (eq. 4): returns ``(x / s, w * s, s)`` with, per input channel j,
    ``s_j = max|x[:, j]| ** alpha / max|w[:, j]| ** (1 - alpha)`` (1 where either max is 0)."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"smooth needs x [tokens, in] and w [out, in] with the same in; "
                         f"got x {x.shape} and w {w.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    x_max = np.abs(x).max(axis=0)  # per input channel, over tokens
    w_max = np.abs(w).max(axis=0)  # per input channel, over output rows
    live = (x_max > 0) & (w_max > 0)
    s = np.ones(x.shape[1])
    s[live] = x_max[live] ** alpha / w_max[live] ** (1.0 - alpha)
    return x / s[None, :], w * s[None, :], s


def channel_outlier_ratio(x: np.ndarray) -> float:
    """Loudest channel over the median channel, a channel's loudness being ``max_t |x[t, j]|``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"channel_outlier_ratio expects a non-empty [tokens, channels] array, "
                         f"got shape {x.shape}")
    loudness = np.abs(x).max(axis=0)
    median = float(np.median(loudness))
    if median == 0.0:
        raise ValueError("channel_outlier_ratio: the median channel is all zeros, the ratio is "
                         "undefined")
    return float(loudness.max()) / median
