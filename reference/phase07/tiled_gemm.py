"""Reference for kata 07-03 — a tiled matmul and the memory-traffic model that explains it.

Traffic is counted in *elements* moved between slow memory (HBM) and fast memory (shared
memory and registers); :func:`traffic_bytes` turns elements into bytes and adds the output's
one write. FLOPs are ``2 * M * N * K`` (a multiply and an add per term).
"""

from __future__ import annotations

import math

import numpy as np

H200_PEAK_FLOPS = 989e12
"""Dense fp16/bf16 tensor-core FLOP/s of an H200 (SXM), from the data sheet."""

H200_BANDWIDTH = 4.3e12
"""Bytes per second a device-to-device copy reaches on an H200 (measured, read + write)."""


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def tiled_gemm(
    A: np.ndarray, B: np.ndarray, tile_m: int, tile_n: int, tile_k: int | None = None
) -> np.ndarray:
    """``A @ B`` computed one ``tile_m x tile_n`` output tile at a time, K in ``tile_k`` steps."""
    A, B = np.asarray(A), np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(
            f"tiled_gemm needs A (M, K) and B (K, N) with matching inner dimensions, "
            f"got {A.shape} and {B.shape}"
        )
    M, K = A.shape
    N = B.shape[1]
    tile_k = K if tile_k is None else tile_k
    _check_positive(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k)
    C = np.zeros((M, N), dtype=np.result_type(A, B))
    for i0 in range(0, M, tile_m):
        i1 = min(i0 + tile_m, M)  # the last row of tiles may be short: a ragged edge
        for j0 in range(0, N, tile_n):
            j1 = min(j0 + tile_n, N)
            acc = np.zeros((i1 - i0, j1 - j0), dtype=C.dtype)  # the tile's accumulator
            for k0 in range(0, K, tile_k):
                k1 = min(k0 + tile_k, K)
                acc += A[i0:i1, k0:k1] @ B[k0:k1, j0:j1]
            C[i0:i1, j0:j1] = acc  # written once, after the whole K loop
    return C


def naive_traffic(M: int, N: int, K: int) -> int:
    """Element loads of the untiled triple loop: every C[i, j] reads a row of A and a column
    of B."""
    _check_positive(M=M, N=N, K=K)
    return M * N * 2 * K


def tiled_traffic(
    M: int, N: int, K: int, tile_m: int, tile_n: int, tile_k: int | None = None
) -> int:
    """Element loads of a tiled GEMM: each output tile reads its ``tile_m x K`` strip of A and
    its ``K x tile_n`` strip of B once; edge tiles read only the rows and columns that exist."""
    _check_positive(M=M, N=N, K=K, tile_m=tile_m, tile_n=tile_n, tile_k=tile_k)
    # tile_k only cuts each strip into pieces: the pieces add up to the whole strip, so it
    # changes how much fast memory a step needs (fast_memory_bytes), never the traffic.
    a_loads = M * K * math.ceil(N / tile_n)  # A is re-read once per column of tiles
    b_loads = K * N * math.ceil(M / tile_m)  # B is re-read once per row of tiles
    return a_loads + b_loads


def reuse_factor(
    tile_m: int, tile_n: int, M: int | None = None, N: int | None = None
) -> float:
    """How many times each loaded element is used: the harmonic mean of the effective tile
    dimensions (a tile never has more rows than M nor more columns than N)."""
    _check_positive(tile_m=tile_m, tile_n=tile_n, M=M, N=N)
    tm = tile_m if M is None else min(tile_m, M)
    tn = tile_n if N is None else min(tile_n, N)
    return 2 / (1 / tm + 1 / tn)


def traffic_bytes(
    M: int,
    N: int,
    K: int,
    tile_m: int,
    tile_n: int,
    dtype_bytes: int = 2,
    out_bytes: int | None = None,
) -> int:
    """Bytes a tiled GEMM moves through slow memory: its loads plus one write of C."""
    out_bytes = dtype_bytes if out_bytes is None else out_bytes
    _check_positive(dtype_bytes=dtype_bytes, out_bytes=out_bytes)
    loads = tiled_traffic(M, N, K, tile_m, tile_n) * dtype_bytes
    writes = M * N * out_bytes  # the accumulator stays on chip until the K loop is done
    return loads + writes


def arithmetic_intensity(
    M: int, N: int, K: int, tile_m: int, tile_n: int, dtype_bytes: int = 2
) -> float:
    """FLOPs per byte of slow-memory traffic for this GEMM under this tiling."""
    return 2 * M * N * K / traffic_bytes(M, N, K, tile_m, tile_n, dtype_bytes)


def roofline_side(
    intensity: float, peak_flops: float = H200_PEAK_FLOPS, bandwidth: float = H200_BANDWIDTH
) -> str:
    """``"memory"`` below the ridge (peak_flops / bandwidth), ``"compute"`` at or above it."""
    if intensity <= 0 or peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(
            f"intensity, peak_flops and bandwidth must be positive, got {intensity!r}, "
            f"{peak_flops!r}, {bandwidth!r}"
        )
    ridge = peak_flops / bandwidth
    return "compute" if intensity >= ridge else "memory"


def fast_memory_bytes(
    tile_m: int, tile_n: int, tile_k: int, dtype_bytes: int = 2, acc_bytes: int = 4
) -> int:
    """On-chip bytes one tile needs at a time: an A piece, a B piece and the accumulator."""
    _check_positive(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, dtype_bytes=dtype_bytes,
                    acc_bytes=acc_bytes)
    staged = (tile_m * tile_k + tile_k * tile_n) * dtype_bytes
    return staged + tile_m * tile_n * acc_bytes
