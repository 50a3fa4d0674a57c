"""``katas dev check``: prove that a kata's grader works, for kata authors.

For each kata: the shipped stub makes every test a todo; the reference passes every test; and
every wrong solution in ``wrong.toml`` is caught by the test it names. Each of the three is one
``pytest`` run in a child process (see :mod:`pytest_vllm_katas.variants` for how the stub and
the wrong solutions are graded), read back through ``--katas-report``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import Kata, KataError
from .variants import MIN_WRONG, WrongSolution, load_wrong_solutions


def run_suite(root: Path, paths: Sequence[str], *args: str, timeout: float = 1800) -> dict:
    """Run pytest on ``paths`` in a child process; the report's katas by id."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # The verdicts and their one-line messages come from the report; the tracebacks of a
        # thousand expected failures would only be formatted to be thrown away (half the time).
        command = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
                   "--tb=no", "-rN", f"--katas-report={report}", *args]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True,
                              timeout=timeout)
        if not report.exists():
            raise KataError(f"pytest {' '.join(args)} did not run:\n{done.stdout[-3000:]}\n"
                            f"{done.stderr[-2000:]}")
        return {k["id"]: k for k in json.loads(report.read_text(encoding="utf-8"))["katas"]}


#: The grader's checks of itself (wrong solutions caught, shipped stubs all todo, the pristine
#: store) are authors' checks: they run the whole kata suite again in a subprocess, which a
#: learner's `pytest` need not pay for every time. CI (``CI`` set) and tox
#: (``KATAS_AUTHOR_CHECKS=1``) run them; ``katas dev check`` runs them for one kata.
AUTHOR_CHECKS = bool(os.environ.get("CI")) or os.environ.get("KATAS_AUTHOR_CHECKS") == "1"
AUTHOR_CHECKS_SKIP_REASON = ("authors' check of the grader itself: runs in CI, with "
                             "KATAS_AUTHOR_CHECKS=1, or per kata with `katas dev check <kata>`")


def run_suite_once(name: str, basetemp: Path, root: Path, paths: Sequence[str],
                   *args: str) -> dict:
    """:func:`run_suite`, run by one ``pytest -n`` worker and read from a file by the others.

    The grader's self-checks (``tests/``) each run the whole kata suite (a minute); without this
    every worker would run it again while the other tests wait for a core. ``basetemp`` is the
    worker's base temp directory, whose parent the workers of one run share; a file lock makes
    the later ones wait for the first one's result. Outside xdist, or where ``fcntl`` is missing,
    it simply runs.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: every worker runs its own
        fcntl = None  # type: ignore[assignment]
    if fcntl is None or not os.environ.get("PYTEST_XDIST_WORKER"):
        return run_suite(root, paths, *args)
    shared = basetemp.parent
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            tmp = result.with_suffix(".tmp")
            tmp.write_text(json.dumps(run_suite(root, paths, *args)), encoding="utf-8")
            tmp.replace(result)
        return json.loads(result.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Verdict:
    """How one wrong solution fared: ``caught``, ``NOT caught``, ``blocked`` or ``missing``."""

    wrong: WrongSolution
    verdict: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict in ("caught", "blocked")


def test_functions(kata: Kata) -> set[str]:
    """The names of the test functions in the kata's test module."""
    try:
        tree = ast.parse(kata.test_path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return set()
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def judge_wrong(kata: Kata, result: dict | None) -> list[Verdict]:
    """Each wrong solution of ``kata`` against a ``--katas-check=wrong`` report entry."""
    verdicts = []
    names = test_functions(kata)
    tests = (result or {}).get("tests", [])
    for wrong in load_wrong_solutions(kata):
        wrong.source()  # raises KataError when a patch no longer applies
        if wrong.test not in names:
            verdicts.append(Verdict(wrong, "missing", f"no test function {wrong.test}"))
            continue
        mine = [t for t in tests
                if t["nodeid"].split("::")[-1].split("[")[0] == wrong.test
                and f"wrong={wrong.name}" in t["nodeid"]]
        failed = [t for t in mine if t["outcome"] == "failed"]
        if failed:
            verdicts.append(Verdict(wrong, "caught", failed[0]["message"]))
        elif mine and all(t["outcome"] == "skipped" for t in mine):
            verdicts.append(Verdict(wrong, "blocked", mine[0]["message"]))
        elif not mine:
            verdicts.append(Verdict(wrong, "missing",
                                    f"{wrong.test} did not run (does it use the impl fixture?)"))
        else:
            outcomes = sorted({t["outcome"] for t in mine})
            detail = next((t["message"] for t in mine if t["message"]), "")
            verdicts.append(Verdict(wrong, "NOT caught", f"{wrong.test}: {'/'.join(outcomes)}"
                                    + (f": {detail}" if detail else "")))
    return verdicts


def stub_problems(result: dict | None) -> list[str]:
    """What is wrong with the shipped stub's run: every test must be todo (or skipped)."""
    if result is None:
        return ["no tests ran"]
    bad = [f"{t['nodeid']} -> {t['outcome']}: {t['message']}" for t in result["tests"]
           if t["outcome"] not in ("todo", "skipped")]
    if not bad and not result["counts"]["todo"] and result["status"] != "skipped":
        bad.append("no test was todo")
    return bad


def reference_problems(result: dict | None) -> list[str]:
    """What is wrong with the reference's run: every test must pass (or be skipped)."""
    if result is None:
        return ["no tests ran"]
    return [f"{t['nodeid']} -> {t['outcome']}: {t['message']}" for t in result["tests"]
            if t["outcome"] not in ("passed", "skipped")]


def check(root: Path, katas: Sequence[Kata], *, reference: bool = True,
          pytest_args: Sequence[str] = ()) -> tuple[list[str], int]:
    """The report lines and the exit status (0: every kata's grader is proven)."""
    paths = [str(k.test_path.relative_to(root)) for k in katas]
    lines: list[str] = []
    failures = 0
    stub = run_suite(root, paths, "--impl=mine", "--katas-check=pristine", *pytest_args)
    wrong = run_suite(root, paths, "--katas-check=wrong", *pytest_args)
    ref = run_suite(root, paths, "--impl=reference", *pytest_args) if reference else {}
    for kata in katas:
        problems = [f"stub: {p}" for p in stub_problems(stub.get(kata.id))[:5]]
        if reference:
            problems += [f"reference: {p}" for p in reference_problems(ref.get(kata.id))[:5]]
        try:
            verdicts = judge_wrong(kata, wrong.get(kata.id))
        except KataError as exc:
            verdicts, problems = [], [*problems, str(exc)]
        if len(verdicts) < MIN_WRONG:
            problems.append(f"{len(verdicts)} wrong solutions in wrong.toml; the contract "
                            f"asks for at least {MIN_WRONG}")
        caught = sum(v.verdict == "caught" for v in verdicts)
        summary = f"{kata.lab}  {kata.id}: wrong solutions caught {caught}/{len(verdicts)}"
        if not problems:
            summary += ", stub todo" + (", reference passes" if reference else "")
        lines.append(summary)
        for v in verdicts:
            lines.append(f"    {v.verdict:<10} {v.wrong.name}  ({v.wrong.test})"
                         + ("" if v.verdict == "caught" else f": {v.detail}"))
            problems += [] if v.ok else [f"wrong solution {v.wrong.name}: {v.verdict}"]
        for problem in problems:
            lines.append(f"    PROBLEM: {problem}")
        failures += bool(problems)
    lines.append(f"{len(katas) - failures}/{len(katas)} katas: grader proven")
    return lines, int(failures > 0)
