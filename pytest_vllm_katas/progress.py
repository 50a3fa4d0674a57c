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

from .catalog import (
    OPTION_GROUP,
    PHASE_TITLES,
    Kata,
    KataError,
    catalog,
    discover,
    kata_folder_of,
    kata_for_path,
)
from .hardware import cuda_present, versions
from .impl import distributed, selected_impl
from .outcomes import IMPORT_ERROR, PROBLEM, TODO, learner_outcome
from .variants import selected_check

CACHE_KEY = "katas/progress"
RUNNING_KEY = "katas/running"  # the test a plain run is in; left behind only by a hard exit
SPEED_PROPERTY = "katas_speed"  # user property set by bench.kata_bench: ratio, medians, budget
REPORT_SCHEMA_VERSION = 2

# Kata verdicts, from worst to best: the first that applies wins. "partial": some of the kata's
# tests have not run against this code (a -k, -x, a node id, Ctrl-C); it is never "passed".
# "blocked": every test was skipped for want of a GPU, a package or a model.
STATUSES = ("error", "failing", "todo", "partial", "passed", "blocked", "skipped", "not run")
# Test outcomes, from best to worst across setup/call/teardown. A test is "passed" only when its
# call passed; one interrupted or never reached stays "not run".
OUTCOMES = ("not run", "passed", "skipped", "todo", "failed", "error")

# A skip for a missing GPU, package or model is "blocked": the kata cannot be finished here.
_BLOCKED = (("needs a GPU", ("gpu", "cuda")),
            ("needs a package", ("not installed", "pip install")),
            ("needs a model", ("katas models fetch",)))


def blocked_reason(skip_message: str) -> str | None:
    """``needs a GPU`` / ``needs a package`` / ``needs a model`` for a skip that says so."""
    lowered = skip_message.lower()
    for label, words in _BLOCKED:
        if any(word in lowered for word in words):
            return label
    return None


@dataclass
class TestResult:
    nodeid: str
    outcome: str = "not run"  # one of OUTCOMES
    message: str = ""
    duration: float = 0.0
    speed: dict[str, Any] | None = None  # from kata_bench: ratio, medians, budget
    carried: bool = False  # taken from an earlier run of the same source, not run now

    @property
    def blocked(self) -> str | None:
        return blocked_reason(self.message) if self.outcome == "skipped" else None


class Row(NamedTuple):
    """One line of the progress table."""

    kata: Kata
    status: str
    passed: int
    total: int
    reason: str
    speed_ratio: float | None = None
    speed_budget: float | None = None
    blocked: int = 0


