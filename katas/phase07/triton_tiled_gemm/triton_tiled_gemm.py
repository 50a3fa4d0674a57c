"""Kata 07-05 (07-03 in Triton) — a tiled fp16 GEMM that counts its own loads. Your work.

``C = A @ B`` with ``A (M, K)`` and ``B (K, N)`` float16, any strides, on one device; ``C`` is a
new contiguous float16 ``(M, N)`` tensor on that device. Products are summed in float32 and
rounded to float16 once, when C is stored.

**Tiles.** One program per ``BLOCK_M x BLOCK_N`` tile of C, on the grid ``(ceil(M / BLOCK_M),
ceil(N / BLOCK_N))``; program ``(i, j)`` owns rows ``i * BLOCK_M ...`` and columns
``j * BLOCK_N ...``, and walks K in steps of ``BLOCK_K``. The three block sizes are powers of
two, at least 16 (``tl.dot``'s minimum).

**Counting.** With ``COUNT_BYTES`` on, the kernel adds to an int64 counter in global memory
(``tl.atomic_add``) the bytes its loads of A and B fetch from global memory. A masked-off
element (past row M, column N or depth K) is not fetched and is not counted. The total must
equal :func:`modelled_load_bytes` exactly, for any shape and tile. Stores are not loads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def modelled_load_bytes(
    M: int, N: int, K: int, block_m: int, block_n: int, dtype_bytes: int = 2
) -> int:
    """Bytes a GEMM tiled into ``block_m x block_n`` output tiles loads from global memory:
    each tile loads the rows of A and the columns of B it needs across all of K, once, and an
    edge tile only those that exist (kata ``tiled_gemm``'s traffic model, in bytes). 37x23x19
    with 16x16 tiles in fp16: 5434. Raises ``ValueError`` for a size below 1."""
    raise NotImplementedError("modelled_load_bytes: the traffic model, in bytes")


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
    """Program ``(pid_m, pid_n)`` computes one tile of C (module docstring).

    Parameters: A, B and C as pointers; ``loaded_bytes_ptr``, one int64 in global memory;
    the sizes; the strides, in elements, of A's rows and columns, of B's rows and columns
    and of C's rows and columns. Compile-time: the tile and ``COUNT_BYTES``.

    Contract: reads no element of A or B outside ``(M, K)`` / ``(K, N)`` (the memory around
    them may hold NaN); writes only C's ``(M, N)`` entries; accumulates in float32. With
    ``COUNT_BYTES``, adds this program's loaded bytes to ``*loaded_bytes_ptr`` (masked-off
    elements excluded); without it, touches no counter.
    """
    # Your kernel goes here (tiled_matmul and counted_matmul must launch it once it is written).
    pass


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
    """``a @ b`` by :func:`tiled_gemm_kernel` with the given tile and ``COUNT_BYTES`` off.

    ``num_warps`` and ``num_stages`` are passed to the launch (``None``: your choice).
    Raises ``ValueError`` when ``a`` and ``b`` are not 2-D with matching inner dimensions
    (message says "inner"), are not both float16 (says "float16"), are on different devices,
    or a block size is not a power of two >= 16 (names it).
    """
    raise NotImplementedError("tiled_matmul: launch the tiled kernel on a 2-D grid")


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
    """:func:`tiled_matmul` with ``COUNT_BYTES`` on: returns ``(c, loaded_bytes)``, the bytes
    this one call's loads fetched (a Python int; every call counts from zero). Raises like
    :func:`tiled_matmul`."""
    raise NotImplementedError("counted_matmul: the tiled kernel with its load counter on")
