"""Kata 18-02 — Benchmark real vLLM and write the tuning report.

Your work: read what ``vllm bench serve --save-result`` wrote, compare configs, recommend the
one to run under an SLO, and write the report a decision-maker reads. The types (``BenchResult``,
``Percentiles``, ``SLO``, ``Tradeoff``, ``Recommendation``), the course's captured sweep, two
recorded results and the picture are in ``katas.phase18.benchmark_and_tune.scaffold``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from katas.phase18.benchmark_and_tune.scaffold import (
    SLO,
    BenchResult,
    Recommendation,
    Tradeoff,
)


def parse_bench_result(data: Mapping[str, object]) -> BenchResult:
    """One ``vllm bench serve`` result JSON, loaded as a dict -> ``BenchResult``.

    The latencies come out in milliseconds, the unit the JSON's ``*_ms`` fields already use:
    ``ttft``, ``tpot`` and ``itl`` each get their mean, median and p99 (``mean_ttft_ms``,
    ``median_ttft_ms``, ``p99_ttft_ms``, ...). ``completed``, ``failed``, ``request_throughput``
    (requests/s) and ``output_throughput`` (output tokens/s) carry over. A result without a
    ``failed`` field counts ``num_prompts - completed`` failed requests.

    Worked numbers (the recorded ``max_num_seqs=1`` run): 8 completed, 0 failed, about 19.9
    output tok/s, TTFT mean 1588.5 / median 1620.3 / p99 2925.3 ms.

    Raises ``ValueError`` naming the field when a needed field is missing or not a number.
    """
    raise NotImplementedError("parse_bench_result: a bench result JSON as a BenchResult in ms")


def compare(baseline: BenchResult, candidate: BenchResult) -> Tradeoff:
    """What ``candidate`` gains and gives up against ``baseline`` (see ``Tradeoff``).

    Worked numbers (the course's capture): ``threshold=64`` against the baseline gives
    ``throughput_change`` about -0.037 (the course's "-4%") and ``p99_itl_factor`` about 0.356
    (p99 ITL divided by 2.8); ``max_num_seqs=64`` gives ``p99_ttft_factor`` about 2.03 (610 ms
    to 1,240 ms).
    """
    raise NotImplementedError("compare: a candidate's throughput and p99 trade against a baseline")


def recommend(results: Mapping[str, BenchResult], slo: SLO) -> Recommendation:
    """The config to run: the highest ``output_throughput`` among those meeting ``slo``.

    ``results`` maps config labels to results, the baseline first. A config meets the SLO when
    it failed no request and each bound of ``slo.bounds()`` holds for that metric's **p99**
    (equal to the bound meets it). A throughput tie goes to the lower p99 TTFT, then to the
    config listed first.

    Returns ``Recommendation(choice, reason, rejected)``: ``choice`` is the label; ``reason`` a
    sentence that names the choice and its throughput (and, when it is not the baseline, its
    ``compare`` against the baseline); ``rejected`` maps every config that does not meet the SLO
    to what it broke: its failed requests, and each p99 over its bound, naming the metric as
    ``TTFT``, ``ITL`` or ``TPOT`` (e.g. ``"p99 TTFT 1240.0 ms > 800 ms"``).

    Raises ``ValueError`` when ``results`` is empty or no config meets the SLO (never the
    least-bad config).
    """
    raise NotImplementedError("recommend: best throughput among the configs meeting the SLO")


def write_report(
    workload: str,
    results: Mapping[str, BenchResult],
    slo: SLO,
    recommendation: Recommendation,
    plot_path: str | os.PathLike[str] | None = None,
) -> str:
    """The one-page tuning report, as markdown, in this layout (blank lines between blocks)::

        # Tuning report
        ## Workload
        <workload>
        ## Results
        <a markdown table: the header row, the |---| row, one row per config in results order>
        ## SLO
        - p99 TTFT <= 3000 ms          (one line per bound of slo.bounds(), then:)
        - no failed requests
        ## Recommendation
        Run **<choice>**: <reason>.
        - <label> rejected: <what it broke>       (one line per rejected config)

    The table's eight columns, header text first, then a row's cell for the recorded
    ``max_num_seqs=1`` run: ``config`` (``max_num_seqs=1``), ``completed`` (``8``), ``failed``
    (``0``), ``output tok/s`` (``19.9``), ``TTFT median / p99 (ms)`` (``1620.3 / 2925.3``),
    ``ITL median / p99 (ms)`` (``44.2 / 61.9``), ``TPOT median / p99 (ms)`` (``44.0 / 51.5``),
    ``meets SLO`` (``yes``). Numbers print with one decimal; a ``nan`` (the captured sweep lacks
    some) prints as ``-``. "meets SLO" is ``no`` for the configs the recommendation rejected,
    ``yes`` for the others. Cells are separated by `` | `` and each row starts with ``| ``.

    With ``plot_path``, the picture is drawn there with ``scaffold.draw_sweep`` and the report
    ends with a ``## Plot`` section: ``![throughput vs p99 latency](<file name>)`` when a PNG was
    written, else the text table it returned inside a ``` fence.
    """
    raise NotImplementedError("write_report: the tuning report as markdown")
