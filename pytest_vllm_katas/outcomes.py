"""Learner-facing outcomes: "todo" for unimplemented code and one-line import errors.

A ``NotImplementedError`` raised from the learner's own files is not a bug, it is the next thing
to do: the report says so in one line (``todo: <message> (<file>:<line>)``) instead of a
traceback. It still counts as not passed (the run's exit status is 1), so CI stays honest.

The verdict is decided where the test ran (an xdist worker, or the only process) and travels to
the controller in ``report.user_properties``, which xdist serializes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .catalog import is_learner_file, relative_path
from .impl import KataImportError
from .timeout import KataTimeout

OUTCOME_PROPERTY = "katas_outcome"
TODO, IMPORT_ERROR, PROBLEM = "todo", "import-error", "kata-problem"


class KataProblem(pytest.Item):
    """Stands in for the tests of a kata that cannot be collected (its ``kata.toml`` is broken):
    one failing item, so the kata is one ``error`` row and every other kata still runs."""

    def __init__(self, *, problem: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.problem = problem
        self.user_properties.append((OUTCOME_PROPERTY, PROBLEM))

    def runtest(self) -> None:
        raise KataProblemError(self.problem)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        return f"error: {self.problem}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"kata problem: {self.problem}"


class KataProblemError(Exception):
    """Raised by :class:`KataProblem`; its message is the problem."""


def learner_outcome(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """``"todo"`` or ``"import-error"`` when the plugin rewrote this report, else None."""
    # Collection reports reach the same hooks and carry no user_properties.
    for key, value in getattr(report, "user_properties", ()):
        if key == OUTCOME_PROPERTY:
            return value
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report: pytest.TestReport = yield
    excinfo = call.excinfo
    if excinfo is None:
        return report
    if isinstance(excinfo.value, KataImportError):
        report.longrepr = f"error: {excinfo.value}"
        report.user_properties.append((OUTCOME_PROPERTY, IMPORT_ERROR))
    elif isinstance(excinfo.value, KataTimeout):
        if excinfo.value.repeated:
            report.longrepr = f"timeout (skipped after the first): {excinfo.value}"
        else:
            report.longrepr = f"timeout: {excinfo.value}"
    elif isinstance(excinfo.value, NotImplementedError):
        raised_at = excinfo.traceback[-1]
        path = Path(str(raised_at.path))
        if is_learner_file(path):
            message = str(excinfo.value).strip() or "not implemented yet"
            report.longrepr = f"todo: {message} ({relative_path(path)}:{raised_at.lineno + 1})"
            report.user_properties.append((OUTCOME_PROPERTY, TODO))
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    outcome = learner_outcome(report)
    if outcome == TODO and report.failed:
        # Its own category: shown as "T", counted as "todo" in the final line, and kept out of
        # the FAILURES section (the progress summary prints its one line instead).
        return TODO, "T", ("TODO", {"yellow": True})
    if outcome in (IMPORT_ERROR, PROBLEM) and report.failed:
        # Likewise: a module that does not import fails every test of its kata; the summary
        # says so once per kata ("what to do next"), not once per test.
        return "broken", "E", ("BROKEN", {"red": True})
    return None
