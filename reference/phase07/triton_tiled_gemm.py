"""Reference for kata 07-05 (07-03 in Triton) — a tiled fp16 GEMM that counts its own loads.

One program per ``BLOCK_M x BLOCK_N`` tile of C walks K in ``BLOCK_K`` steps, accumulating
``tl.dot`` products in fp32. With ``COUNT_BYTES`` it also adds to a global int64 counter the
bytes its masked loads asked for: the valid elements only, so the total is the traffic model of
kata ``tiled_gemm`` exactly.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


def modelled_load_bytes(
    M: int, N: int, K: int, block_m: int, block_n: int, dtype_bytes: int = 2
) -> int:
    """Bytes a tiled GEMM loads from global memory: A once per column of tiles, B once per row
    of tiles, edge tiles loading only what exists."""
    for name, value in (("M", M), ("N", N), ("K", K), ("block_m", block_m),
                        ("block_n", block_n), ("dtype_bytes", dtype_bytes)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    elements = M * K * math.ceil(N / block_n) + K * N * math.ceil(M / block_m)
    return elements * dtype_bytes


@triton.jit
def tiled_gemm_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    loaded_bytes_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    COUNT_BYTES: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    row_ok = offs_m < M
    col_ok = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    # The tile's valid rows and columns: fewer than BLOCK_M / BLOCK_N only at the edges.
    rows = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M)
    cols = tl.minimum(N - pid_n * BLOCK_N, BLOCK_N)
    elem_bytes = a_ptr.dtype.element_ty.primitive_bitwidth // 8
    loaded = tl.zeros((), dtype=tl.int64)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(a, b)  # fp16 operands, fp32 result
        if COUNT_BYTES:
            depth = tl.minimum(K - k0, BLOCK_K)  # the last K step may be short
            loaded += (rows * depth + depth * cols).to(tl.int64) * elem_bytes
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
    if COUNT_BYTES:
        tl.atomic_add(loaded_bytes_ptr, loaded)  # one atomic per program


def _check(a: torch.Tensor, b: torch.Tensor, block_m: int, block_n: int, block_k: int) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(
            f"need a (M, K) and b (K, N) with matching inner dimensions, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != torch.float16 or b.dtype != torch.float16:
        raise ValueError(f"a and b must be float16, got dtype {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"a and b must be on one device, got {a.device} and {b.device}")
    for name, value in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot), got {value!r}")


def _launch(a, b, block_m, block_n, block_k, count, num_warps, num_stages):
    _check(a, b, block_m, block_n, block_k)
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), dtype=torch.float16, device=a.device)
    # A fresh counter for every counted call; uncounted launches pass C, which they never
    # touch through this pointer (COUNT_BYTES compiles the counting out).
    loaded = torch.zeros(1, dtype=torch.int64, device=a.device) if count else c
    if num_warps is None:
        num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    tiled_gemm_kernel[grid](
        a, b, c, loaded, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, COUNT_BYTES=count,
        num_warps=num_warps, num_stages=3 if num_stages is None else num_stages,
    )
    return c, loaded


def tiled_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    block_m: int = 64,
    block_n: int = 64,
    block_k: int = 32,
    *,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """``a @ b`` (fp16 in, fp32 accumulate, fp16 out) with the given tile; counts nothing."""
    c, _ = _launch(a, b, block_m, block_n, block_k, False, num_warps, num_stages)
    return c


def counted_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    block_m: int = 64,
    block_n: int = 64,
    block_k: int = 32,
    *,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, int]:
    """:func:`tiled_matmul` with ``COUNT_BYTES`` on: ``(c, bytes loaded from global memory)``."""
    c, loaded = _launch(a, b, block_m, block_n, block_k, True, num_warps, num_stages)
    return c, int(loaded.item())
