"""A verdict is never wrong: partial runs, Ctrl-C, hard exits, hostile imports and broken katas,
each tried the way a learner would meet it (a tiny kata repository, pytest in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kata_builder import write_kata

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

THREE_TESTS = """
import pytest

pytestmark = pytest.mark.cpu_ok


def test_small(impl):
    assert impl.add(2, 3) == 5


def test_negative(impl):
    assert impl.add(-2, -3) == -5


def test_zero(impl):
    assert impl.add(0, 0) == 0
"""

ADD = "def add(a, b):\n    return a + b\n"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def katas(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_vllm_katas.cli", *args],
                          cwd=pytester.path, capture_output=True, text=True, timeout=120)


def stored(pytester: pytest.Pytester, impl: str = "mine") -> dict:
    path = pytester.path / ".pytest_cache" / "v" / "katas" / "progress" / impl
    return json.loads(path.read_text())


def test_a_k_selection_never_marks_a_kata_passed(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub=ADD, tests=THREE_TESTS)
    result = run(pytester, "--impl=mine", "katas", "-k", "small")
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   partial    1/3  2 of 3 tests not run*"])
    entry = stored(pytester)["phase00/demo"]
    assert (entry["status"], entry["passed"], entry["total"]) == ("partial", 1, 3)
    assert "partial" in katas(pytester, "next").stdout, "katas next must not skip the kata"
    refused = katas(pytester, "diff", "demo")
    assert refused.returncode == 2 and "has not passed" in refused.stderr


@pytest.mark.parametrize(
    "selection", [["-x"], ["--lf"], ["katas/phase00/demo/test_demo.py::test_zero"]],
    ids=["exitfirst", "last-failed", "node-id"])
def test_narrow_runs_never_shrink_the_kata(pytester: pytest.Pytester,
                                           selection: list[str]) -> None:
    write_kata(pytester, stub="def add(a, b):\n    return a + b if a else 1\n", tests=THREE_TESTS)
    run(pytester, "--impl=mine", "katas")  # test_zero fails: 2/3
    (pytester.path / "katas/phase00/demo/demo.py").write_text(ADD)  # fixed, but only rerun some
    run(pytester, "--impl=mine", *selection, *([] if "::" in selection[0] else ["katas"]))
    entry = stored(pytester)["phase00/demo"]
    assert entry["total"] == 3, f"{selection}: the kata still has 3 tests, got {entry['total']}"
    if selection == ["-x"]:
        assert entry["status"] == "passed"  # nothing failed, so -x ran them all
    else:
        assert entry["status"] == "partial", "tests not run on the edited file cannot count"


def test_passes_of_the_same_source_carry_over_and_an_edit_drops_them(
        pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub=ADD, tests=THREE_TESTS)
    run(pytester, "--impl=mine", "katas")
    run(pytester, "--impl=mine", "katas", "-k", "small")
    assert stored(pytester)["phase00/demo"]["status"] == "passed", \
        "unchanged code: the earlier passes of the other tests still stand"
    stub = pytester.path / "katas/phase00/demo/demo.py"
    stub.write_text(ADD + "# an edit\n")
    run(pytester, "--impl=mine", "katas", "-k", "small")
    assert stored(pytester)["phase00/demo"]["status"] == "partial", \
        "after an edit, only tests run on the new code count"


def test_ctrl_c_during_a_test_is_never_a_pass(pytester: pytest.Pytester) -> None:
    started = pytester.path / "started"
    write_kata(pytester, stub=f"""
import pathlib, time

def add(a, b):
    pathlib.Path({str(started)!r}).touch()
    while True:
        time.sleep(0.01)
