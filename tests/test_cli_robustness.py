"""``katas`` as a new user meets it: pipes closed early, an ASCII terminal, no command, hand-edited
files, Ctrl-C. Whatever happens, the answer is output and an exit status, never a traceback; a
mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_vllm_katas import cli, course
from tests.test_cli import grade, three_katas

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

KATAS = [sys.executable, "-m", "pytest_vllm_katas.cli"]


def run_katas(cwd: Path, *args: str, env: dict[str, str] | None = None,
              stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([*KATAS, *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                          env=env, timeout=120, check=False)


def piped_into_head(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``katas ARGS | head -n 1`` in bash with pipefail: katas' own exit status counts."""
    command = " ".join(shlex.quote(word) for word in [*KATAS, *args])
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command} | head -n 1"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str | None = None) -> None:
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert "Traceback" not in stderr, stderr
    assert done.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("katas: "), stderr
    if expected is not None:
        assert lines[0] == expected


# -- a reader that stops early -----------------------------------------------------------------

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("args", [["status"], ["status", "--markdown"], ["next"],
                                  ["hint", "beta"], ["-h"]])
def test_a_closed_pipe_ends_quietly_with_status_0(pytester: pytest.Pytester,
                                                   args: list[str]) -> None:
    three_katas(pytester)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        done = run_katas(pytester.path, *args, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.stderr.decode() == "", "no traceback, no 'Exception ignored' either"
    assert done.returncode == 0


@needs_bash
def test_status_piped_into_head(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    done = piped_into_head(pytester.path, "status")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == "No results yet for impl=mine. Run: pytest --impl=mine katas\n"


@needs_bash
def test_a_long_diff_piped_into_head_stops_quietly(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    # A megabyte of diff: far more than a pipe holds, so the reader surely leaves first.
    reference = pytester.path / "reference/phase00/alpha.py"
    reference.write_text(reference.read_text() + "# padding\n" * 100_000)
    grade(pytester)
    done = piped_into_head(pytester.path, "diff", "alpha")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == "--- katas/phase00/alpha/alpha.py (yours)\n"


# -- a terminal that cannot show the icons ------------------------------------------------------


def ascii_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    return {**env, "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}


def test_status_markdown_under_an_ascii_locale_uses_words(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    for args in (["status", "--markdown"], ["status"]):
        done = run_katas(pytester.path, *args, env=ascii_env())
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b""
        text = done.stdout.decode("ascii")  # raises if anything else got through
        assert "?" not in text, "icons are dropped, not replaced by '?'"
    markdown = run_katas(pytester.path, "status", "--markdown", env=ascii_env()).stdout.decode()
    assert "| phase00 | 00-01 | `alpha` | cpu_ok | passed | 2/2 |" in markdown
    assert "| phase00 | 00-02 | `beta` | cpu_ok | todo | 0/2 |" in markdown


def test_other_text_under_an_ascii_locale_is_replaced_not_a_crash(
        pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    toml = pytester.path / "katas/phase00/beta/kata.toml"
    toml.write_text(toml.read_text().replace('hints = ["look at the docstring"]',
                                             'hints = ["a \u2192 b, then \u03c0"]'),
                    encoding="utf-8")
    done = run_katas(pytester.path, "hint", "beta", env=ascii_env())
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("ascii").splitlines()[1] == "  a ? b, then ?"


def test_for_stdout_keeps_what_the_encoding_can_show(monkeypatch: pytest.MonkeyPatch) -> None:
    class Ascii:
        encoding = "ascii"

    monkeypatch.setattr(sys, "stdout", Ascii())
    icons = "| \u2705 passed | \u00b7 not run | \u23ed\ufe0f skipped | x \u2264 y |"
    assert cli._for_stdout(icons) == "| passed | not run | skipped | x ? y |"
    monkeypatch.setattr(Ascii, "encoding", "utf-8")
    assert cli._for_stdout("| \u2705 passed |") == "| \u2705 passed |"


# -- mistakes and odd inputs --------------------------------------------------------------------


def test_no_command_is_one_line_naming_every_command_and_exit_2(
        pytester: pytest.Pytester) -> None:
    done = run_katas(pytester.path)
    assert_one_line_error(done)
    assert done.stdout == b""
    usage = cli.build_parser().format_usage()  # usage: katas [-h] {status,hint,...} ...
    commands = usage[usage.index("{") + 1:usage.index("}")].split(",")
    assert "status" in commands and "models" in commands
    assert done.stderr.decode() == (f"katas: choose a command: {', '.join(commands)} "
                                    "(`katas -h` says what each does)\n")


def test_models_help_reaches_the_models_command(pytester: pytest.Pytester) -> None:
    done = run_katas(pytester.path, "models", "--help")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("usage: katas models")


@pytest.mark.parametrize(("args", "expected"), [
    (["status", "99"], "katas: no katas in phase99"),
    (["status", "abc"], "katas: 'abc' is not a phase; use e.g. 2 or phase02"),
    (["status", "--report", "missing.json"],
     "katas: no report at missing.json; write one with pytest --katas-report=missing.json"),
    (["hint", "x", "--level", "0"], "katas: no kata named 'x'; try `katas status` for the list"),
    (["hint", "beta", "--level", "0"],
     "katas: phase00/beta has 1 hint level(s); choose --level 1 to 1"),
    (["hint", "beta", "--level", "-1"],
     "katas: phase00/beta has 1 hint level(s); choose --level 1 to 1"),
    (["diff", "beta"], None),
    (["reset", ""], "katas: no kata named ''; try `katas status` for the list"),
    (["watch", "README.md", "--once"], None),
])
def test_a_new_users_mistakes_are_one_line_and_exit_2(pytester: pytest.Pytester,
                                                      args: list[str],
                                                      expected: str | None) -> None:
    three_katas(pytester)
    (pytester.path / "README.md").write_text("# katas\n")
    assert_one_line_error(run_katas(pytester.path, *args), expected)


@pytest.mark.parametrize("args", [["status"], ["next"], ["hint", "alpha"], ["diff", "alpha"],
                                  ["reset", "alpha"], ["watch", "--once"]])
def test_outside_a_checkout_every_command_is_one_line(pytester: pytest.Pytester,
                                                      args: list[str]) -> None:
    assert_one_line_error(run_katas(pytester.path, *args))


def test_hand_edited_progress_of_the_wrong_types_is_shown_without_them(
        pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    cache = course.progress_file(pytester.path, "mine")
    stored = json.loads(cache.read_text())
    for entry in stored.values():
        entry.update(reason=5, speed=5, counts=5)
    cache.write_text(json.dumps(stored))
    for args in (["status"], ["status", "--markdown"], ["next"]):
        done = run_katas(pytester.path, *args)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b""
    markdown = run_katas(pytester.path, "status", "--markdown").stdout.decode()
    assert "`beta` | cpu_ok | \U0001f4dd todo | 0/2 |  |  |" in markdown


def test_a_report_with_wrong_types_is_shown_without_them(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    entries = [{"id": "phase00/alpha", "status": "passed", "passed": "two", "total": 2},
               {"id": "phase00/beta", "status": "failing", "passed": 0, "total": 2,
                "reason": None, "speed": "fast"}]
    (pytester.path / "r.json").write_text(json.dumps({"impl": "mine", "katas": entries}))
    done = run_katas(pytester.path, "status", "--report", "r.json", "--markdown")
    assert done.returncode == 0, done.stderr.decode()
    text = done.stdout.decode()
    assert "| `alpha` | cpu_ok | \u00b7 not run |" in text, "an entry without counts is dropped"
    assert "| `beta` | cpu_ok | \u274c failing | 0/2 |  |  |" in text


def test_diff_with_a_missing_file_is_one_line(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    (pytester.path / "reference/phase00/alpha.py").unlink()
    assert_one_line_error(run_katas(pytester.path, "diff", "alpha"),
                          "katas: cannot read reference/phase00/alpha.py (FileNotFoundError)")


def test_ctrl_c_is_exit_130_without_a_traceback(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    three_katas(pytester)
    monkeypatch.chdir(pytester.path)

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_next", interrupted)
    assert cli.main(["next"]) == 130
    assert capsys.readouterr().err == ""
