"""Toy-engine throughput: steps/s and generated tokens/s at 1, 16 and 256 concurrent requests.

Run: ``python benchmarks/bench_engine.py``. Greedy, ignore_eos, 32-token prompts, 64 new tokens
each; the whole loop (schedule, toy forward, sample, update) is timed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mini_vllm import LLMEngine, SamplingParams  # noqa: E402

CONCURRENCY = [1, 16, 256]
PROMPT_LEN = 32
MAX_TOKENS = 64


def bench(concurrency: int) -> tuple[int, float, float]:
    engine = LLMEngine(
        num_blocks=concurrency * 8 + 1,
        max_num_seqs=concurrency,
        max_num_batched_tokens=max(2048, concurrency * PROMPT_LEN),
    )
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    for i in range(concurrency):
        engine.add_request([(i + j) % 256 for j in range(PROMPT_LEN)], params)
    start = time.perf_counter()
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    elapsed = time.perf_counter() - start
    return steps, steps / elapsed, concurrency * MAX_TOKENS / elapsed


def main() -> None:
    print(f"{'concurrent':>10} {'steps':>6} {'steps/s':>10} {'tokens/s':>10}  (median of 5 runs)")
    for c in CONCURRENCY:
        runs = sorted((bench(c) for _ in range(5)), key=lambda r: r[1])
        steps, sps, tps = runs[len(runs) // 2]
        print(f"{c:>10} {steps:>6} {sps:>10.0f} {tps:>10.0f}")


if __name__ == "__main__":
    main()
