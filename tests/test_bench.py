"""``kata_bench`` and ``--katas-speed``: the learner's code timed against the reference, in a
tiny kata repository graded in a subprocess.

No test here reads a wall clock. Where a ratio matters, the kata's ``add`` advances a fake clock
(``--benchmark-timer=fakeclock.now``) by a fixed amount per call: the learner's by 2**-7 s, the
reference's by 2**-9 s, so every timed round lasts exactly that long and the ratio is exactly 4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_vllm_katas.bench import WRONG_OUTPUT, first_difference
from tests.kata_builder import write_kata

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

FAST = ("--benchmark-max-time=0.02", "--benchmark-min-rounds=3")
FAKE_CLOCK = ("--benchmark-timer=fakeclock.now",)

SPEED_TESTS = """
import pytest

pytestmark = pytest.mark.cpu_ok


def test_adds(impl):
    assert impl.add(2, 3) == 5


def test_speed_add(kata_bench):
    kata_bench(lambda m: m.add(2, 3))
"""

# Every call of add is logged, so the tests below can read the order of the timed calls.
CALL_LOG_TESTS = """
import json
from pathlib import Path

import pytest

import fakeclock

pytestmark = pytest.mark.cpu_ok


def test_adds(impl):
    assert impl.add(2, 3) == 5


def test_speed_add(kata_bench):
    fakeclock.LOG.clear()
    kata_bench(lambda m: m.add(2, 3){same})
    Path("calls.json").write_text(json.dumps(fakeclock.LOG))
"""

FAKE_CLOCK_MODULE = """
NOW = [0.0]
LOG = []


def now():
    return NOW[0]


def tick(seconds, who):
    NOW[0] += seconds
    LOG.append(who)
"""

# Powers of two: the fake clock's sums stay exact, so each round lasts exactly one tick.
SLOW_SOLUTION = """
import fakeclock


def add(a, b):
    fakeclock.tick(2.0 ** -7, "yours")
    return a + b
"""

WRONG_SOLUTION = """
import fakeclock


def add(a, b):
    fakeclock.tick(2.0 ** -9, "yours")
    return a - b
"""

CLOCKED_REFERENCE = """
import fakeclock


def add(a, b):
    fakeclock.tick(2.0 ** -9, "reference")
    return a + b
