"""Kata 07-03 — a tiled matmul and the memory-traffic model that explains it. Your work.

Units: traffic is counted in **elements** loaded from slow memory (HBM) into fast memory (shared
memory and registers) unless a name says bytes. A GEMM here is ``C = A @ B`` with ``A`` of shape
``(M, K)``, ``B`` of shape ``(K, N)`` and ``C`` of shape ``(M, N)``; it does ``2 * M * N * K``
FLOPs. Every size and tile dimension is a positive integer; anything else is a ``ValueError``
that names the argument.
"""

from __future__ import annotations

import numpy as np

H200_PEAK_FLOPS = 989e12
"""Dense fp16/bf16 tensor-core FLOP/s of an H200 (SXM), from the data sheet."""

H200_BANDWIDTH = 4.3e12
"""Bytes per second a device-to-device copy reaches on an H200 (measured, read + write)."""


def tiled_gemm(
    A: np.ndarray, B: np.ndarray, tile_m: int, tile_n: int, tile_k: int | None = None
) -> np.ndarray:
    """``A @ B``, computed one ``tile_m x tile_n`` block of C at a time.

    Each block of C is built in its own accumulator while K is walked in slices of ``tile_k``
    (``None``: all of K at once), and written to C once. Tiles at the bottom and right edges
    hold only the rows and columns that exist (37x23x19 with 8x8 tiles: the last row of tiles
    has 5 rows, the last column 7). The result has ``A @ B``'s shape and dtype, and equals it
    exactly on integer inputs (tiling only reorders the sums).

    Raises ``ValueError`` when A and B are not 2-D with matching inner dimensions (the message
    says "inner"), or a tile dimension is not a positive integer (the message names it).
    """
    raise NotImplementedError("tiled_gemm: A @ B one output tile at a time")


def naive_traffic(M: int, N: int, K: int) -> int:
    """Element loads of the untiled triple loop, in which each ``C[i, j]`` reads its row of A
    and its column of B from slow memory. 1024^3: 2,147,483,648."""
    raise NotImplementedError("naive_traffic: element loads of the untiled loop")


def tiled_traffic(
    M: int, N: int, K: int, tile_m: int, tile_n: int, tile_k: int | None = None
) -> int:
    """Element loads of a GEMM tiled into ``tile_m x tile_n`` output tiles.

    Each output tile loads the ``rows x K`` strip of A and the ``K x columns`` strip of B it
    needs, once; an edge tile loads only rows and columns that exist. ``tile_k`` (the K slice
    per step) is accepted and validated. 1024^3 with 128x128 tiles: 16,777,216; 37x23x19 with
    8x8 tiles: 4294. With 1x1 tiles this is :func:`naive_traffic`.
    """
    raise NotImplementedError("tiled_traffic: element loads of a tiled GEMM")


def reuse_factor(
    tile_m: int, tile_n: int, M: int | None = None, N: int | None = None
) -> float:
    """How many times a tiled GEMM uses each element it loads, on average.

    A function of the tile's shape alone: square 128 gives 128, 256x16 gives 30.12 (512 / 17).
    A tile cannot have more rows than the GEMM has (``M``, when given) nor more columns than
    ``N`` (when given): decode with one token uses each loaded element fewer than 2 times,
    whatever the tile. Equals ``naive_traffic / tiled_traffic`` when the (effective) tiles
    divide M and N.
    """
    raise NotImplementedError("reuse_factor: loads saved by a tile shape")


def traffic_bytes(
    M: int,
    N: int,
    K: int,
    tile_m: int,
    tile_n: int,
    dtype_bytes: int = 2,
    out_bytes: int | None = None,
) -> int:
    """Bytes the tiled GEMM moves through slow memory: its element loads of A and B at
    ``dtype_bytes`` each, plus C written to slow memory at ``out_bytes`` per element
    (``None``: ``dtype_bytes``). Each tile keeps its accumulator on chip until its last K step.
    Decode 1x4096x4096 with 128x128 tiles in fp16: 33,824,768."""
    raise NotImplementedError("traffic_bytes: bytes loaded and written by a tiled GEMM")


def arithmetic_intensity(
    M: int, N: int, K: int, tile_m: int, tile_n: int, dtype_bytes: int = 2
) -> float:
    """FLOPs per byte of :func:`traffic_bytes` (output in the input dtype) for this GEMM and
    tiling. 2048x4096x4096 read once per operand (one tile of 2048x4096): 1024.0."""
    raise NotImplementedError("arithmetic_intensity: FLOPs per byte of traffic")


def roofline_side(
    intensity: float, peak_flops: float = H200_PEAK_FLOPS, bandwidth: float = H200_BANDWIDTH
) -> str:
    """Which roof limits work of this intensity (FLOP/byte) on this machine: ``"memory"`` or
    ``"compute"``. Exactly at the ridge counts as ``"compute"``; the H200 ridge is 230 FLOP/byte.
    Raises ``ValueError`` unless all three numbers are positive."""
    raise NotImplementedError("roofline_side: which roof limits this intensity")


def fast_memory_bytes(
    tile_m: int, tile_n: int, tile_k: int, dtype_bytes: int = 2, acc_bytes: int = 4
) -> int:
    """On-chip bytes one output tile occupies during one K step: its ``tile_k``-wide piece of
    A and piece of B (``dtype_bytes`` per element) and its accumulator (``acc_bytes`` per
    element). 128x128x32 in fp16 with an fp32 accumulator: 81,920."""
    raise NotImplementedError("fast_memory_bytes: on-chip bytes of one tile step")
