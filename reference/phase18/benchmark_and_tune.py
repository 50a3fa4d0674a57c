"""Reference for kata 18-02 — read `vllm bench serve` results, recommend under an SLO, report."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from katas.phase18.benchmark_and_tune.scaffold import (
    SLO,
    BenchResult,
    Percentiles,
    Recommendation,
    Tradeoff,
    draw_sweep,
)

METRICS = ("ttft", "tpot", "itl")


def parse_bench_result(data: Mapping[str, object]) -> BenchResult:
    """One ``vllm bench serve`` result JSON (as a dict) -> ``BenchResult`` (latencies in ms)."""

    def number(key: str) -> float:
        if key not in data:
            raise ValueError(f"the bench result has no {key!r} field")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key!r} must be a number, got {value!r}")
        return float(value)

    def percentiles(metric: str) -> Percentiles:
        # The fields are already milliseconds: no conversion.
        return Percentiles(mean=number(f"mean_{metric}_ms"), median=number(f"median_{metric}_ms"),
                           p99=number(f"p99_{metric}_ms"))

    completed = int(number("completed"))
    failed = int(number("failed")) if "failed" in data else int(number("num_prompts")) - completed
    return BenchResult(
        completed=completed,
        failed=failed,
        request_throughput=number("request_throughput"),
        output_throughput=number("output_throughput"),
        ttft=percentiles("ttft"),
        tpot=percentiles("tpot"),
        itl=percentiles("itl"),
    )


def compare(baseline: BenchResult, candidate: BenchResult) -> Tradeoff:
    """What ``candidate`` gains and gives up against ``baseline``."""
    return Tradeoff(
        throughput_change=candidate.output_throughput / baseline.output_throughput - 1.0,
        p99_ttft_factor=candidate.ttft.p99 / baseline.ttft.p99,
        p99_itl_factor=candidate.itl.p99 / baseline.itl.p99,
    )


def _violations(result: BenchResult, slo: SLO) -> list[str]:
    broken = []
    if result.failed:
        broken.append(f"{result.failed} failed requests")
    for metric, bound in slo.bounds().items():
        p99 = getattr(result, metric).p99
        if not p99 <= bound:  # a nan p99 cannot show that it meets a bound
            broken.append(f"p99 {metric.upper()} {p99:.1f} ms > {bound:g} ms")
    return broken


def recommend(results: Mapping[str, BenchResult], slo: SLO) -> Recommendation:
    """The highest-output-throughput config meeting ``slo``; ``ValueError`` when none does."""
    if not results:
        raise ValueError("recommend needs at least one result")
    rejected = {label: "; ".join(v) for label, r in results.items() if (v := _violations(r, slo))}
    legal = [label for label in results if label not in rejected]
    if not legal:
        why = "; ".join(f"{label}: {reason}" for label, reason in rejected.items())
        raise ValueError(f"no config meets the SLO ({why})")
    # Highest throughput; a tie goes to the lower p99 TTFT, then to the first listed.
    choice = min(legal, key=lambda label: (-results[label].output_throughput,
                                           results[label].ttft.p99))
    best = results[choice]
    if len(legal) == 1:
        reason = (f"{choice} is the only one of the {len(results)} configs that meets the SLO "
                  f"({best.output_throughput:.1f} output tok/s)")
    else:
        reason = (f"{choice} has the highest output throughput ({best.output_throughput:.1f} "
                  f"tok/s) of the {len(legal)} configs that meet the SLO")
    baseline = next(iter(results))
    if choice != baseline:
        t = compare(results[baseline], best)
        reason += (f"; against {baseline}: throughput {t.throughput_change:+.1%}, p99 TTFT "
                   f"x{t.p99_ttft_factor:.2f}, p99 ITL x{t.p99_itl_factor:.2f}")
    return Recommendation(choice=choice, reason=reason, rejected=rejected)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def write_report(
    workload: str,
    results: Mapping[str, BenchResult],
    slo: SLO,
    recommendation: Recommendation,
    plot_path: str | os.PathLike[str] | None = None,
) -> str:
    """The tuning report as markdown (see the stub for its exact layout)."""
    lines = ["# Tuning report", "", "## Workload", "", workload, "", "## Results", "",
             "| config | completed | failed | output tok/s | TTFT median / p99 (ms) "
             "| ITL median / p99 (ms) | TPOT median / p99 (ms) | meets SLO |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        cells = [label, str(r.completed), str(r.failed), _ms(r.output_throughput)]
        cells += [f"{_ms(getattr(r, m).median)} / {_ms(getattr(r, m).p99)}"
                  for m in ("ttft", "itl", "tpot")]
        cells.append("no" if label in recommendation.rejected else "yes")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## SLO", ""]
    lines += [f"- p99 {m.upper()} <= {b:g} ms" for m, b in slo.bounds().items()]
    lines += ["- no failed requests", "", "## Recommendation", "",
              f"Run **{recommendation.choice}**: {recommendation.reason}."]
    for label, why in recommendation.rejected.items():
        lines.append(f"- {label} rejected: {why}")
    if plot_path is not None:
        drawn = draw_sweep(results, slo, recommendation.choice, plot_path)
        lines += ["", "## Plot", ""]
        if isinstance(drawn, Path):
            lines.append(f"![throughput vs p99 latency]({drawn.name})")
        else:
            lines += ["```", drawn, "```"]
    return "\n".join(lines) + "\n"
