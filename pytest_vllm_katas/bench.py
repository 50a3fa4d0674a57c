"""Speed against the reference: the ``kata_bench`` fixture and ``--katas-speed``.

A speed test hands ``kata_bench`` a function of the module under test; the fixture runs it once
untimed (so an unfinished stub is a "todo" and a crash is a failure), then times the
implementation under test and the reference on the same input, in the same process, with
pytest-benchmark (calibration, warm-up, rounds; the median is compared). Both timings are
ordinary pytest-benchmark records in one group, so ``--benchmark-save`` /
``--benchmark-compare`` work on them as on any benchmark.

The ratio (yours / reference) goes to the progress table and the JSON report. A kata whose
``kata.toml`` has ``[speed] budget = N`` fails for being more than N times slower than the
reference only when ``--katas-speed`` is given. With ``--impl=reference`` the reference is timed
against itself: the ratio (about 1) is the noise floor of the measurement on this machine.
Under pytest-xdist timing is unreliable, so the function runs once, untimed, with a one-line note.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .catalog import kata_for_path
from .impl import load_impl, selected_impl
from .progress import SPEED_PROPERTY

UNTIMED_PROPERTY = "katas_speed_untimed"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm-katas")
    group.addoption(
        "--katas-speed",
        action="store_true",
        default=False,
        help="fail speed tests slower than the kata's [speed] budget x the reference",
    )


@dataclass(frozen=True)
class SpeedResult:
    """Medians in seconds and their ratio (implementation under test / reference)."""

    impl_median_s: float
    reference_median_s: float
    budget: float | None

    @property
    def ratio(self) -> float:
        return self.impl_median_s / max(self.reference_median_s, 1e-12)

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.ratio > self.budget

    def as_json(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "impl_median_s": self.impl_median_s,
                "reference_median_s": self.reference_median_s, "budget": self.budget,
                "over_budget": self.over_budget}


def _reference_fixture(request: pytest.FixtureRequest, group: str) -> Any:
    """A second pytest-benchmark fixture on the same test, recorded as ``<test>::reference``."""
    from pytest_benchmark.fixture import BenchmarkFixture
    from pytest_benchmark.utils import NameWrapper

    session = request.config._benchmarksession
    marker = request.node.get_closest_marker("benchmark")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if "timer" in options:
        options["timer"] = NameWrapper(options["timer"])
    options.pop("group", None)
    fixture = BenchmarkFixture(request.node, add_stats=session.benchmarks.append,
                               logger=session.logger, warner=request.node.warn,
                               disabled=session.disabled, group=group,
                               **dict(session.options, **options))
    fixture.name = f"{request.node.name}::reference"
    fixture.fullname = f"{request.node.nodeid}::reference"
    fixture.extra_info["impl"] = "reference"
    request.addfinalizer(fixture._cleanup)
    return fixture


@pytest.fixture
def kata_bench(request: pytest.FixtureRequest) -> Callable[[Callable[[ModuleType], object]],
                                                          SpeedResult | None]:
    """Time ``fn(module)`` for the implementation under test and for the reference.

    Usage: ``kata_bench(lambda m: m.sample(logits, temperature=0.7, seed=0))``. Returns a
    :class:`SpeedResult`, or None when benchmarks are off (xdist, ``--benchmark-disable``).
    """
    kata = kata_for_path(Path(request.path))
    if kata is None:
        raise pytest.UsageError(f"{request.path}: kata_bench works only in kata tests")
    impl_name = selected_impl(request.config)
    if not hasattr(request.config, "_benchmarksession"):
        pytest.skip("speed benchmarks need pytest-benchmark (it is disabled: -p no:benchmark)")
    mine = request.getfixturevalue("benchmark")

    def bench(fn: Callable[[ModuleType], object]) -> SpeedResult | None:
        impl, reference = load_impl(kata, impl_name), load_impl(kata, "reference")
        try:
            fn(impl)  # untimed: a stub's NotImplementedError surfaces here, as a todo
        except BaseException:
            mine.skipped = True  # not "fixture unused": the test failed before timing
            raise
        if not mine.enabled:
            mine(fn, impl)  # pytest-benchmark's disabled mode: one call, no statistics
            request.node.user_properties.append((UNTIMED_PROPERTY, True))
            return None
        group = mine.group or f"{kata.id}::{request.node.name}"
        mine.group = group
        mine.extra_info["impl"] = impl_name
        mine(fn, impl)
        ref = _reference_fixture(request, group)
        ref(fn, reference)
        result = SpeedResult(mine.stats.stats.median, ref.stats.stats.median, kata.speed_budget)
        request.node.user_properties.append((SPEED_PROPERTY, result.as_json()))
        if result.over_budget and request.config.getoption("--katas-speed"):
            pytest.fail(
                f"speed: {result.ratio:.1f}x slower than the reference "
                f"(median {_fmt(result.impl_median_s)} vs {_fmt(result.reference_median_s)}); "
                f"the budget in kata.toml is {result.budget:g}x",
                pytrace=False,
            )
        return result

    return bench


def _fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


class XdistNote:
    """On the xdist controller: one line at the end when speed tests ran untimed."""

    def __init__(self) -> None:
        self.untimed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and (UNTIMED_PROPERTY, True) in report.user_properties:
            self.untimed += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.untimed:
            terminalreporter.write_line(
                f"vllm-katas: speed benchmarks are off under xdist (-n): {self.untimed} speed "
                f"test(s) ran once, untimed; run without -n to time them")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    worker = hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ
    if getattr(config.option, "dist", "no") == "no" and not worker:
        return
    # Before pytest-benchmark configures itself: it would disable timing anyway, with a
    # two-line warning per process; XdistNote says it once, and only when a speed test ran.
    if hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True
    if not worker:
        config.pluginmanager.register(XdistNote(), "vllm-katas-xdist-speed-note")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    from .machine import machine_info as katas_machine_info

    machine_info["vllm_katas"] = {"impl": selected_impl(config), **katas_machine_info()}
