"""Kata 06-01 — int8 fake-quant linear: a scale, a grid, and the matmul with what is left.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase06/fake_quant_linear``.

Storage format: a weight ``W`` is ``[out, in]`` (one row per output channel). Its quantized form
is ``q``, int8 with ``W``'s shape and every value in ``[-127, 127]`` (symmetric: no zero point,
-128 unused), plus float32 scales: one per output row (per channel) or one for the whole matrix
(per tensor). ``W`` is approximately ``scale * q``.
"""

from __future__ import annotations

import numpy as np

QMAX = 127  # the grid's ends are -QMAX and +QMAX


def quantize_with_scales(W: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """``W`` on the int8 grid of the given scales: the integer nearest to ``W / scale``.

    ``W`` is a 2-D float array; ``scales`` is a scalar (per tensor) or one scale per row of
    ``W``. Returns int8 of ``W``'s shape. Exact halves go to the even neighbour (as numpy's
    rounding does): ``0.5 -> 0``, ``1.5 -> 2``, ``2.5 -> 2``. A given scale may put values
    past the grid (a calibrated scale need not cover the maximum): those saturate at ``+-127``,
    so ``127.6 -> 127`` and ``-1000 -> -127``; nothing wraps around.

    Errors: ``ValueError`` if ``W`` is not 2-D (or not finite floats), if ``scales`` is neither
    a scalar nor one per row, or if a scale is not positive and finite.
    """
    raise NotImplementedError("quantize_with_scales: put W on the int8 grid of given scales")


def quantize_per_channel(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scales)``: int8 ``q`` of ``W``'s shape, float32 ``scales`` of shape ``[out]``.

    Each row gets the smallest scale whose grid still reaches the row's largest magnitude, so
    that weight lands exactly on ``+-127``. An all-zero row gets scale ``1.0`` (and zeros).
    Every value comes back (``scale * q``) within half a step (``scale / 2``) of the original.

    Example: the row ``[0.5, -1.27, 0.0]`` has scale ``0.01`` and ``q = [50, -127, 0]``.
    Errors: ``ValueError`` for a ``W`` that is not a 2-D array of finite floats.
    """
    raise NotImplementedError("quantize_per_channel: int8 q and one scale per output row")


def quantize_per_tensor(W: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """``(q, scale)``: like :func:`quantize_per_channel` with one float32 scale for the whole
    matrix (a numpy scalar, ``np.ndim(scale) == 0``), set by the largest magnitude anywhere in
    ``W``; ``1.0`` for an all-zero matrix."""
    raise NotImplementedError("quantize_per_tensor: int8 q and one scale for the matrix")


def dequantize(q: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """``scale * q`` as float32, ``q``'s shape: ``scales`` is one per row of ``q`` or a scalar.

    Errors: ``ValueError`` if ``q`` is not 2-D or ``scales`` is neither a scalar nor one per row.
    """
    raise NotImplementedError("dequantize: back from the int8 grid to float32")


def quant_linear(x: np.ndarray, q: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """A linear layer with fake-quant weights: ``x`` is ``[tokens, in]``, ``q`` is
    ``[out, in]``; returns ``[tokens, out]``, what ``x`` through the dequantized weight gives."""
    raise NotImplementedError("quant_linear: the layer's output with the dequantized weight")


def memory_bytes(W: np.ndarray) -> int:
    """The bytes ``W`` occupies as stored (100 x 100 float32: 40,000)."""
    raise NotImplementedError("memory_bytes: bytes of the unquantized weight")


def memory_bytes_quant(q: np.ndarray, scales: np.ndarray | float) -> int:
    """The bytes the quantized weight occupies as stored: the int8 values plus the scales
    (100 x 100 per channel: 10,000 + 400)."""
    raise NotImplementedError("memory_bytes_quant: bytes of the int8 weight and its scales")
