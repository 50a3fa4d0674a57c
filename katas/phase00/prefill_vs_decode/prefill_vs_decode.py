"""Kata 00-04 — prefill vs decode on the roofline. Your work goes here.

Six one-line functions. Units are decimal SI throughout: FLOP/s (an A100 does ``312e12``),
bytes per second (``2.0e12``), bytes (an 8B fp16 model is ``16e9``). The model of a forward
pass is deliberately minimal: it reads every weight once (``dtype_bytes`` bytes per
parameter), and every token in the pass uses every weight in one multiply-accumulate, which is
2 FLOPs. KV-cache traffic and attention FLOPs are left out.
"""

from __future__ import annotations


def ridge_point(peak_flops: float, mem_bandwidth: float) -> float:
    """The hardware's ridge point, in FLOP per byte.

    The intensity at which the memory roof meets the compute roof: work that does fewer FLOPs
    per byte moved is memory-bound, work that does at least this many is compute-bound.
    A100 (``312e12`` FLOP/s, ``2.0e12`` bytes/s): 156.0.
    """
    raise NotImplementedError("ridge_point: the FLOP/byte where memory and compute roofs meet")


def arithmetic_intensity(n_params: float, num_tokens: int, dtype_bytes: float) -> float:
    """FLOPs per byte of one forward pass in which ``num_tokens`` tokens share one weight read.

    Every one of the ``n_params`` weights (``dtype_bytes`` each) is read once and used by
    every token in one multiply-accumulate. The result does not depend on ``n_params``: an 8B
    and a 70B model give the same intensity. fp16: 1 token gives 1.0, 2,048 tokens 2048.0.
    """
    raise NotImplementedError("arithmetic_intensity: FLOPs per byte of one forward pass")


def is_compute_bound(intensity: float, ridge: float) -> bool:
    """True when work of this intensity is compute-bound on hardware with this ridge.

    Exactly at the ridge counts as compute-bound: on an A100 in fp16, 155 tokens per weight
    read are memory-bound and 156 are compute-bound.
    """
    raise NotImplementedError("is_compute_bound: which side of the ridge the work is on")


def critical_batch_size(ridge: float, dtype_bytes: float) -> int:
    """The fewest whole tokens per weight read that make a forward pass compute-bound (an int).

    A100 in fp16: 156. H100 in fp16 (ridge about 295.5): 296.
    """
    raise NotImplementedError("critical_batch_size: fewest tokens that make a step compute-bound")


def decode_tokens_per_second(
    n_params: float, dtype_bytes: float, mem_bandwidth: float, batch: int = 1
) -> float:
    """The bandwidth ceiling on decode throughput, in tokens per second across the batch.

    Every decode step must stream all the weights from memory, and each step yields one token
    for each of the ``batch`` sequences. 8B fp16 on an A100: 125 tokens/s at batch 1, 8,000 at
    batch 64. (Weights only: valid while the step stays memory-bound.)
    """
    raise NotImplementedError("decode_tokens_per_second: tokens/s the memory bandwidth allows")


def compute_utilization(intensity: float, ridge: float) -> float:
    """The fraction of peak FLOP/s that work of this intensity can use, from 0 to 1.

    Memory-bound work runs at ``bandwidth x intensity`` FLOP/s; compute-bound work runs at
    peak, never above it. Single-stream decode on an A100: 1/156, about 0.6%. A 2,048-token
    prefill: 1.0.
    """
    raise NotImplementedError("compute_utilization: the usable fraction of peak FLOP/s")
