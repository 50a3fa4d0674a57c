"""Scheduler step time vs number of running requests (decode-only steady state), next to vLLM's.

Run: ``python benchmarks/bench_scheduler.py``. Times ``schedule()`` + ``update_from_output``
without a model, so the numbers are the control plane's own cost: mini_vllm under the course's
rules and under the ``vllm-0.32`` preset, and vLLM 0.32's own ``Scheduler`` on the same workload
in the same process (built as ``pytest_vllm_katas/live/vllm_twins.py`` builds it; the column
says ``n/a`` where vLLM cannot be imported). Each figure is the median of ``STEPS`` steps, the
contenders stepped in turn. Expect linear growth in the number of running requests (every step
visits each one) and a flat per-request cost.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_vllm_katas.live import env  # noqa: E402
from pytest_vllm_katas.live.vllm_twins import (  # noqa: E402
    RequestSpec,
    Workload,
    build_vllm_scheduler,
    make_mini_request,
    make_vllm_request,
    mini_engine,
    vllm_api,
)

SIZES = [64, 256, 1024, 4096]
STEPS = 40
BLOCK_SIZE = 16
PROMPT_LEN = 8
SAMPLED_TOKEN = 1  # never EOS, and max_tokens is out of reach: everyone decodes every step


def workload(num_running: int) -> Workload:
    """``num_running`` short prompts, all admitted and prefilled in the first step."""
    blocks_per_req = (PROMPT_LEN + STEPS + 2) // BLOCK_SIZE + 2
    specs = tuple(RequestSpec(rid=f"r{i}", prompt=(i % 256,) * PROMPT_LEN, max_tokens=10_000)
                  for i in range(num_running))
    return Workload(block_size=BLOCK_SIZE, num_blocks=num_running * blocks_per_req + 1,
                    max_num_seqs=num_running, max_num_batched_tokens=num_running * PROMPT_LEN,
                    long_prefill_token_threshold=0, enable_caching=True, requests=specs)


Step = Callable[[], None]


def mini_step(w: Workload, policy: str) -> Step:
    """One mini_vllm step (schedule + update_from_output), everyone admitted already."""
    sched = mini_engine(w, policy).scheduler
    for spec in w.requests:
        sched.add_request(make_mini_request(spec))

    def step() -> None:
        out = sched.schedule()
        sched.update_from_output(out, {r.request_id: SAMPLED_TOKEN for r in out.scheduled_requests})

    step()  # admits and prefills everyone
    assert len(sched.running) == len(w.requests)
    return step


def vllm_step(w: Workload) -> Step:
    """One step of vLLM's own Scheduler, fed as its model runner would feed it."""
    sched = build_vllm_scheduler(w)
    for spec in w.requests:
        sched.add_request(make_vllm_request(spec, w.block_size))
    model_runner_output = vllm_api().ModelRunnerOutput

    def step() -> None:
        out = sched.schedule()
        rows = list(out.num_scheduled_tokens)
        sched.update_from_output(out, model_runner_output(
            req_ids=rows,
            req_id_to_index={rid: i for i, rid in enumerate(rows)},
            sampled_token_ids=[[SAMPLED_TOKEN]] * len(rows),
        ))

    step()
    assert len(sched.running) == len(w.requests)
    return step


def median_step_ms(steps: dict[str, Step]) -> dict[str, float]:
    """Median ms per step of each contender, stepped in turn so that they share the machine's
    load (another process slows all of them alike, not one column)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(STEPS):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    problem = env.live_status().problem()
    if problem:
        print(f"vLLM column skipped: {problem}")
    else:
        vllm_api()  # import once, before any timing
    print(f"{'running':>8} {'course ms':>10} {'us/req':>7} {'vllm-0.32 ms':>13} "
          f"{'vLLM 0.32 ms':>13} {'preset/vLLM':>12}")
    for n in SIZES:
        w = workload(n)
        steps = {"course": mini_step(w, "course"), "preset": mini_step(w, "vllm-0.32")}
        if not problem:
            steps["vllm"] = vllm_step(w)
        ms = median_step_ms(steps)
        course, preset, theirs = ms["course"], ms["preset"], ms.get("vllm")
        vllm_cols = (f"{'n/a':>13} {'n/a':>12}" if theirs is None
                     else f"{theirs:>13.2f} {preset / theirs:>11.2f}x")
        print(f"{n:>8} {course:>10.2f} {course / n * 1e3:>7.2f} {preset:>13.2f} {vllm_cols}")


if __name__ == "__main__":
    main()
