"""Kata 10-03's all-reduce model against a real all-reduce: two gloo processes on the CPU.

Two processes (``torch.distributed``, gloo backend, one thread each) all-reduce bf16 tensors of
a sweep of sizes, 256 B to 8 MiB. Each size is timed in several rounds of many calls; the best
round (the least disturbed by other processes) is the measurement, the median is printed next
to it. A weighted least-squares fit of the best times gives the two constants of the kata's
model, ``time = 2 (N - 1) x latency + traffic / bandwidth`` with ``traffic = 2 (N - 1) / N x
payload`` (N = 2 by default): the latency per hop (alpha) and the bandwidth (beta). The fit
leaves out the course's two payloads, which are then predicted:

- decode: one token's activation row of the course's 8B model, 1 x 4096 x 2 bytes = 8 KiB
  (inside the fitted range);
- prefill: a 2048-token chunk, 2048 x 4096 x 2 bytes = 16 MiB (twice the largest fitted size).

The table prints, per size, the measurement, the fitted model's prediction (through the
reference's, or with ``--impl mine`` your, ``allreduce_time_s`` with the fitted ``Link``) and
their ratio. The ratios are reported, never asserted: this is one machine's loopback, not a GPU
interconnect. The last lines price the course's 64-all-reduce decode step on this "link" and on
the course's.

    python benchmarks/bench_allreduce.py            # needs torch (pip install -e ".[torch]")
    python benchmarks/bench_allreduce.py --quick    # fewer repeats
    python benchmarks/bench_allreduce.py --world 4  # a 4-process ring
    python benchmarks/bench_allreduce.py --impl mine   # your kata's model predicts
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the repo

from katas.phase10.tp_comm_cost.scaffold import (  # noqa: E402
    BF16_BYTES,
    DECODE_STEP_S,
    ETHERNET_10G,
    HIDDEN_8B,
    NUM_LAYERS_8B,
    NVLINK,
    PREFILL_CHUNK_TOKENS,
    Link,
)

DECODE = 1 * HIDDEN_8B * BF16_BYTES  # 8 KiB: one token's activation row
PREFILL = PREFILL_CHUNK_TOKENS * HIDDEN_8B * BF16_BYTES  # 16 MiB
FIT_SIZES = [2**k for k in range(8, 24) if 2**k != DECODE]  # 256 B .. 8 MiB, not 8 KiB
TARGET_S = 0.05  # seconds of all-reduces per round and size


def _worker(rank: int, world: int, store: str, sizes: list[int], repeats: int,
            out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    results: dict[int, list[float]] = {}
    for size in sizes:
        x = torch.ones(size // BF16_BYTES, dtype=torch.bfloat16)
        for _ in range(3):  # warm-up: connections, buffers
            dist.all_reduce(x)
        # Both ranks must run the same number of calls: rank 0 picks it, broadcasts it.
        t0 = time.perf_counter()
        dist.all_reduce(x)
        once = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.broadcast(once, src=0)
        calls = max(3, min(2000, int(TARGET_S / max(once.item(), 1e-6))))
        per_call = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(calls):
                dist.all_reduce(x)
            per_call.append((time.perf_counter() - t0) / calls)
        results[size] = per_call
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps({str(k): v for k, v in results.items()}),
                             encoding="utf-8")


def measure(world: int, sizes: list[int], repeats: int) -> dict[int, list[float]]:
    """Seconds per all-reduce, one figure per repeat, per payload size (rank 0's clock)."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench_allreduce_") as tmp:
        out = os.path.join(tmp, "times.json")
        procs = [ctx.Process(target=_worker, args=(r, world, os.path.join(tmp, "store"), sizes,
                                                    repeats, out)) for r in range(world)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode != 0 for proc in procs):
            raise SystemExit("a gloo process failed; see its traceback above")
        raw = json.loads(Path(out).read_text(encoding="utf-8"))
    return {int(k): v for k, v in raw.items()}


def fit(model, world: int, times: dict[int, float]) -> Link:  # noqa: ANN001 (a module)
    """Fit ``t = a + b x traffic`` (relative errors weighted equally); return the model's Link."""
    import numpy as np

    sizes = sorted(times)
    traffic = np.array([model.ring_allreduce_traffic_per_rank(s, world) for s in sizes])
    t = np.array([times[s] for s in sizes])
    # Divide each row by t: minimise the relative error, so 256 B counts as much as 8 MiB.
    design = np.stack([np.ones_like(traffic), traffic], axis=1) / t[:, None]
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    hops = 2 * (world - 1)
    latency = max(float(a), 0.0) / hops
    gbit = 8 / float(b) / 1e9 if b > 0 else float("inf")
    return Link("gloo over loopback (fitted)", latency_s=latency, gbit_per_s=gbit)


def human(n: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--world", type=int, default=2, help="processes in the ring (2)")
    parser.add_argument("--impl", choices=["reference", "mine"], default="reference",
                        help="whose model predicts: the reference's or your kata's")
    args = parser.parse_args()
    model = importlib.import_module("reference.phase10.tp_comm_cost" if args.impl == "reference"
                                    else "katas.phase10.tp_comm_cost.tp_comm_cost")
    world, repeats = args.world, 5 if args.quick else 15
    model.tp_comm_time_per_step(DECODE, world, NVLINK)  # fail before measuring, not after
    sizes = sorted(FIT_SIZES + [DECODE, PREFILL])
    print(f"measuring {len(sizes)} sizes x {repeats} rounds on {world} gloo processes "
          f"({os.cpu_count()} CPUs visible) ...", flush=True)
    runs = measure(world, sizes, repeats)
    best = {s: min(v) for s, v in runs.items()}  # the least disturbed repeat
    link = fit(model, world, {s: best[s] for s in FIT_SIZES})
    print(f"\nfit over {len(FIT_SIZES)} sizes ({human(FIT_SIZES[0])} .. {human(FIT_SIZES[-1])}), "
          f"{args.impl} model: alpha = {link.latency_s * 1e6:.1f} us per hop "
          f"({2 * (world - 1)} hops), beta = {link.gbit_per_s / 8:.2f} GB/s\n")
    print("| payload | bytes | in fit | best (us) | median (us) | model (us) | best / model |")
    print("|---|---:|:---:|---:|---:|---:|---:|")
    for size in sizes:
        name = {DECODE: "decode row", PREFILL: "prefill chunk"}.get(size, "sweep")
        predicted = model.allreduce_time_s(size, world, link)
        print(f"| {name} | {human(size)} | {'yes' if size in FIT_SIZES else '**no**'} | "
              f"{best[size] * 1e6:,.1f} | {statistics.median(runs[size]) * 1e6:,.1f} | "
              f"{predicted * 1e6:,.1f} | {best[size] / predicted:.2f} |")
    steps = NUM_LAYERS_8B * 2
    print(f"\nthe course's decode step at TP={world}: {steps} all-reduces of {human(DECODE)}")
    for name, comm in (
        (f"measured here ({steps} x best)", steps * best[DECODE]),
        ("model, fitted link", model.tp_comm_time_per_step(DECODE, world, link)),
        ("model, NVLink (course)", model.tp_comm_time_per_step(DECODE, world, NVLINK)),
        ("model, 10 GbE (course)", model.tp_comm_time_per_step(DECODE, world, ETHERNET_10G)),
    ):
        share = model.comm_fraction(comm, DECODE_STEP_S)
        print(f"  {name:<32} {comm * 1e3:8.3f} ms   {share:6.1%} of an 8 ms step + comm")


if __name__ == "__main__":
    main()
