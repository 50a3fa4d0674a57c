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


def _one_line_verdict(
        excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[str, str | None] | None:
    """(longrepr, outcome tag) for an exception the plugin reports in one line, else None."""
    error = excinfo.value
    if isinstance(error, KataImportError):
        return f"error: {error}", IMPORT_ERROR
    if isinstance(error, KataTimeout):
        if error.repeated:
            return f"timeout (skipped after the first): {error}", None
        return f"timeout: {error}", None
    if isinstance(error, NotImplementedError):
        raised_at = excinfo.traceback[-1]
        path = Path(str(raised_at.path))
        if is_learner_file(path):
            message = str(error).strip() or "not implemented yet"
            return f"todo: {message} ({relative_path(path)}:{raised_at.lineno + 1})", TODO
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Built here, before pytest's own implementation would format the whole traceback only for
    # it to be replaced: a kata of 35 todo tests would spend most of its run on tracebacks.
    if call.excinfo is None:
        return None
    verdict = _one_line_verdict(call.excinfo)
    if verdict is None:
        return None
    longrepr, tag = verdict
    sections = [(f"Captured {key} {when}", content)
                for when, key, content in item._report_sections]
    properties = list(item.user_properties)
    if tag is not None:
        properties.append((OUTCOME_PROPERTY, tag))
    return pytest.TestReport(item.nodeid, item.location, dict.fromkeys(item.keywords, 1),
                             "failed", longrepr, call.when, sections, call.duration,
                             call.start, call.stop, user_properties=properties)


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
