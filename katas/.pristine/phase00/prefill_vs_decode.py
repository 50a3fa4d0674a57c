"""Kata 00-04 — prefill vs decode on the roofline. Your work goes here.

Six one-line functions. Units are decimal SI throughout: FLOP/s (an A100 is ``312e12``), bytes
per second (``2.0e12``), bytes (an 8B fp16 model is ``16e9``). The model of a forward pass is
deliberately minimal: it reads every weight once (``n_params x dtype_bytes`` bytes) and does
2 FLOPs per weight per token that shares the trip (one multiply-accumulate).
"""

from __future__ import annotations

# math.ceil is yours to use in critical_batch_size.
import math  # noqa: F401


def ridge_point(peak_flops: float, mem_bandwidth: float) -> float:
    """FLOPs the hardware can do per byte it moves: ``peak_flops / mem_bandwidth``.

    A workload whose arithmetic intensity reaches this value is compute-bound; below it,
    memory-bound. A100: ``312e12 / 2.0e12 = 156.0`` FLOP/byte.
    """
    raise NotImplementedError("ridge_point: peak FLOP/s divided by memory bandwidth")


def arithmetic_intensity(n_params: float, num_tokens: int, dtype_bytes: float) -> float:
    """FLOPs per byte of one forward pass over ``num_tokens`` tokens sharing one weight read.

    FLOPs ``2 x n_params x num_tokens`` over bytes ``n_params x dtype_bytes``. Write it as that
    ratio: the parameter count cancels, which is the point of the kata.
    """
    raise NotImplementedError("arithmetic_intensity: 2 x params x tokens / (params x dtype_bytes)")


def is_compute_bound(intensity: float, ridge: float) -> bool:
    """True when the work is compute-bound: ``intensity >= ridge`` (the ridge itself counts)."""
    raise NotImplementedError("is_compute_bound: intensity >= ridge")


def critical_batch_size(ridge: float, dtype_bytes: float) -> int:
    """The fewest tokens per weight read that make a step compute-bound.

    Solve ``2 x tokens / dtype_bytes >= ridge`` for the smallest whole number of tokens:
    ``ceil(ridge x dtype_bytes / 2)``. A100 in fp16: 156.
    """
    raise NotImplementedError("critical_batch_size: ceil(ridge x dtype_bytes / 2)")


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The bandwidth ceiling on decode throughput, in tokens per second across the batch.

    One decode step must stream every weight (``n_params x dtype_bytes`` bytes), so at most
    ``mem_bandwidth / weight_bytes`` steps run per second, and each step yields ``batch``
    tokens. 8B fp16 on an A100: ``2.0e12 / 16e9 = 125`` tokens/s at batch 1. (Weights only:
    valid while the step stays memory-bound, i.e. below the critical batch size.)
    """
    raise NotImplementedError("decode_tokens_per_second: bandwidth / weight bytes x batch")


def compute_utilization(intensity: float, ridge: float) -> float:
    """The fraction of peak FLOP/s a workload can use: ``intensity / ridge``, at most 1.0.

    Memory-bound work runs at ``bandwidth x intensity`` FLOP/s, that is ``intensity / ridge``
    of peak; compute-bound work runs at peak. Single-stream decode on an A100: 1/156 ≈ 0.6%.
    """
    raise NotImplementedError("compute_utilization: min(intensity / ridge, 1.0)")