"""


def speed_kata(pytester: pytest.Pytester, budget: float | None = None, *,
               clocked: bool = False, same: str = "", **kwargs: str) -> None:
    if clocked:
        (pytester.path / "fakeclock.py").write_text(FAKE_CLOCK_MODULE)
        kwargs.setdefault("reference", CLOCKED_REFERENCE)
        kwargs.setdefault("tests", CALL_LOG_TESTS.format(same=same))
    kwargs.setdefault("tests", SPEED_TESTS)
    write_kata(pytester, **kwargs)
    if budget is not None:
        toml = pytester.path / "katas/phase00/demo/kata.toml"
        toml.write_text(toml.read_text() + f"\n[speed]\nbudget = {budget}\n")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # When this suite itself runs under xdist, its workers' marker would turn timing off.
    pytester._monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    return pytester.runpytest_subprocess("-p", "no:randomly", *FAST, *args, "katas")


def report(pytester: pytest.Pytester, name: str = "r.json") -> dict:
    return json.loads((pytester.path / name).read_text())["katas"][0]


def benchmarks(pytester: pytest.Pytester, name: str = "bench.json") -> list[dict]:
    return json.loads((pytester.path / name).read_text())["benchmarks"]


# -- what is recorded --------------------------------------------------------------------------


def test_reference_against_itself_records_both_sides_in_one_group(
        pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "--katas-report=r.json", "--benchmark-json=bench.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*benchmark 'phase00/demo::test_speed_add': 2 tests*"])
    result.stdout.fnmatch_lines(["test_speed_add *"])
    result.stdout.fnmatch_lines(["test_speed_add::reference *"])
    kata = report(pytester)
    speed = kata["speed"]
    assert set(speed) == {"ratio", "impl_median_s", "reference_median_s", "budget",
                          "over_budget"}
    assert speed["budget"] == 10 and speed["ratio"] > 0
    speed_test = [t for t in kata["tests"] if t["nodeid"].endswith("test_speed_add")][0]
    assert speed_test["speed"] == speed
    records = {b["name"]: b for b in benchmarks(pytester)}
    assert set(records) == {"test_speed_add", "test_speed_add::reference"}
    mine, ref = records["test_speed_add"], records["test_speed_add::reference"]
    assert mine["group"] == ref["group"] == "phase00/demo::test_speed_add"
    assert mine["extra_info"]["impl"] == "reference" and ref["extra_info"]["impl"] == "reference"
    assert mine["stats"]["rounds"] == ref["stats"]["rounds"] >= 3, "one round each per pair"
    assert mine["stats"]["median"] == speed["impl_median_s"]
    assert ref["stats"]["median"] == speed["reference_median_s"]


def test_rounds_alternate_yours_then_the_reference(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, clocked=True, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--benchmark-json=bench.json")
    result.assert_outcomes(passed=2)
    calls = json.loads((pytester.path / "calls.json").read_text())
    rounds = {b["name"]: b["stats"]["rounds"] for b in benchmarks(pytester)}
    # One tick per call is at least the 1 ms a round needs: one call per round, on both sides;
    # 0.02 s of pairs at 2**-7 + 2**-9 s each is 3 rounds.
    assert rounds == {"test_speed_add": 3, "test_speed_add::reference": 3}
    untimed, calibration, timed = calls[:1], calls[1:3], calls[3:]
    assert untimed == ["yours"], "the untimed first call (a stub's todo surfaces there)"
    assert calibration == ["yours", "reference"]
    assert timed == ["yours", "reference"] * 3, "A B A B ..., never all of A then all of B"


def test_ratio_is_the_ratio_of_the_medians(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10, clocked=True, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--katas-report=r.json")
    result.assert_outcomes(passed=2)
    speed = report(pytester)["speed"]
    assert speed == {"ratio": 4.0, "impl_median_s": 2.0 ** -7, "reference_median_s": 2.0 ** -9,
                     "budget": 10, "over_budget": False}
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   passed     2/2  speed 4.00x (within "
                                 "budget 10x)"])


# -- budgets -----------------------------------------------------------------------------------


def test_slow_solution_is_noted_but_passes_without_katas_speed(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=2, clocked=True, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--katas-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*  demo  cpu_ok   passed     2/2  speed 4.00x (over budget 2x)"])
    assert report(pytester)["speed"]["over_budget"] is True


def test_katas_speed_fails_a_solution_over_its_budget(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=2, clocked=True, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--katas-speed", "--katas-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["speed: 4.0x slower than the reference (median 7.81 ms vs "
                                 "1.95 ms); the budget in kata.toml is 2x"])
    kata = report(pytester)
    assert kata["status"] == "failing"
    assert kata["reason"].startswith("Failed: speed: 4.0x slower than the reference")
    assert "the budget in kata.toml is 2x" in kata["reason"]


def test_without_a_budget_katas_speed_only_reports(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, clocked=True, stub=SLOW_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--katas-speed")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*00-01  demo  cpu_ok   passed     2/2  speed 4.00x"])


# -- a fast wrong answer is not fast -----------------------------------------------------------


def test_a_wrong_timed_output_fails_the_speed_test(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10, clocked=True, stub=WRONG_SOLUTION)
    result = run(pytester, "--impl=mine", *FAKE_CLOCK, "--katas-report=r.json",
                 "--benchmark-json=bench.json")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([f"{WRONG_OUTPUT}: output: -1 vs 5"])
    speed_test = [t for t in report(pytester)["tests"]
                  if t["nodeid"].endswith("test_speed_add")][0]
    assert speed_test["outcome"] == "failed" and speed_test["speed"] is None
    assert speed_test["message"] == f"Failed: {WRONG_OUTPUT}: output: -1 vs 5"
    assert benchmarks(pytester) == [], "timings of a wrong answer are never saved"


def test_same_replaces_the_comparison(pytester: pytest.Pytester) -> None:
    # This comparator only asks for the same sign: -1 (yours) and 5 (the reference's) differ.
    speed_kata(pytester, clocked=True, stub=WRONG_SOLUTION,
               same=", same=lambda a, b: (a > 0) == (b > 0)")
    result = run(pytester, "--impl=mine", *FAKE_CLOCK)
    result.stdout.fnmatch_lines([f"{WRONG_OUTPUT}: same=<lambda> returned False"])
    # A last-bit difference, within what this comparator allows: the speed test passes.
    lenient = WRONG_SOLUTION.replace("a - b", "a + b + 1e-12")
    speed_kata(pytester, clocked=True, stub=lenient,
               same=", same=lambda a, b: abs(a - b) < 1e-9")
    run(pytester, "--impl=mine", *FAKE_CLOCK, "-k", "speed").assert_outcomes(passed=1)


def test_same_may_assert_with_its_own_message(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, clocked=True, stub=WRONG_SOLUTION,
               same=", same=check")
    test_file = pytester.path / "katas/phase00/demo/test_demo.py"
    test_file.write_text(test_file.read_text() + "\n\ndef check(yours, reference):\n"
                         "    assert yours == reference, f'sum is off by {reference - yours}'\n")
    result = run(pytester, "--impl=mine", *FAKE_CLOCK)
    result.stdout.fnmatch_lines([f"{WRONG_OUTPUT}: sum is off by 6"])


@pytest.mark.parametrize(("yours", "reference", "difference"), [
    (np.array([1.0, np.nan, 3.0]), np.array([1.0, np.nan, 3.0]), None),
    ([1, 2, 3], np.array([1, 2, 3]), None),
    ((np.zeros((2, 2)), {"k": [1.5, "x"]}), [np.zeros((2, 2)), {"k": (1.5, "x")}], None),
    (float("nan"), float("nan"), None),
    (np.float64(0.25), 0.25, None),
    (np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 4.5]]),
     "output[1, 1]: 4.0 vs 4.5"),
    (np.array([1, 2, 3]), np.array([1, 5, 3]), "output[1]: 2 vs 5"),
    (np.arange(3), np.arange(4), "output: shape (3,) vs (4,)"),
    (0.1 + 0.2, 0.3, "output: 0.30000000000000004 vs 0.3"),
    ([(1, 2.0), {"a": 1}], [(1, 2.0), {"a": 2}], "output[1]['a']: 1 vs 2"),
    ({"a": 1}, {"b": 1}, "output: key(s) 'a', 'b' in only one of the two"),
    ([1, 2], [1, 2, 3], "output: 2 items vs 3"),
    ("abc", "abd", "output: 'abc' vs 'abd'"),
])
def test_default_comparison_is_exact_and_robust(yours: object, reference: object,
                                                difference: str | None) -> None:
    assert first_difference(yours, reference) == difference


def test_default_comparison_of_plain_objects_is_by_public_attributes() -> None:
    class Block:  # yours and the reference's: same name, two classes, identity for ==
        def __init__(self, block_id: int, ref_cnt: int, cache: object) -> None:
            self.block_id, self.ref_cnt, self._private = block_id, ref_cnt, cache

    class Other(Block):
        pass

    Other.__name__ = "Block"
    assert first_difference(Block(1, 2, object()), Other(1, 2, [])) is None
    assert first_difference([Block(1, 2, None)], [Other(1, 3, None)]) == (
        "output[0].ref_cnt: 2 vs 3")


# -- untimed cases -----------------------------------------------------------------------------


def test_unfinished_stub_makes_the_speed_test_a_todo(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "--impl=mine")
    outcomes = result.parseoutcomes()
    assert outcomes.get("todo") == 2 and "passed" not in outcomes and "failed" not in outcomes
    assert "was not used at all" not in result.stdout.str()


def test_benchmark_disable_runs_the_speed_test_once_untimed(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "--benchmark-disable", "--katas-report=r.json")
    result.assert_outcomes(passed=2)
    assert report(pytester)["speed"] is None
    assert "benchmark 'phase00/demo" not in result.stdout.str()


def test_under_xdist_benchmarks_are_off_with_one_line(pytester: pytest.Pytester) -> None:
    speed_kata(pytester, budget=10)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["vllm-katas: speed benchmarks are off under xdist (-n): 1 speed "
                                 "test(s) ran once, untimed; run without -n to time them"])
    assert "PytestBenchmarkWarning" not in result.stdout.str() + result.stderr.str()


# -- pytest-benchmark's table and files --------------------------------------------------------


def test_the_benchmark_table_is_narrow_unless_columns_are_chosen(
        pytester: pytest.Pytester) -> None:
    speed_kata(pytester)
    narrow = run(pytester)
    narrow.assert_outcomes(passed=2)
    assert header(narrow) == ["Min", "Median", "IQR", "Rounds"]
    chosen = run(pytester, "--benchmark-columns=mean,ops")
    chosen.assert_outcomes(passed=2)
    assert header(chosen)[:2] == ["Mean", "OPS"]


def header(result: pytest.RunResult) -> list[str]:
    """The column titles of pytest-benchmark's table (its first line below the group title)."""
    line = next(line for line in result.outlines if line.startswith("Name (time in"))
    return line.split(")", 1)[1].split()


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

