"""Progress: per-kata verdicts, the table that ends every run, and where they are kept.

Verdicts are built from test reports in ``pytest_runtest_logreport``, which under pytest-xdist
runs on the controller with every worker's reports, so the table is the same with ``-n auto`` as
serially. Workers write nothing. The last verdict of each kata survives in pytest's cache
(``katas status`` reads it) and, with ``--katas-report=PATH``, in a JSON file.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .catalog import PHASE_TITLES, Kata, KataError, discover, kata_for_path
from .hardware import cuda_present, versions
from .impl import selected_impl
from .outcomes import IMPORT_ERROR, TODO, learner_outcome

CACHE_KEY = "katas/progress"
SPEED_PROPERTY = "katas_speed"  # user property set by bench.kata_bench: ratio, medians, budget
REPORT_SCHEMA_VERSION = 1

# Kata verdicts, from worst to best: the first that applies wins.
STATUSES = ("error", "failing", "todo", "passed", "skipped", "not run")


@dataclass
class TestResult:
    nodeid: str
    outcome: str = "passed"  # passed | failed | todo | error | skipped
    message: str = ""
    duration: float = 0.0
    speed: dict[str, Any] | None = None  # from kata_bench: ratio, medians, budget


class Row(NamedTuple):
    """One line of the progress table."""

    kata: Kata
    status: str
    passed: int
    total: int
    reason: str
    speed_ratio: float | None = None
    speed_budget: float | None = None


@dataclass
class KataProgress:
    kata: Kata
    tests: dict[str, TestResult] = field(default_factory=dict)
    collection_error: str | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests.values() if t.outcome == outcome)

    @property
    def status(self) -> str:
        if self.collection_error or self.count("error"):
            return "error"
        if self.count("failed"):
            return "failing"
        if self.count("todo"):
            return "todo"
        if self.count("passed"):
            return "passed"
        return "skipped" if self.tests else "not run"

    @property
    def reason(self) -> str:
        """The one line that explains the status (first todo, failure, error or skip)."""
        if self.collection_error:
            return self.collection_error
        wanted = {"error": "error", "failing": "failed", "todo": "todo", "skipped": "skipped"}
        outcome = wanted.get(self.status)
        for test in self.tests.values():
            if test.outcome == outcome:
                return test.message
        return ""

    @property
    def speed(self) -> dict[str, Any] | None:
        """The slowest speed test of the kata (largest ratio to the reference), if any."""
        timed = [t.speed for t in self.tests.values() if t.speed]
        return max(timed, key=lambda s: s["ratio"]) if timed else None

    def row(self) -> Row:
        speed = self.speed or {}
        return Row(self.kata, self.status, self.count("passed"), len(self.tests), self.reason,
                   speed.get("ratio"), self.kata.speed_budget)

    def as_json(self, impl: str) -> dict:
        return {
            "id": self.kata.id,
            "phase": self.kata.phase,
            "slug": self.kata.slug,
            "lab": self.kata.lab,
            "title": self.kata.title,
            "tier": self.kata.tier,
            "impl": impl,
            "status": self.status,
            "reason": self.reason,
            "passed": self.count("passed"),
            "total": len(self.tests),
            "counts": {o: self.count(o) for o in ("passed", "failed", "todo", "error", "skipped")},
            "skip_reasons": sorted({t.message for t in self.tests.values()
                                    if t.outcome == "skipped"}),
            "duration_s": round(sum(t.duration for t in self.tests.values()), 6),
            "speed": self.speed,
            "speed_budget": self.kata.speed_budget,
            "tests": [
                {"nodeid": t.nodeid, "outcome": t.outcome, "message": t.message,
                 "duration_s": round(t.duration, 6), "speed": t.speed}
                for t in self.tests.values()
            ],
        }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm-katas")
    group.addoption(
        "--katas-report",
        metavar="PATH",
        default=None,
        help="write per-kata results as JSON to PATH (schema in the README)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # xdist workers only run tests; the controller (or a plain run) keeps the books.
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(ProgressReporter(config), "vllm-katas-progress")


def _one_line(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        text = str(getattr(longrepr, "reprcrash", None) and longrepr.reprcrash.message
                   or longrepr or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


class ProgressReporter:
    """Collects verdicts on the controller, prints the table and stores it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.katas: dict[str, KataProgress] = {}
        self.started = time.time()

    # -- collecting ------------------------------------------------------------------------

    def _progress_for(self, fspath: str) -> KataProgress | None:
        path = Path(fspath)
        if not path.is_absolute():
            path = Path(self.config.rootpath) / path
        try:
            kata = kata_for_path(path)
        except KataError:
            return None
        if kata is None:
            return None
        return self.katas.setdefault(kata.id, KataProgress(kata))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and report.fspath:
            progress = self._progress_for(report.fspath)
            if progress is not None:
                progress.collection_error = _one_line(report.longrepr)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        progress = self._progress_for(report.fspath)
        if progress is None:
            return
        result = progress.tests.setdefault(report.nodeid, TestResult(report.nodeid))
        result.duration += report.duration
        result.speed = speed_of(report) or result.speed
        if report.passed:
            return
        special = learner_outcome(report)
        if report.skipped:
            outcome = "skipped"
        elif special == TODO:
            outcome = "todo"
        elif special == IMPORT_ERROR or report.when != "call":
            outcome = "error"
        else:
            outcome = "failed"
        # Keep the worst outcome a test had across setup/call/teardown.
        rank = ("passed", "skipped", "todo", "failed", "error")
        if rank.index(outcome) >= rank.index(result.outcome):
            result.outcome, result.message = outcome, _one_line(report.longrepr)

    # -- reporting -------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.katas:
            return
        impl = selected_impl(self.config)
        tr = terminalreporter
        ordered = sorted(self.katas.values(),
                         key=lambda p: (p.kata.phase, p.kata.order, p.kata.slug))
        todo = [p for p in ordered if p.status in ("todo", "error")]
        if todo:
            tr.write_sep("-", "what to do next")
            for p in todo:
                tr.write_line(f"{p.kata.id}: {p.reason}")
        tr.write_sep("=", f"vllm-katas progress (impl: {impl})")
        for line in render_table([p.row() for p in ordered]):
            tr.write_line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.katas:
            return
        impl = selected_impl(self.config)
        results = {p.kata.id: p.as_json(impl) for p in self.katas.values()}
        if getattr(self.config, "cache", None) is not None:  # absent with -p no:cacheprovider
            stored = load_stored_progress(self.config.cache.get(f"{CACHE_KEY}/{impl}", None))
            stored.update({kid: {k: r[k] for k in ("status", "reason", "passed", "total")}
                           | {"updated": time.time(),
                              "speed_ratio": (r["speed"] or {}).get("ratio"),
                              "speed_budget": r["speed_budget"]}
                           for kid, r in results.items()})
            self.config.cache.set(f"{CACHE_KEY}/{impl}", stored)
        path = self.config.getoption("--katas-report")
        if path:
            write_report(Path(path), impl, results.values(), time.time() - self.started,
                         speed_enforced=bool(self.config.getoption("--katas-speed", False)))


