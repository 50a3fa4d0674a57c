"""Reference for kata 00-04 — the roofline arithmetic of prefill and decode (decimal SI units).

Model: a forward pass reads every weight once and does 2 FLOPs per weight per token. It leaves
out KV-cache traffic and attention FLOPs, which matter at long context (see the README).
"""

from __future__ import annotations

import math


def ridge_point(peak_flops: float, mem_bandwidth: float) -> float:
    """FLOPs the hardware can do per byte it moves."""
    return peak_flops / mem_bandwidth


def arithmetic_intensity(n_params: float, num_tokens: int, dtype_bytes: float) -> float:
    """FLOPs per byte of one forward pass over ``num_tokens`` tokens sharing one weight read."""
    # Kept as the full ratio on purpose: n_params cancels, so intensity depends only on how
    # many tokens share one trip through the weights, never on model size.
    return (2 * n_params * num_tokens) / (n_params * dtype_bytes)


def is_compute_bound(intensity: float, ridge: float) -> bool:
    """True when the work is compute-bound; exactly at the ridge counts as compute-bound."""
    return intensity >= ridge


def critical_batch_size(ridge: float, dtype_bytes: float) -> int:
    """The fewest tokens per weight read that make a step compute-bound."""
    # Intensity is 2 * tokens / dtype_bytes, so the step reaches the ridge at
    # ridge * dtype_bytes / 2 tokens; round up to a whole token (H100 fp16: 295.5 -> 296).
    return math.ceil(ridge * dtype_bytes / 2)


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The bandwidth ceiling on decode throughput, in tokens per second across the batch."""
    weight_bytes = n_params * dtype_bytes
    # Every sequence in the batch rides the same weight stream: steps/s is fixed by bandwidth,
    # tokens/s scales with the batch for free (until the step turns compute-bound).
    return mem_bandwidth / weight_bytes * batch


def compute_utilization(intensity: float, ridge: float) -> float:
    """The fraction of peak FLOP/s a workload can use."""
    # Achievable FLOP/s = min(peak, bandwidth * intensity); divide by peak.
    return min(intensity / ridge, 1.0)