@dataclass
class KataProgress:
    kata: Kata
    impl: str = "reference"
    tests: dict[str, TestResult] = field(default_factory=dict)
    collection_error: str | None = None
    source_hash: str | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests.values() if t.outcome == outcome)

    @property
    def blocked(self) -> int:
        return sum(1 for t in self.tests.values() if t.blocked)

    @property
    def status(self) -> str:
        if self.collection_error or self.count("error"):
            return "error"
        if self.count("failed"):
            return "failing"
        if self.count("todo"):
            return "todo"
        if self.count("not run"):
            return "partial" if self.count("not run") < len(self.tests) else "not run"
        if self.count("passed"):
            return "passed"
        if not self.tests:
            return "not run"
        return "blocked" if self.blocked else "skipped"

    @property
    def reason(self) -> str:
        """The one line that explains the status (first error, failure, todo or skip)."""
        if self.collection_error:
            return self.collection_error
        status = self.status
        if status in ("partial", "not run") and self.tests:
            missing = self.count("not run")
            return (f"{missing} of {len(self.tests)} tests not run on this code yet: run the "
                    f"whole kata (pytest --impl={self.impl} katas/{self.kata.id})")
        wanted = {"error": "error", "failing": "failed", "todo": "todo", "skipped": "skipped",
                  "blocked": "skipped"}
        outcome = wanted.get(status)
        for test in self.tests.values():
            if test.outcome == outcome:
                return test.message
        return ""

    @property
    def speed(self) -> dict[str, Any] | None:
        """The slowest speed test of the kata (largest ratio to the reference), if any; only
        for a kata whose every test passed (a fast wrong answer is not fast)."""
        if self.status != "passed":
            return None
        timed = [t.speed for t in self.tests.values() if t.speed]
        return max(timed, key=lambda s: s["ratio"]) if timed else None

    def row(self) -> Row:
        speed = self.speed or {}
        return Row(self.kata, self.status, self.count("passed"), len(self.tests), self.reason,
                   speed.get("ratio"), self.kata.speed_budget, self.blocked)

    def merge(self, full_ids: Iterable[str] | None, stored: dict | None) -> None:
        """Complete this run's results into the kata's verdict: every test of the kata counts
        (``full_ids``); one not run now keeps its outcome from an earlier run of the same source
        (``stored``, matched by :meth:`Kata.source_hash`), else it is "not run"."""
        order = list(full_ids or ())
        for nodeid in order:
            self.tests.setdefault(nodeid, TestResult(nodeid))
        # Collection order, not arrival order (xdist): the reason shown is the same either way.
        rank = {nodeid: i for i, nodeid in enumerate(order)}
        self.tests = dict(sorted(self.tests.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        if not stored or stored.get("source_hash") != self.source_hash:
            return
        earlier = stored.get("tests")
        if not isinstance(earlier, dict):
            return
        for nodeid, test in self.tests.items():
            found = earlier.get(nodeid)
            if (test.outcome == "not run" and isinstance(found, list) and len(found) == 2
                    and found[0] in OUTCOMES):
                test.outcome, test.message, test.carried = str(found[0]), str(found[1]), True

    def stored(self) -> dict[str, Any]:
        """What the cache keeps for ``katas status`` and the next run's merge."""
        speed = self.speed or {}
        return {"status": self.status, "reason": self.reason, "passed": self.count("passed"),
                "total": len(self.tests), "blocked": self.blocked, "updated": time.time(),
                "speed_ratio": speed.get("ratio"), "speed_budget": self.kata.speed_budget,
                "source_hash": self.source_hash,
                "tests": {t.nodeid: [t.outcome, t.message] for t in self.tests.values()}}

    def as_json(self) -> dict:
        return {
            "id": self.kata.id,
            "phase": self.kata.phase,
            "slug": self.kata.slug,
            "lab": self.kata.lab,
            "title": self.kata.title,
            "tier": self.kata.tier,
            "impl": self.impl,
            "status": self.status,
            "reason": self.reason,
            "passed": self.count("passed"),
            "total": len(self.tests),
            "counts": {o: self.count(o) for o in OUTCOMES} | {"blocked": self.blocked},
            "skip_reasons": sorted({t.message for t in self.tests.values()
                                    if t.outcome == "skipped"}),
            "duration_s": round(sum(t.duration for t in self.tests.values()), 6),
            "source_hash": self.source_hash,
            "speed": self.speed,
            "speed_budget": self.kata.speed_budget,
            "tests": [
                {"nodeid": t.nodeid, "outcome": t.outcome, "message": t.message,
                 "duration_s": round(t.duration, 6), "speed": t.speed, "carried": t.carried}
                for t in self.tests.values()
            ],
        }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--katas-report",
        metavar="PATH",
        default=None,
        help="write per-kata results to PATH (JSON, schema in the README; see "
        "--katas-report-format)",
    )
    group.addoption(
        "--katas-report-format",
        choices=("json", "gradescope"),
        default="json",
        help="json: vllm-katas' own report (default); gradescope: Gradescope's results.json "
        "(one score per kata)",
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


def _full_test_ids(session: pytest.Session, path: Path) -> list[str] | None:
    """Every test id of one kata test module, whatever this run selected (-k, a node id,
    --lf...), by collecting the module again; None when it cannot be collected."""
    from _pytest.outcomes import OutcomeException

    try:
        stack: list[pytest.Item | pytest.Collector] = [
            pytest.Module.from_parent(session, path=path)]
        ids = []
        while stack:
            node = stack.pop()
            if isinstance(node, pytest.Item):
                ids.append(node.nodeid)
            else:
                stack.extend(node.collect())
        return ids
    except (Exception, OutcomeException):
        return None


class ProgressReporter:
    """Collects verdicts on the controller, prints the table and stores it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.katas: dict[str, KataProgress] = {}
        self.started = time.time()
        self.crash_note: str | None = None
        # An authors' check grades variants, not the learner's code: it must not touch the
        # learner's stored progress.
        self.store = selected_check(config) is None and getattr(config, "cache", None) is not None
        self.serial = not distributed(config)

    @property
    def impl(self) -> str:
        return selected_impl(self.config)  # decided in a pytest_configure that may run later

    # -- collecting ------------------------------------------------------------------------

    def _progress_for(self, fspath: str) -> KataProgress | None:
        path = Path(fspath)
        if not path.is_absolute():
            path = Path(self.config.rootpath) / path
        try:
            kata = kata_for_path(path)
        except KataError as exc:
            kata = Kata.placeholder(kata_folder_of(path))
            progress = self.katas.setdefault(kata.id, KataProgress(kata, self.impl))
            progress.collection_error = str(exc)
            return progress
        if kata is None:
            return None
        if kata.id not in self.katas:
            self.katas[kata.id] = KataProgress(kata, self.impl,
                                               source_hash=kata.source_hash(self.impl))
        return self.katas[kata.id]

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and report.fspath:
            progress = self._progress_for(report.fspath)
            if progress is not None:
                progress.collection_error = _one_line(report.longrepr)

    def pytest_runtest_logstart(self, nodeid: str, location: tuple) -> None:
        # Left behind only if the process dies without finishing the session (os._exit(),
        # a hard crash): the next run and `katas status` then say which test it was.
        if self.store and self.serial:
            self.config.cache.set(RUNNING_KEY, {"nodeid": nodeid, "impl": self.impl})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        progress = self._progress_for(report.fspath)
        if progress is None:
            return
        result = progress.tests.setdefault(report.nodeid, TestResult(report.nodeid))
        result.duration += report.duration
        result.speed = speed_of(report) or result.speed
        special = learner_outcome(report)
        if report.passed:
            if report.when != "call":
                return
            outcome = "passed"
        elif report.skipped:
            outcome = "skipped"
        elif special == TODO:
            outcome = "todo"
        elif special in (IMPORT_ERROR, PROBLEM) or report.when != "call":
            outcome = "error"
        else:
            outcome = "failed"
        # Keep the worst outcome a test had across setup/call/teardown.
        if OUTCOMES.index(outcome) >= OUTCOMES.index(result.outcome):
            result.outcome = outcome
            result.message = _one_line(report.longrepr) if outcome != "passed" else ""

    # -- finishing -------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.store:
            return
        running = self.config.cache.get(RUNNING_KEY, None)
        if isinstance(running, dict) and isinstance(running.get("nodeid"), str):
            self.crash_note = record_crash(self.config.cache, running)
            self.config.cache.set(RUNNING_KEY, {})

    def _katas_in_scope(self) -> list[Kata]:
        """Katas under the paths this run was given whose test file is missing: they get an
        error row instead of vanishing from the table."""
        root = Path(self.config.rootpath)
        here = Path(self.config.invocation_params.dir)
        args = [(here / a.split("::")[0]).resolve() for a in self.config.args] or [root]
        missing = []
        for kata in discover(root, skip_invalid=True):
            folder = kata.folder.resolve()
            if kata.id in self.katas or kata.test_path.exists():
                continue
            if any(a == folder or a in folder.parents for a in args):
                missing.append(kata)
        return missing

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for kata in self._katas_in_scope():
            self.katas[kata.id] = KataProgress(
                kata, self.impl, collection_error=f"no tests: {kata.test_path.name} is missing "
                f"(restore it with git checkout -- katas/{kata.id}/{kata.test_path.name})")
        if (session.exitstatus == pytest.ExitCode.OK
                and any(p.collection_error for p in self.katas.values())):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a kata that cannot run is red
        stored = (load_stored_progress(self.config.cache.get(f"{CACHE_KEY}/{self.impl}", None))
                  if self.store else {})
        for progress in self.katas.values():
            if progress.source_hash is not None:  # a readable kata: complete its verdict
                full = _full_test_ids(session, progress.kata.test_path)
                progress.merge(full, stored.get(progress.kata.id))
        if self.store:
            stored.update({kid: p.stored() for kid, p in self.katas.items()})
            self.config.cache.set(f"{CACHE_KEY}/{self.impl}", stored)
            self.config.cache.set(RUNNING_KEY, {})
        path = self.config.getoption("--katas-report")
        if path:
            results = [p.as_json() for p in self.katas.values()]
            if self.config.getoption("--katas-report-format") == "gradescope":
                from .gradescope import write_gradescope

                write_gradescope(Path(path), self.impl, results, time.time() - self.started)
            else:
                write_report(Path(path), self.impl, results, time.time() - self.started,
                             speed_enforced=bool(self.config.getoption("--katas-speed", False)))

    # -- reporting -------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_terminal_summary(self, terminalreporter):
        # A wrapper, so that the table comes after every other summary (pytest-benchmark's
        # tables included): the learner's last screen is their progress.
        result = yield
        tr = terminalreporter
        if self.crash_note:
            tr.write_sep("-", "the previous run did not finish")
            tr.write_line(self.crash_note)
        if not self.katas:
            return result
        ordered = sorted(self.katas.values(),
                         key=lambda p: (p.kata.phase, p.kata.order, p.kata.slug))
        todo = [p for p in ordered if p.status in ("todo", "error", "partial")]
        if todo:
            tr.write_sep("-", "what to do next")
            for p in todo:
                tr.write_line(f"{p.kata.id}: {p.reason}")
        tr.write_sep("=", f"vllm-katas progress (impl: {self.impl})")
        for line in render_table([p.row() for p in ordered]):
            tr.write_line(line)
        return result


def crash_entry(running: object, impl: str) -> tuple[str, dict] | None:
    """(kata id, ``error`` entry) for a "running" marker a dead run left behind, if it was a
    kata test run with ``impl``; the entry's reason says which test was running."""
    if not isinstance(running, dict) or not isinstance(running.get("nodeid"), str):
        return None
    nodeid = running["nodeid"]
    parts = nodeid.split("::")[0].split("/")
    if running.get("impl") != impl or len(parts) < 4 or parts[0] != "katas":
        return None
    note = (f"crashed: the last run ended abruptly during {nodeid}: the code it ran exited the "
            f"process (os._exit()?) or crashed, so no verdict was recorded")
    return f"{parts[1]}/{parts[2]}", {"status": "error", "reason": note, "passed": 0,
                                      "total": 0, "updated": time.time(), "source_hash": None}


def record_crash(cache: Any, running: dict) -> str | None:
    """Store the ``error`` verdict for the kata a dead run was in; the note to print."""
    impl = running.get("impl") if isinstance(running, dict) else None
    found = crash_entry(running, impl) if impl in ("reference", "mine") else None
    if found is None:
        return None
    kata_id, entry = found
    stored = load_stored_progress(cache.get(f"{CACHE_KEY}/{impl}", None))
    stored[kata_id] = {**stored.get(kata_id, {}), **entry}
    cache.set(f"{CACHE_KEY}/{impl}", stored)
    return f"{kata_id}: {entry['reason']}"


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
        if row.blocked and row.status != "blocked":
            notes.append(f"{row.blocked} blocked")
        if row.status in ("skipped", "blocked", "error", "failing", "partial") and row.reason:
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
    blocked = sum(r.blocked for r in rows)
    line = f"katas passed: {done}/{len(rows)}   tests passed: {passed}/{total}"
    if blocked:
        line += f", {blocked} blocked (need a GPU, a package or a model this machine lacks)"
    return line


def render_markdown(rows: Iterable[tuple], impl: str) -> list[str]:
    """The progress table as GitHub-flavoured Markdown (for a CI job summary)."""
    rows = [Row(*r) for r in rows]
    icon = {"passed": "✅", "failing": "❌", "error": "💥", "todo": "📝", "partial": "◐",
            "blocked": "🚧", "skipped": "⏭️", "not run": "·"}
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
    katas, broken = catalog(root)
    for kata in katas:
        if phase and kata.phase != phase:
            continue
        entry = stored.get(kata.id, {})
        ratio = entry.get("speed_ratio", (entry.get("speed") or {}).get("ratio"))
        blocked = entry.get("blocked", (entry.get("counts") or {}).get("blocked", 0))
        rows.append(Row(kata, entry.get("status", "not run"), entry.get("passed", 0),
                        entry.get("total", 0), entry.get("reason", ""),
                        ratio if isinstance(ratio, (int, float)) else None, kata.speed_budget,
                        blocked if isinstance(blocked, int) else 0))
    # A kata whose kata.toml is broken is one error row; it hides nothing else.
    rows += [Row(kata, "error", 0, 0, error) for kata, error in broken
             if not phase or kata.phase == phase]
    return sorted(rows, key=lambda r: (r.kata.phase, r.kata.order, r.kata.slug))