def speed_of(report: pytest.TestReport) -> dict[str, Any] | None:
    for key, value in report.user_properties:
        if key == SPEED_PROPERTY and isinstance(value, dict):
            return value
    return None


def load_stored_progress(data: object) -> dict[str, dict]:
    """The stored per-kata progress, keeping only well-formed entries (a corrupted or
    hand-edited cache loses nothing else and never crashes a run)."""
    if not isinstance(data, dict):
        return {}
    keep = {}
    for kata_id, entry in data.items():
        if (isinstance(kata_id, str) and isinstance(entry, dict)
                and entry.get("status") in STATUSES
                and isinstance(entry.get("passed"), int) and isinstance(entry.get("total"), int)):
            keep[kata_id] = entry
    return keep


def write_report(path: Path, impl: str, katas: Iterable[dict], duration: float, *,
                 speed_enforced: bool = False) -> None:
    """The JSON report; its shape is ``report.schema.json`` (package data)."""
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "impl": impl,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "versions": versions(),
        "cuda": cuda_present(),
        "speed_enforced": speed_enforced,
        "duration_s": round(duration, 3),
        "katas": sorted(katas, key=lambda k: k["id"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _speed_note(row: Row) -> str:
    if row.speed_ratio is None:
        return ""
    note = f"speed {row.speed_ratio:.2f}x"
    if row.speed_budget is not None:
        note += f" ({'over' if row.speed_ratio > row.speed_budget else 'within'} budget "
        note += f"{row.speed_budget:g}x)"
    return note


def render_table(rows: Iterable[tuple]) -> list[str]:
    """The progress table: one block per phase, one line per kata, then the totals."""
    rows = [Row(*r) for r in rows]
    if not rows:
        return ["no katas"]
    width = max(len(r.kata.slug) for r in rows)
    lines: list[str] = []
    phase = None
    for row in rows:
        kata = row.kata
        if kata.phase != phase:
            phase = kata.phase
            lines.append(f"{phase}  {PHASE_TITLES.get(phase, '')}".rstrip())
        tests = f"{row.passed}/{row.total}" if row.total else "-"
        notes = [_speed_note(row)]
        if row.status in ("skipped", "error") and row.reason:
            notes.append(row.reason)
        note = "".join(f"  {n}" for n in notes if n)
        lines.append(f"  {kata.lab}  {kata.slug:<{width}}  {kata.tier:<7}  {row.status:<8} "
                     f"{tests:>5}{note}")
    lines.append(_totals(rows))
    return lines


def _totals(rows: list[Row]) -> str:
    done = sum(1 for r in rows if r.status == "passed")
    passed = sum(r.passed for r in rows)
    total = sum(r.total for r in rows)
    return f"katas passed: {done}/{len(rows)}   tests passed: {passed}/{total}"


def render_markdown(rows: Iterable[tuple], impl: str) -> list[str]:
    """The progress table as GitHub-flavoured Markdown (for a CI job summary)."""
    rows = [Row(*r) for r in rows]
    icon = {"passed": "✅", "failing": "❌", "error": "💥", "todo": "📝", "skipped": "⏭️",
            "not run": "·"}
    lines = [f"### vllm-katas progress (impl: {impl})", "",
             "| Phase | Lab | Kata | Tier | Status | Tests | Speed | Note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tests = f"{r.passed}/{r.total}" if r.total else "-"
        reason = r.reason.replace("|", "\\|") if r.status != "passed" else ""
        lines.append(f"| {r.kata.phase} | {r.kata.lab} | `{r.kata.slug}` | {r.kata.tier} | "
                     f"{icon.get(r.status, '')} {r.status} | {tests} | {_speed_note(r)} | "
                     f"{reason} |")
    lines += ["", f"**{_totals(rows)}**"]
    return lines


def stored_rows(root: Path, stored: dict[str, dict], phase: str | None = None) -> list[Row]:
    """Table rows for every kata under ``root``, from stored progress (``not run`` if absent).

    ``stored`` maps kata ids to entries of the cache or to the ``katas[]`` of a JSON report.
    """
    rows = []
    for kata in discover(root):
        if phase and kata.phase != phase:
            continue
        entry = stored.get(kata.id, {})
        ratio = entry.get("speed_ratio", (entry.get("speed") or {}).get("ratio"))
        rows.append(Row(kata, entry.get("status", "not run"), entry.get("passed", 0),
                        entry.get("total", 0), entry.get("reason", ""),
                        ratio if isinstance(ratio, (int, float)) else None, kata.speed_budget))
    return rows
