"""Reference for kata 06-02: read three meters off quantized engines and say what they mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

from katas.phase06.quantize_and_eval.scaffold import Analysis, RunRecord

GIB = 2**30


def perplexity(logprobs: Sequence[float]) -> float:
    values = [float(x) for x in logprobs]
    if not values:
        raise ValueError("perplexity needs at least one token log-probability")
    if any(not math.isfinite(x) or x > 0 for x in values):
        raise ValueError("log-probabilities must be finite and <= 0")
    return math.exp(-sum(values) / len(values))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def kv_bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                       block_size: int) -> int:
    for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                        ("head_dim", head_dim), ("dtype_bytes", dtype_bytes),
                        ("block_size", block_size)):
        _positive_int(name, value)
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes * block_size


def cpu_kv_blocks(kv_cache_gib: int, bytes_per_block: int) -> int:
    _positive_int("kv_cache_gib", kv_cache_gib)
    _positive_int("bytes_per_block", bytes_per_block)
    return kv_cache_gib * GIB // bytes_per_block


def gpu_kv_blocks(total_bytes: int, utilization: float, weight_bytes: int,
                  activation_bytes: int, bytes_per_block: int) -> int:
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    _positive_int("bytes_per_block", bytes_per_block)
    free = math.floor(total_bytes * utilization) - weight_bytes - activation_bytes
    if free < bytes_per_block:
        raise ValueError(f"no room for a KV block: {total_bytes * utilization:.0f} budgeted "
                         f"bytes minus {weight_bytes} of weights and {activation_bytes} of "
                         f"activations leaves {free}")
    return free // bytes_per_block


def analyze(runs: Sequence[RunRecord], baseline: str) -> Analysis:
    runs = list(runs)
    names = [r.name for r in runs]
    if not runs or len(set(names)) != len(names):
        raise ValueError(f"need runs with distinct names, got {names}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the runs {names}")
    base = runs[names.index(baseline)]
    # sorted() is stable: runs that tie keep their input order
    throughput = [r.name for r in sorted(runs, key=lambda r: -r.tokens_per_s)]
    capacity = [r.name for r in sorted(runs, key=lambda r: -r.kv_blocks)]
    quality = None
    if all(r.perplexity is not None for r in runs):
        quality = [r.name for r in sorted(runs, key=lambda r: r.perplexity)]
    dominant = None
    for r in runs:
        others = [o for o in runs if o is not r]
        if all(r.tokens_per_s > o.tokens_per_s and r.kv_blocks > o.kv_blocks for o in others):
            dominant = r.name
    return Analysis(
        throughput_order=throughput,
        capacity_order=capacity,
        quality_order=quality,
        speedup={r.name: r.tokens_per_s / base.tokens_per_s for r in runs},
        capacity_gain={r.name: r.kv_blocks / base.kv_blocks for r in runs},
        capacity_tied=len({r.kv_blocks for r in runs}) == 1,
        dominant=dominant,
    )
