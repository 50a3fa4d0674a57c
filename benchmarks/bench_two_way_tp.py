"""Kata 10-02 on two GPUs: your tensor-parallel functions over NCCL on a realistic-width Llama.

The kata's tests run two gloo processes on the CPU with a tiny model. This script runs the same
learner functions (``shard_weights``, ``rank_forward``, ``all_reduce``) with ``device="cuda"``:
rank ``r`` on ``cuda:r``, NCCL between them, on a seeded Llama with Llama-3-8B's widths (hidden
4096, 32 heads / 8 KV heads of 128, intermediate 14336; 4 layers by default) in bf16.

It prints, for TP = 1 (one process on ``cuda:0``) and TP = 2:

- ms per step: the whole greedy decode (prefills included) divided by its forward calls; at
  TP = 2 the slower rank's;
- all-reduces per rank (it must be 2 x layers x steps) and their payload (one 4096-wide bf16
  row per token: 8 KiB at decode);
- whether the greedy tokens agree. In bf16 they may not: the reordered sums can flip a near tie,
  the course's "token-for-token... almost". Reported, not asserted.

Then a bare all-reduce timing for the decode and a prefill payload (CUDA events, median of
many calls), so the gap between the measured TP = 2 step and half the TP = 1 step can be set
against kata 10-03's bill. Nothing is asserted: this is a measurement.

    python benchmarks/bench_two_way_tp.py                 # needs 2 CUDA GPUs and torch
    python benchmarks/bench_two_way_tp.py --layers 8 --tokens 64
    python benchmarks/bench_two_way_tp.py --impl mine     # your kata's functions
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from katas.phase10.two_way_tp.scaffold import (  # noqa: E402
    LLAMA3_8B_WIDTH_4_LAYERS,
    decode_as_rank,
    free_port,
    run_ranks,
    seeded_weights,
)

MODULES = {"reference": "reference.phase10.two_way_tp",
           "mine": "katas.phase10.two_way_tp.two_way_tp"}


def _allreduce_worker(rank: int, world: int, port: int, sizes: list[int], calls: int,
                      out: multiprocessing.Queue) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    medians = {}
    for numel in sizes:
        x = torch.ones(numel, dtype=torch.bfloat16, device=f"cuda:{rank}")
        for _ in range(10):
            dist.all_reduce(x)
        times = []
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_reduce(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        medians[numel] = statistics.median(times)
    out.put((rank, medians))
    dist.destroy_process_group()


def allreduce_ms(hidden: int, prefill_tokens: int, calls: int = 200) -> dict[int, float]:
    """Median ms of one bf16 all-reduce of ``[1, hidden]`` and ``[prefill_tokens, hidden]``."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    sizes = [hidden, prefill_tokens * hidden]
    procs = [ctx.Process(target=_allreduce_worker, args=(r, 2, port, sizes, calls, out))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return results[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=sorted(MODULES), default="reference")
    parser.add_argument("--layers", type=int, default=LLAMA3_8B_WIDTH_4_LAYERS.num_layers)
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    if torch.cuda.device_count() < 2:
        print("needs 2 CUDA GPUs (NCCL); the kata's tests cover the CPU path with gloo",
              file=sys.stderr)
        return 2
    impl = importlib.import_module(MODULES[args.impl])
    shape = dataclasses.replace(LLAMA3_8B_WIDTH_4_LAYERS, num_layers=args.layers)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, shape.vocab_size, (args.prompt_len,), generator=gen).tolist()
               for _ in range(2)]

    weights = seeded_weights(shape, 0, dtype=torch.bfloat16, device="cuda:0")
    decode_as_rank(impl, 0, 1, shape, weights, prompts[:1], 2, device="cuda:0")  # warm-up
    one = decode_as_rank(impl, 0, 1, shape, weights, prompts, args.tokens, device="cuda:0")
    del weights
    torch.cuda.empty_cache()
    two = run_ranks(impl, world_size=2, prompts=prompts, max_tokens=args.tokens,
                    seeded=shape, seed=0, dtype="bfloat16", device="cuda", timeout_s=600)

    ms = {1: 1000 * one.seconds / one.forward_calls,
          2: max(1000 * r.seconds / r.forward_calls for r in two)}
    expected = 2 * shape.num_layers * two[0].forward_calls
    rows = [("TP", "ms/step", "all-reduces per rank", "weight bytes per rank")]
    rows.append(("1", f"{ms[1]:.3f}", "0", f"{one.shard_bytes:,}"))
    rows.append(("2", f"{ms[2]:.3f}",
                 f"{len(two[0].all_reduce_shapes)} (2 x layers x steps = {expected})",
                 f"{two[0].shard_bytes:,}"))
    for row in rows:
        print(f"{row[0]:>3}  {row[1]:>9}  {row[2]:>36}  {row[3]:>22}")
    same = all(r.tokens == one.tokens for r in two)
    print(f"greedy tokens TP=2 == TP=1 (bf16): {same}")
    print(f"speedup TP=1 / TP=2: {ms[1] / ms[2]:.2f}x (2x would be free communication)")

    ar = allreduce_ms(shape.hidden_size, args.prompt_len)
    decode_ar = ar[shape.hidden_size]
    per_step = 2 * shape.num_layers * decode_ar
    print(f"all-reduce [1, {shape.hidden_size}] bf16 ({shape.hidden_size * 2} B): "
          f"{decode_ar * 1000:.1f} us median; x {2 * shape.num_layers} per step = "
          f"{per_step:.3f} ms")
    print(f"all-reduce [{args.prompt_len}, {shape.hidden_size}] bf16: "
          f"{ar[args.prompt_len * shape.hidden_size] * 1000:.1f} us median")
    if args.json:
        args.json.write_text(json.dumps({
            "shape": dataclasses.asdict(shape), "ms_per_step": ms, "tokens_equal": same,
            "all_reduces_per_rank": len(two[0].all_reduce_shapes),
            "allreduce_ms": {str(k): v for k, v in ar.items()},
            "device": torch.cuda.get_device_name(0)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
