"""What the lab provides for kata 17-02: the record of the platform's decisions, and two meters.

The meters clock, which correctness tests never do: their numbers are reported next to the
roofline and only sanity-checked (greater than zero, under the ceiling), never pinned.

``measure_read_bandwidth`` is the roofline's bandwidth figure for this machine: all cores
streaming a 256 MiB array (far larger than any cache) through ``numpy.sum`` in parallel, best of
several runs. Decode reads the weights and writes almost nothing, so read bandwidth is the
right figure; with every core reading it is an upper bound on what the engine can stream.
"""

from __future__ import annotations

import json
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1 << 30


@dataclass(frozen=True)
class PlatformDecisions:
    """What the platform decided for a running engine, as read back from it."""

    platform: str  # the platform class, e.g. "CpuPlatform"
    device_type: str  # "cpu", "cuda", ...
    attention_backend: str  # the backend's enum name, e.g. "CPU_ATTN"
    execution: str  # "eager" (no graphs captured) or "graphs"
    dtype: str  # what the model runs in, e.g. "bfloat16"
    kv_cache_bytes: int  # the KV budget the engine sized its cache from
    num_blocks: int
    block_size: int


def checkpoint_params(model_dir: Path) -> int:
    """Parameters stored in a safetensors checkpoint, read from its header (no torch needed)."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def measure_read_bandwidth(nbytes: int = 256 << 20, repeats: int = 7) -> float:
    """Bytes per second this machine reads from RAM with every core busy (best of ``repeats``)."""
    import numpy as np

    data = np.ones(nbytes // 4, dtype=np.float32)
    parts = np.array_split(data, os.cpu_count() or 1)
    best = 0.0
    with ThreadPoolExecutor(len(parts)) as pool:  # numpy releases the GIL inside sum
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, data.nbytes / (time.perf_counter() - start))
    return best


def measure_decode_tokens_per_second(llm: Any, prompt: str, max_tokens: int = 64) -> float:
    """Single-stream greedy decode speed: the time of ``max_tokens`` tokens minus the time of 1.

    Subtracting a one-token run removes the prefill and the fixed cost of a ``generate`` call,
    leaving ``max_tokens - 1`` decode steps. Best of three, after a warm-up.
    """
    from vllm import SamplingParams

    def timed(n: int) -> float:
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        return time.perf_counter() - start

    timed(max_tokens)  # warm-up
    best = min(timed(max_tokens) - timed(1) for _ in range(3))
    return (max_tokens - 1) / best
