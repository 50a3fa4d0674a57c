"""``kata_bench`` and ``--katas-speed``: the learner's code timed against the reference, in a
tiny kata repository graded in a subprocess."""

from __future__ import annotations

import json

import pytest

from tests.kata_builder import write_kata

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

FAST = ("--benchmark-max-time=0.02", "--benchmark-min-rounds=3")

SPEED_TESTS = """
import pytest

pytestmark = pytest.mark.cpu_ok


def test_adds(impl):
    assert impl.add(2, 3) == 5


def test_speed_add(kata_bench):
    kata_bench(lambda m: m.add(2, 3))
"""

SLOW_SOLUTION = """
import time


def add(a, b):
    time.sleep(0.002)
    return a + b
"""


def speed_kata(pytester: pytest.Pytester, budget: float | None = None, **kwargs: str) -> None:
    write_kata(pytester, tests=SPEED_TESTS, **kwargs)
    if budget is not None:
        toml = pytester.path / "katas/phase00/demo/kata.toml"
        toml.write_text(toml.read_text() + f"\n[speed]\nbudget = {budget}\n")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # When this suite itself runs under xdist, its workers' marker would turn timing off.
    pytester._monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    return pytester.runpytest_subprocess("-p", "no:randomly", *FAST, *args, "katas")


def test_reference_against_itself_reports_a_ratio_near_1(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "--katas-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   passed     2/2  speed *x (within budget "
                                 "10x)"])
    result.stdout.fnmatch_lines(["*benchmark 'phase00/demo::test_speed_add': 2 tests*"])
    result.stdout.fnmatch_lines(["test_speed_add *"])
    result.stdout.fnmatch_lines(["test_speed_add::reference *"])
    kata = json.loads((pytester.path / "r.json").read_text())["katas"][0]
    speed = kata["speed"]
    assert speed["budget"] == 10 and speed["over_budget"] is False
    assert 0.2 < speed["ratio"] < 5, f"the reference against itself should be about 1: {speed}"
    speed_test = [t for t in kata["tests"] if t["nodeid"].endswith("test_speed_add")][0]
    assert speed_test["speed"] == speed


def test_slow_solution_is_noted_but_passes_without_katas_speed(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=2, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*  demo  cpu_ok   passed     2/2  speed *x (over budget 2x)"])


def test_katas_speed_fails_a_solution_over_its_budget(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=2, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", "--katas-speed", "--katas-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*  demo  cpu_ok   failing    1/2  speed *x (over budget 2x)"])
    kata = json.loads((pytester.path / "r.json").read_text())["katas"][0]
    assert kata["reason"].startswith("Failed: speed: ")
    assert "slower than the reference" in kata["reason"]
    assert "the budget in kata.toml is 2x" in kata["reason"]


def test_without_a_budget_katas_speed_only_reports(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", "--katas-speed")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   passed     2/2  speed *x"])


def test_unfinished_stub_makes_the_speed_test_a_todo(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "--impl=mine")
    outcomes = result.parseoutcomes()
    assert outcomes.get("todo") == 2 and "passed" not in outcomes and "failed" not in outcomes
    assert "was not used at all" not in result.stdout.str()


def test_under_xdist_benchmarks_are_off_with_one_line(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["vllm-katas: speed benchmarks are off under xdist (-n): 1 speed "
                                 "test(s) ran once, untimed; run without -n to time them"])
    assert "PytestBenchmarkWarning" not in result.stdout.str() + result.stderr.str()


def test_machine_info_and_compare_against_a_saved_run(pytester: pytest.Pytester) -> None:
    speed_kata(pytester)
    saved = run(pytester, "--benchmark-autosave", "--benchmark-json=bench.json")
    saved.assert_outcomes(passed=2)
    info = json.loads((pytester.path / "bench.json").read_text())["machine_info"]["vllm_katas"]
    assert info["impl"] == "reference"
    for key in ("python", "numpy", "torch", "triton", "vllm", "cuda_visible", "gpu", "cuda"):
        assert key in info, key
    compared = run(pytester, "--benchmark-compare=0001")
    compared.assert_outcomes(passed=2)
    compared.stdout.fnmatch_lines(["test_speed_add (0001_*"])
    compared.stdout.fnmatch_lines(["test_speed_add::reference (0001_*"])
