"""Lab 19-01 bug_hunt: each planted bug gets a regression test, a fix and a scope page.

Three tests per bug (parametrized by the bug id):

* the regression test must fail on the buggy copy and pass on the fixed one (the reference fix);
* the fix, applied to the buggy copy, must make the reference regression test pass and leave
  every scenario of the behaviour battery exactly as pristine mini_vllm does it;
* the scope page must have every field of the course's template, at most two open questions,
  and a cause ``file:line`` at the planted bug (within a few lines, in the buggy copy).

The regression test also re-checks the kata itself: the planted edits still apply to the current
mini_vllm and the reference regression test still fails on them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from katas.phase19.bug_hunt import scaffold

pytestmark = pytest.mark.cpu_ok

SCAFFOLD = "python -m katas.phase19.bug_hunt.scaffold"


def _function(module: ModuleType, name: str) -> Callable[..., Any]:
    function = getattr(module, name, None)
    assert callable(function), f"bug_hunt.py must define a function {name}()"
    return function


def _outcome(regression: Callable[[ModuleType], None], vllm: ModuleType) -> Exception | None:
    """What the regression test raised on ``vllm`` (None: it passed). A NotImplementedError is
    the unwritten stub: it propagates."""
    try:
        regression(vllm)
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the regression test counts
        return exc
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _buggy(bug: str) -> ModuleType:
    try:
        return scaffold.buggy(bug)
    except ValueError as exc:
        pytest.fail(f"kata maintenance: the planted bug {bug} no longer applies to this "
                    f"mini_vllm ({exc}); update bugs/planted.b64 (`{SCAFFOLD} planted --decode`)")


@pytest.mark.parametrize("bug", scaffold.BUGS)
def test_regression_fails_on_buggy_and_passes_on_fixed(impl: ModuleType,
                                                       reference_impl: ModuleType,
                                                       bug: str) -> None:
    name = scaffold.bug_name(bug)
    regression = _function(impl, f"regression_{name}")
    buggy = _buggy(bug)
    on_buggy = _outcome(regression, buggy)
    reference_regression = getattr(reference_impl, f"regression_{name}")
    assert _outcome(reference_regression, buggy) is not None, (
        f"kata maintenance: the reference regression test passes on the buggy copy of {bug}: "
        f"the planted bug no longer reproduces against this mini_vllm")
    assert on_buggy is not None, (
        f"regression_{name} passed on the buggy engine: it does not reproduce what "
        f"bugs/{bug}/REPORT.md describes (a regression test must fail while the bug is there)")
    fixed = scaffold.fixed(bug, getattr(reference_impl, f"fix_{name}")())
    on_fixed = _outcome(regression, fixed)
    assert on_fixed is None, (
        f"regression_{name} also fails on the fixed engine, so it tests something other than "
        f"the bug: {_describe(on_fixed) if on_fixed else ''}")


@pytest.mark.parametrize("bug", scaffold.BUGS)
def test_fix_repairs_the_bug_and_changes_nothing_else(impl: ModuleType,
                                                      reference_impl: ModuleType,
                                                      bug: str) -> None:
    name = scaffold.bug_name(bug)
    edits = _function(impl, f"fix_{name}")()
    try:
        fixed = scaffold.fixed(bug, edits)
    except ValueError as exc:
        pytest.fail(f"fix_{name}() cannot be applied to the buggy copy: {exc} (edits are "
                    f"(file, old, new) against the buggy copy: `{SCAFFOLD} path {bug}`)")
    still = _outcome(getattr(reference_impl, f"regression_{name}"), fixed)
    assert still is None, (
        f"with fix_{name}() applied, the bug still reproduces: the grader's regression test "
        f"for {bug} fails with {_describe(still) if still else ''}")
    differences = scaffold.behaviour_differences(fixed)
    assert not differences, (
        f"fix_{name}() repairs the report but changes what the engine does elsewhere: the "
        f"scenarios {differences} no longer behave as in mini_vllm (see scaffold.SCENARIOS; "
        f"`{SCAFFOLD} suite {bug}` runs mini_vllm's own tests on your fixed copy)")


@pytest.mark.parametrize("bug", scaffold.BUGS)
def test_scope_page_has_every_field_and_the_real_cause(impl: ModuleType, bug: str) -> None:
    name = scaffold.bug_name(bug)
    page = _function(impl, f"scope_{name}")()
    assert isinstance(page, str), f"scope_{name}() must return the page's text, got {page!r}"
    fields = scaffold.parse_scope(page)
    missing = [field for field in scaffold.SCOPE_FIELDS if not fields.get(field)]
    assert not missing, (
        f"scope_{name}(): the page lacks (or leaves empty) the fields {missing}; each is its "
        f"label and a colon, e.g. 'Fix sketch: ...'")
    questions = scaffold.count_questions(fields["Open questions"])
    assert questions <= scaffold.MAX_OPEN_QUESTIONS, (
        f"scope_{name}(): {questions} open questions; ask maintainers at most "
        f"{scaffold.MAX_OPEN_QUESTIONS} (answer the rest yourself)")
    causes = scaffold.parse_cause(fields["Cause (file:line)"])
    assert causes, (
        f"scope_{name}(): the cause must name file and line, e.g. 'mini_vllm/kv_cache.py:120', "
        f"got {fields['Cause (file:line)'][:120]!r}")
    window = scaffold.CAUSE_WINDOW
    hit = any(file == where.file and where.first - window <= line <= where.last + window
              for file, line in causes for where in scaffold.cause_locations(bug))
    assert hit, (
        f"scope_{name}(): the cause you name ({', '.join(f'{f}:{n}' for f, n in causes)}) is "
        f"not where the bug is. Name the line that is wrong, not the one where the symptom "
        f"shows up; line numbers are the buggy copy's (`{SCAFFOLD} path {bug}`)")
