"""Kata 06-04 — activation outliers, W8A8 fake quantization and the SmoothQuant migration.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase06/smoothquant``.

Layouts: activations ``x`` are ``[tokens, in_features]``, weights ``w`` are ``[out_features,
in_features]`` (a linear layer computes ``x @ w.T``), so input channel ``j`` is column ``j`` of
both. Quantization is symmetric int8 on the grid ``[-127, 127]`` (``-128`` is never used), with
round-to-nearest. Every float result is float64.
"""

from __future__ import annotations

import numpy as np


def quantize_per_tensor(t: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantize ``t`` (any shape) to int8 with ONE scale for the whole tensor.

    Returns ``(q, scale)``: ``q`` an ``int8`` array of ``t``'s shape, ``scale`` a positive
    float, such that ``q * scale`` approximates ``t`` and the element of largest magnitude
    lands on ``+-127``. An all-zero tensor gives ``q`` all zero and a finite positive scale.

    Example: ``[[0.5, -2.54], [1.0, 0.0]]`` -> scale ``0.02``, ``q = [[25, -127], [50, 0]]``.
    """
    raise NotImplementedError("quantize_per_tensor: symmetric int8 with one scale")


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a weight ``w [out, in]`` to int8 with one scale per OUTPUT channel (per row).

    Returns ``(q, scales)``: ``q`` ``int8`` of shape ``[out, in]``, ``scales`` of shape
    ``[out]``; row ``i`` is quantized exactly as :func:`quantize_per_tensor` would quantize
    ``w[i]`` alone (an all-zero row included).
    """
    raise NotImplementedError("quantize_per_channel: symmetric int8 with one scale per row")


def fake_quant(t: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Quantize then dequantize: the float64 values an int8 kernel actually sees.

    Per tensor by default; ``per_channel=True`` (a 2-D weight) uses one scale per row, as
    :func:`quantize_per_channel`. Every value moves by at most half of its quantization step.
    """
    raise NotImplementedError("fake_quant: int8 round trip back to float")


def w8a8_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` with both operands in int8, as a W8A8 int8 GEMM computes it.

    The contract (an int8 kernel's): the activation ``x [tokens, in]`` gets ONE per-tensor
    scale (it exists only at runtime, so it can only afford a cheap one); the weight
    ``w [out, in]`` gets one scale per output channel. Returns float64 ``[tokens, out]``:
    the exact product of the two dequantized operands.

    Raises ``ValueError`` when ``x`` and ``w`` are not 2-D with the same ``in``.
    """
    raise NotImplementedError("w8a8_matmul: the matmul with int8 activations and weights")


def smooth(x: np.ndarray, w: np.ndarray, alpha: float = 0.5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SmoothQuant's migration (the paper's eq. 4): returns ``(x_hat, w_hat, s)``.

    ``s`` holds one positive smoothing factor per input channel (shape ``[in]``); channel ``j``
    of ``x`` is divided by ``s[j]`` and column ``j`` of ``w`` multiplied by it, so
    ``x_hat @ w_hat.T`` equals ``x @ w.T`` (to float64 rounding). ``s[j]`` grows with channel
    ``j``'s loudness in ``x`` (its max ``|x[:, j]|``) raised to ``alpha`` and shrinks with its
    loudness in ``w`` (max ``|w[:, j]|``) raised to ``1 - alpha``: at ``alpha = 1`` every
    channel of ``x_hat`` peaks at exactly 1, at ``alpha = 0`` every column of ``w_hat`` does,
    and at ``alpha = 0.5`` channel ``j`` of ``x_hat`` and column ``j`` of ``w_hat`` share one
    max.

    A dead channel (column ``j`` of ``w`` all zero, or of ``x`` all zero) carries nothing
    through the matmul: its factor is exactly 1 and it is left as it was. The inputs are not
    modified.

    Raises ``ValueError`` when the shapes do not match or ``alpha`` is outside ``[0, 1]``.
    """
    raise NotImplementedError("smooth: migrate activation loudness into the weights")


def channel_outlier_ratio(x: np.ndarray) -> float:
    """How much louder the loudest channel of ``x [tokens, channels]`` is than the median one.

    A channel's loudness is its largest magnitude over all tokens. The ratio is the largest
    loudness over the median loudness (``np.median``: for an even number of channels, the mean
    of the middle two). Example: channel loudnesses 1, 2, 4 and 10 give ``10 / 3``.

    Raises ``ValueError`` for an empty or non-2-D ``x``, or when the median loudness is 0.
    """
    raise NotImplementedError("channel_outlier_ratio: loudest channel over the median channel")
