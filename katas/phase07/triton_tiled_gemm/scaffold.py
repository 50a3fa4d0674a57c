"""What the lab gives you: operands on the right device, poisoned around their edges.

None of this is your work.

- :func:`kernel_device`: ``"cuda"`` on a GPU, ``"cpu"`` under the Triton interpreter;
- :func:`make_operands`: fp16 ``A (M, K)`` and ``B (K, N)``, each a view into a larger buffer
  whose extra rows and columns hold NaN, so a load past a ragged edge poisons the result;
- :func:`matmul_reference`: the answer, from fp32 products of the fp16 inputs, rounded to fp16
  once at the end.
"""

from __future__ import annotations

import torch

from katas.phase02.triton_paged_attention.scaffold import kernel_device

__all__ = ["kernel_device", "make_operands", "matmul_reference"]


def _poisoned_view(rows: int, cols: int, values: torch.Tensor, pad: int) -> torch.Tensor:
    buffer = torch.full((rows + pad, cols + pad), float("nan"), dtype=torch.float16)
    buffer[:rows, :cols] = values
    return buffer.to(kernel_device())[:rows, :cols]


def make_operands(
    M: int, N: int, K: int, *, seed: int = 0, integers: bool = False, pad: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 ``A (M, K)`` and ``B (K, N)`` on :func:`kernel_device`.

    ``integers=False``: normal values, A scaled by ``1 / sqrt(K)`` so every entry of ``A @ B``
    is of order 1 (fp16 keeps about three decimal digits there). ``integers=True``: whole
    numbers 0..7, whose products and fp32 sums are exact (up to K = 2**18), so the only rounding
    is the final cast to fp16. Each operand is the top-left corner of a buffer ``pad`` rows and
    columns larger, filled with NaN: its row stride is ``cols + pad``, and reading a row or
    column past its edge reads NaN.
    """
    gen = torch.Generator().manual_seed(seed)
    if integers:
        a = torch.randint(0, 8, (M, K), generator=gen).half()
        b = torch.randint(0, 8, (K, N), generator=gen).half()
    else:
        a = (torch.randn(M, K, generator=gen) / K**0.5).half()
        b = torch.randn(K, N, generator=gen).half()
    return _poisoned_view(M, K, a, pad), _poisoned_view(K, N, b, pad)


def matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with fp32 products and sums, rounded to fp16 once (what an fp16-in,
    fp32-accumulate kernel should return, up to the order of its sums)."""
    return (a.float() @ b.float()).half()
