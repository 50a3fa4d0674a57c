"""What the lab gives you: the link record, the course's constants, and a real ring all-reduce.

None of this is your work. ``Link`` describes one interconnect the way it is sold (latency per
hop, bandwidth in *gigabits* per second, one direction); the presets are the links the course
compares. ``run_ring_allreduce`` starts ``world_size`` processes with ``torch.distributed``
(the gloo backend, on the CPU), all-reduces one small tensor twice (once with gloo's own
``all_reduce``, once with a ring written out in ``send`` / ``recv`` calls that counts every byte
it sends) and hands back what each rank saw. torch is imported inside the process code only,
so importing this module never needs it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

# -- the course's model: an 8B Llama in bf16, a 2048-token prefill chunk, an 8 ms decode step --

HIDDEN_8B = 4096
"""Hidden size of the course's 8B model: every all-reduce moves rows of this many values."""

NUM_LAYERS_8B = 32
"""Decoder layers of the course's 8B model."""

BF16_BYTES = 2
"""Bytes per activation value (bf16 / fp16)."""

PREFILL_CHUNK_TOKENS = 2048
"""Tokens in the course's prefill chunk."""

DECODE_STEP_S = 8e-3
"""The course's decode step on one GPU (Phase 0's roofline number): 8 ms of compute."""


@dataclass(frozen=True)
class Link:
    """One interconnect: ``latency_s`` per hop, ``gbit_per_s`` gigabits per second per direction.

    Bandwidth is in bits, as links are sold (10 GbE is 10 gigabits, 1.25 gigabytes, a second);
    ``math.inf`` models a link whose only cost is its latency.
    """

    name: str
    latency_s: float
    gbit_per_s: float


NVLINK = Link("NVLink", latency_s=3e-6, gbit_per_s=2400.0)
"""The course's 3 us hop; 300 GB/s a direction (NVLink 3, an A100's 600 GB/s both ways)."""

PCIE = Link("PCIe 4.0 x16", latency_s=10e-6, gbit_per_s=256.0)
"""32 GB/s a direction; the course gives no PCIe latency: 10 us is this kata's pick."""

ETHERNET_10G = Link("10 GbE", latency_s=50e-6, gbit_per_s=10.0)
"""The course's 50 us Ethernet round trip, on 10 gigabit Ethernet."""

INFINIBAND = Link("InfiniBand HDR", latency_s=5e-6, gbit_per_s=200.0)
"""For going further: the course quotes 2-5 us and 50-400 Gb/s; this is 5 us and 200 Gb/s."""


# -- a real ring all-reduce, for the torch tier ------------------------------------------------


@dataclass(frozen=True)
class RankReport:
    """What one rank of ``run_ring_allreduce`` saw.

    ``numel`` / ``element_size``: the tensor it all-reduced (``element_size`` in bytes).
    ``gloo_result``: the tensor after ``torch.distributed.all_reduce`` (flattened).
    ``ring_result``: the tensor after the hand-written ring (flattened).
    ``ring_bytes_sent``: bytes this rank sent during the ring (both phases).
    ``ring_sends``: how many messages it sent (``2 * (world_size - 1)``).
    """

    rank: int
    numel: int
    element_size: int
    gloo_result: list[float]
    ring_result: list[float]
    ring_bytes_sent: int
    ring_sends: int


def rank_input(rank: int, numel: int) -> list[float]:
    """The values rank ``rank`` contributes: ``(rank + 1) * [0, 1, ..., numel - 1]``.

    Small integers in float32, so every sum is exact and the result is known in closed form.
    """
    return [float((rank + 1) * i) for i in range(numel)]


def _ring_allreduce(tensor, rank: int, world: int) -> tuple[int, int]:  # noqa: ANN001 (torch)
    """All-reduce ``tensor`` in place around the ring; return (bytes sent, messages sent).

    ``world`` chunks; reduce-scatter (``world - 1`` steps: pass a chunk right, add the one that
    arrives from the left), then all-gather (``world - 1`` steps: pass a finished chunk right,
    keep the one that arrives). Every send is one chunk.
    """
    import torch.distributed as dist

    chunks = list(tensor.view(-1).chunk(world))
    right, left = (rank + 1) % world, (rank - 1) % world
    sent = sends = 0
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(world - 1):
            if phase == "reduce-scatter":
                out_idx, in_idx = (rank - step) % world, (rank - step - 1) % world
            else:
                out_idx, in_idx = (rank + 1 - step) % world, (rank - step) % world
            outgoing = chunks[out_idx].clone()
            incoming = chunks[in_idx].clone()
            request = dist.isend(outgoing, right)
            dist.recv(incoming, left)
            request.wait()
            sent += outgoing.numel() * outgoing.element_size()
            sends += 1
            if phase == "reduce-scatter":
                chunks[in_idx].add_(incoming)
            else:
                chunks[in_idx].copy_(incoming)
    return sent, sends


def _rank_main(rank: int, world: int, numel: int, store: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        values = torch.tensor(rank_input(rank, numel), dtype=torch.float32)
        gloo = values.clone()
        dist.all_reduce(gloo)  # SUM
        ring = values.clone()
        sent, sends = _ring_allreduce(ring, rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    report = RankReport(rank, values.numel(), values.element_size(), gloo.tolist(),
                        ring.tolist(), sent, sends)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report.__dict__), encoding="utf-8")


def run_ring_allreduce(world_size: int, numel: int, timeout_s: float = 120.0) -> list[RankReport]:
    """All-reduce a ``numel``-element float32 tensor over ``world_size`` gloo processes.

    Each rank contributes ``rank_input(rank, numel)``. Returns one ``RankReport`` per rank, in
    rank order. Needs torch; ``numel`` must split evenly into ``world_size`` chunks. Raises
    RuntimeError when a rank fails or the whole run takes longer than ``timeout_s``.
    """
    if world_size < 1 or numel % world_size:
        raise ValueError(f"numel {numel} must split evenly into {world_size} ranks")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ring_allreduce_") as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_rank_main, args=(r, world_size, numel, store, tmp))
                 for r in range(world_size)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.join(timeout=max(deadline - time.monotonic(), 0.1))
        stuck = [p for p in procs if p.is_alive()]
        for proc in stuck:
            proc.terminate()
            proc.join()
        failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
        if stuck or failed:
            raise RuntimeError(f"ring all-reduce over {world_size} gloo processes failed "
                               f"(ranks {failed} exited abnormally; {len(stuck)} timed out)")
        return [RankReport(**json.loads(Path(tmp, f"rank{r}.json").read_text(encoding="utf-8")))
                for r in range(world_size)]