""", tests=THREE_TESTS)
    # The time limit per test is far above the wait below: a Ctrl-C that was swallowed shows
    # as a run still going, not as a run the time limit happened to end.
    # A terminal's Ctrl-C reaches a pytest whose SIGINT is at its default. A shell that starts
    # this suite in the background (`cmd &` without job control) makes SIGINT ignored, and the
    # child would inherit that and never see the signal: restore the default for it.
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:randomly", "--impl=mine",
                              "--katas-timeout=3600", "katas"], cwd=pytester.path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Generous waits: these are hang guards, not timings (a loaded 2-core CI machine once took
    # over 60 s to wind a run down).
    deadline = time.monotonic() + 300
    while not started.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert started.exists(), "the looping test never started"
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        pytest.fail(f"pytest was still running 300 s after Ctrl-C:\n{out[-2000:]}")
    assert "KeyboardInterrupt" in out
    entry = stored(pytester)["phase00/demo"]
    assert entry["status"] != "passed" and entry["passed"] == 0, entry
    assert entry["tests"]["katas/phase00/demo/test_demo.py::test_small"][0] == "not run"
    assert katas(pytester, "diff", "demo").returncode == 2


@pytest.mark.parametrize("top_level, shown", [
    ("import sys\nsys.exit(3)\n", "SystemExit: the module called sys.exit(3)"),
    ("raise SystemExit\n", "SystemExit"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt: the module raised KeyboardInterrupt"),
], ids=["sys.exit", "SystemExit", "KeyboardInterrupt"])
def test_an_import_that_exits_breaks_only_its_kata(pytester: pytest.Pytester, top_level: str,
                                                   shown: str) -> None:
    write_kata(pytester, "healthy", stub=ADD)
    write_kata(pytester, "exits", lab="00-02", order=2, stub=top_level)
    result = run(pytester, "--impl=mine", "katas")
    out = result.stdout.str()
    assert f"phase00/exits: error: cannot import katas/phase00/exits/exits.py: {shown}" in out
    result.stdout.fnmatch_lines(["*00-01  healthy  cpu_ok   passed     2/2*",
                                 "*00-02  exits    cpu_ok   error      0/2*"])
    assert "INTERNALERROR" not in out and "Traceback" not in out


def test_an_endless_loop_at_import_is_stopped_with_one_line(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "healthy", stub=ADD)
    write_kata(pytester, "loops", lab="00-02", order=2, stub="while True:\n    pass\n")
    result = run(pytester, "--impl=mine", "--katas-timeout=1", "katas")
    result.stdout.fnmatch_lines([
        "phase00/loops: error: cannot import katas/phase00/loops/loops.py: "
        "still running after 1 s (at import*interrupted at katas/phase00/loops/loops.py:*",
        "*00-01  healthy  cpu_ok   passed     2/2*"])


def test_a_hard_exit_is_named_on_the_next_run_and_in_status(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "healthy", stub=ADD)
    write_kata(pytester, "quits", lab="00-02", order=2,
               stub="import os\n\ndef add(a, b):\n    os._exit(1)\n")
    run(pytester, "--impl=mine", "katas")  # dies inside quits' first test
    status = katas(pytester, "status")
    assert "error" in status.stdout and "test_demo" not in status.stdout
    assert "ended abruptly during katas/phase00/quits/test_quits.py::test_adds_small_numbers" \
        in status.stdout
    (pytester.path / "katas/phase00/quits/quits.py").write_text(ADD)
    result = run(pytester, "--impl=mine", "katas/phase00/healthy")
    result.stdout.fnmatch_lines(["*the previous run did not finish*",
                                 "phase00/quits: crashed: the last run ended abruptly during "
                                 "katas/phase00/quits/test_quits.py::test_adds_small_numbers*"])


def test_one_looping_function_costs_one_timeout(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub="def add(a, b):\n    while True:\n        pass\n",
               tests=THREE_TESTS)
    result = run(pytester, "--impl=mine", "--katas-timeout=1", "katas")
    lines = result.stdout.lines
    assert sum(line.startswith("timeout: still running after 1 s") for line in lines) == 1
    assert sum(line.startswith("timeout (skipped after the first): add already ran past 1 s")
               for line in lines) == 2, "the other tests must not wait for the limit again"


def test_a_broken_kata_toml_is_one_error_row_and_commands_still_work(
        pytester: pytest.Pytester) -> None:
    write_kata(pytester, "healthy", stub=ADD)
    write_kata(pytester, "broken", lab="00-02", order=2)
    (pytester.path / "katas/phase00/broken/kata.toml").write_text("id = [unclosed\n")
    result = run(pytester, "--impl=mine", "katas")
    result.stdout.fnmatch_lines(["*00-01  healthy  cpu_ok   passed     2/2*",
                                 "*??-??  broken   ?        error*not valid TOML*"])
    for command in (["status"], ["next"], ["hint", "healthy"]):
        done = katas(pytester, *command)
        assert done.returncode == 0, f"katas {command[0]}: {done.stderr}"
    assert "not valid TOML" in katas(pytester, "status").stdout


def test_a_deleted_test_file_shows_as_an_error_row(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "healthy", stub=ADD)
    write_kata(pytester, "gone", lab="00-02", order=2)
    (pytester.path / "katas/phase00/gone/test_gone.py").unlink()
    result = run(pytester, "--impl=mine", "katas")
    result.stdout.fnmatch_lines(["*00-02  gone     cpu_ok   error        -  no tests: test_gone.py "
                                 "is missing*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED, "a kata without tests is not a green run"


def test_importing_the_reference_is_one_clear_line(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub="from reference.phase00.demo import add  # noqa\n")
    result = run(pytester, "--impl=mine", "katas")
    result.stdout.fnmatch_lines(["phase00/demo: error: your code imports the reference solution "
                                 "(katas/phase00/demo/demo.py:1)*"])
    assert result.ret != 0


def test_the_report_records_the_source_each_verdict_came_from(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub=ADD)
    run(pytester, "--impl=mine", "--katas-report=one.json", "katas")
    (pytester.path / "katas/phase00/demo/demo.py").write_text(ADD + "\n")
    run(pytester, "--impl=mine", "--katas-report=two.json", "katas")
    hashes = [json.loads((pytester.path / n).read_text())["katas"][0]["source_hash"]
              for n in ("one.json", "two.json")]
    assert all(hashes) and hashes[0] != hashes[1]


def test_gradescope_and_junit_reports_validate(pytester: pytest.Pytester) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import xml.etree.ElementTree as ET

    from pytest_vllm_katas import gradescope

    write_kata(pytester, "good", stub=ADD)
    write_kata(pytester, "half", lab="00-02", order=2, tests=THREE_TESTS,
               stub="def add(a, b):\n    return a + b if a else 1\n")
    run(pytester, "--impl=mine", "--katas-report=results.json",
        "--katas-report-format=gradescope", "--junitxml=junit.xml", "katas")
    results = json.loads((pytester.path / "results.json").read_text())
    schema = json.loads((Path(gradescope.__file__).with_name("gradescope.schema.json"))
                        .read_text())
    jsonschema.validate(results, schema)
    scores = {t["name"].split(":")[0]: t["score"] for t in results["tests"]}
    assert scores == {"00-01 phase00/good": 1.0, "00-02 phase00/half": 0.6667}
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "5" and suite.get("failures") == "1"


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_the_progress_table_is_the_last_thing_printed(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub=ADD)
    out = run(pytester, "--impl=mine", "katas").stdout.lines
    table = max(i for i, line in enumerate(out) if "vllm-katas progress" in line)
    assert all("katas passed" in line or line.startswith(("  ", "phase", "="))
               for line in out[table:] if line.strip()), out[table:]


def test_katas_export_gradescope_writes_the_stored_verdicts(pytester: pytest.Pytester) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_vllm_katas import gradescope

    write_kata(pytester, "good", stub=ADD)
    write_kata(pytester, "todo", lab="00-02", order=2)
    run(pytester, "--impl=mine", "katas")
    done = katas(pytester, "export", "--gradescope", "-o", "out/results.json")
    assert done.returncode == 0, done.stderr
    results = json.loads((pytester.path / "out/results.json").read_text())
    jsonschema.validate(results, json.loads(
        Path(gradescope.__file__).with_name("gradescope.schema.json").read_text()))
    assert [t["score"] for t in results["tests"]] == [1.0, 0.0]


def test_the_shipped_stub_check_ignores_the_learners_edits(pytester: pytest.Pytester) -> None:
    # The README's `pytest` checks that every stub as shipped is all todo; it reads the pristine
    # store, so a learner who has solved a kata does not turn it red.
    from tests.kata_builder import STUB

    write_kata(pytester, stub=ADD)  # the learner's working file: solved
    (pytester.path / "katas" / "pristine.json").write_text(
        json.dumps({"phase00/demo": STUB.lstrip("\n")}))
    result = run(pytester, "--impl=mine", "--katas-check=pristine", "katas")
    assert result.parseoutcomes() == {"todo": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["phase00/demo: todo: add: return the sum of a and b "
                                 "(katas/phase00/demo/demo.py [pristine]:3)"])
