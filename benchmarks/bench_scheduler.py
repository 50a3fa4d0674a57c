"""Scheduler step time vs number of running requests (decode-only steady state).

Run: ``python benchmarks/bench_scheduler.py``. Times ``schedule()`` + ``update_from_output``
without a model, so the numbers are the control plane's own cost. Expect linear growth in the
number of running requests (every step visits each one) and a flat per-request cost.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mini_vllm import KVCacheManager, Request, SamplingParams, Scheduler  # noqa: E402

SIZES = [64, 256, 1024, 4096]
STEPS = 40
BLOCK_SIZE = 16


def bench(num_running: int) -> tuple[float, float]:
    params = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
    prompt_len = 8
    blocks_per_req = (prompt_len + STEPS + 2) // BLOCK_SIZE + 2
    kv = KVCacheManager(num_blocks=num_running * blocks_per_req + 1, block_size=BLOCK_SIZE)
    sched = Scheduler(kv, max_num_seqs=num_running, max_num_batched_tokens=num_running * prompt_len)
    for i in range(num_running):
        sched.add_request(Request([i % 256] * prompt_len, params))
    out = sched.schedule()  # admit and prefill everyone
    sched.update_from_output(out, {r.request_id: 1 for r in out.scheduled_requests})
    assert len(sched.running) == num_running
    start = time.perf_counter()
    for _ in range(STEPS):
        out = sched.schedule()
        sched.update_from_output(out, {r.request_id: 1 for r in out.scheduled_requests})
    per_step = (time.perf_counter() - start) / STEPS
    return per_step * 1e3, per_step / num_running * 1e6


def main() -> None:
    print(f"{'running':>8} {'ms/step':>10} {'us/request':>11}")
    for n in SIZES:
        ms, us = bench(n)
        print(f"{n:>8} {ms:>10.2f} {us:>11.2f}")


if __name__ == "__main__":
    main()
