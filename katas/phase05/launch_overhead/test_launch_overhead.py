"""Spec for kata 05-02: eager costs k * n launches, a graph C + (k - 1); the graph wins from the
second call (never with one op); the launch speedup climbs towards n from below, and a dearer
capture delays the break-even without moving that ceiling.

Every number is an exact integer (or an exact ratio of two), pinned as such. The last test
checks the formulas against what mini_vllm's simulator (kata 05-01's mechanism) counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm.cudagraph import GraphRunner, LaunchCounter, run_eager
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok


def oracle_crossover(n: int, c: int) -> int | None:
    """By brute force over k (independent of the closed form): first k with C + k - 1 < k n."""
    for k in range(1, 10_000):
        if c + k - 1 < k * n:
            return k
    return None


# -- the formulas -------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_ops", "k", "expected"), [
    (3, 100, 300), (3, 1, 3), (300, 1, 300), (300, 1000, 300_000), (1, 7, 7), (4, 0, 0),
])
def test_eager_launches_formula(impl, num_ops: int, k: int, expected: int) -> None:
    got = impl.eager_launches(num_ops, k)
    assert got == expected, (
        f"{k} eager calls of a {num_ops}-op model launch every op every call: {expected}, "
        f"got {got}")


@pytest.mark.parametrize(("num_ops", "k", "capture", "expected"), [
    (3, 100, None, 102),  # 3 + 99
    (3, 1, None, 3),  # the capture alone
    (3, 2, None, 4),
    (300, 1000, None, 1299),
    (1, 5, None, 5),
    (4, 10, 20, 29),  # a capture of 5 passes: 20 + 9
    (4, 1, 20, 20),
    (3, 0, None, 0),  # never called: nothing captured
    (3, 0, 15, 0),
])
def test_graph_launches_formula(impl, num_ops: int, k: int, capture: int | None,
                                expected: int) -> None:
    got = impl.graph_launches(num_ops, k, capture)
    cost = num_ops if capture is None else capture
    assert got == expected, (
        f"{k} calls through a graph of {num_ops} ops, capture costing {cost}: the first call "
        f"captures ({cost}), each of the other {max(k - 1, 0)} replays at 1 launch"
        f"{' (no call at all costs 0)' if k == 0 else ''}: {expected}, got {got}")


def test_the_course_numbers_match_lab_01(impl) -> None:
    eager, graph = impl.eager_launches(3, 100), impl.graph_launches(3, 100)
    assert (eager, graph) == (300, 102), (
        f"kata 05-01's 100 calls of a 3-op model: 300 eager launches against 102 with a graph "
        f"(default capture cost = num_ops), got {eager} and {graph}")


# -- the crossover --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_ops", [2, 3, 4, 32, 300])
def test_crossover_is_the_second_call(impl, num_ops: int) -> None:
    got = impl.crossover(num_ops)
    assert got == 2, (
        f"with {num_ops} ops and a capture costing one pass, call 1 ties ({num_ops} launches "
        f"either way, not cheaper) and call 2 wins ({num_ops} + 1 < {2 * num_ops}): "
        f"the crossover is 2, got {got}")


@pytest.mark.parametrize("capture", [None, 1, 5])
def test_a_single_op_never_crosses(impl, capture: int | None) -> None:
    got = impl.crossover(1, capture)
    assert got is None, (
        f"with one op a replay costs what the eager call costs (1 launch), and the capture is "
        f"never cheaper: no call count ever wins, which crossover reports as None; got {got!r}")


@pytest.mark.parametrize(("capture", "expected"), [(4, 2), (5, 2), (7, 3), (8, 3), (10, 4),
                                                   (20, 7), (400, 134)])
def test_capture_cost_moves_the_crossover_later(impl, capture: int, expected: int) -> None:
    got = impl.crossover(4, capture)
    assert got == expected == oracle_crossover(4, capture), (
        f"4 ops, capture costing {capture}: the graph's total {capture} + (k - 1) first drops "
        f"below 4k at k = {expected}, got {got}")


def test_exercise_9_table(impl) -> None:
    # Phase 05 exercise 9: num_ops in {1, 4, 32, 300} x capture cost in {n, 5n}.
    expected = {1: (None, None), 4: (2, 7), 32: (2, 6), 300: (2, 6)}
    got = {n: (impl.crossover(n, n), impl.crossover(n, 5 * n)) for n in expected}
    assert got == expected, (
        f"crossover per num_ops, as (capture = n, capture = 5n): expected {expected}, got {got}")


# -- the speedup ----------------------------------------------------------------------------------


def test_launch_speedup_is_eager_over_graph(impl) -> None:
    for (n, k, c), expected in {(3, 100, None): 300 / 102, (3, 1, None): 1.0,
                                (300, 1000, None): 300_000 / 1299, (4, 10, 20): 40 / 29,
                                (1, 9, None): 1.0, (1, 3, 5): 3 / 7}.items():
        got = impl.launch_speedup(n, k, c)
        assert_close(got, expected, cause="arithmetic",
                     what=f"launch_speedup({n}, {k}, {c}) = eager / graph launches")


@pytest.mark.parametrize(("num_ops", "capture_factor"), [(2, 1), (3, 1), (30, 3), (300, 1),
                                                         (300, 5)])
def test_the_ratio_approaches_n_from_below_monotonically(impl, num_ops: int,
                                                         capture_factor: int) -> None:
    capture = capture_factor * num_ops
    calls = [1, 2, 3, 5, 10, 100, 1000, 10**4, 10**6, 10**8]
    ratios = [impl.launch_speedup(num_ops, k, capture) for k in calls]
    assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False)), (
        f"{num_ops} ops, capture {capture}: every extra call makes the graph's ratio better "
        f"(strictly increasing), got {[round(r, 4) for r in ratios]} for k = {calls}")
    assert all(r < num_ops for r in ratios), (
        f"the ratio stays below num_ops = {num_ops} for any finite k (the capture is paid "
        f"once), got {[round(r, 4) for r in ratios]}")
    gap = num_ops - ratios[-1]
    assert gap < 1e-3 * num_ops, (
        f"after 10**8 calls the ratio is within 0.1% of its ceiling {num_ops}, got "
        f"{ratios[-1]}")


@pytest.mark.parametrize("num_ops", [1, 3, 300])
def test_capture_cost_never_moves_the_asymptote(impl, num_ops: int) -> None:
    ceilings = [impl.asymptotic_speedup(num_ops, c) for c in (None, num_ops, 5 * num_ops,
                                                              100 * num_ops)]
    assert ceilings == [num_ops] * 4, (
        f"the ceiling of the launch speedup is the number of ops captured ({num_ops}), "
        f"whatever the capture cost (it is paid once): got {ceilings} for capture cost "
        f"default, n, 5n, 100n")


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_are_refused(impl) -> None:
    with expect_raises(ValueError, "a model has at least one op", match="num_ops"):
        impl.eager_launches(0, 5)
    with expect_raises(ValueError, "a negative number of calls means nothing", match="k"):
        impl.graph_launches(3, -1)
    with expect_raises(ValueError, "a capture runs every op at least once",
                       match="capture_cost_ops"):
        impl.graph_launches(4, 10, 3)
    with expect_raises(ValueError, "a capture cheaper than one pass cannot be",
                       match="capture_cost_ops"):
        impl.crossover(4, 2)
    with expect_raises(ValueError, "after zero calls there is no ratio (0 / 0)", match="k"):
        impl.launch_speedup(3, 0)


# -- the formulas against the simulator -----------------------------------------------------------


@pytest.mark.parametrize("num_ops", [1, 3, 10])
@pytest.mark.parametrize("warmups", [0, 4])
def test_your_formulas_predict_mini_vllms_counter(impl, num_ops: int, warmups: int) -> None:
    # mini_vllm.cudagraph counts launches as kata 05-01 does; num_warmups eager passes before the
    # recording make a capture cost (warmups + 1) * num_ops.
    ops = [lambda x, i=i: x + i for i in range(num_ops)]
    capture = (warmups + 1) * num_ops
    x = np.zeros(4)
    LaunchCounter.reset()
    runner = GraphRunner(ops, num_warmups=warmups)
    graph_totals, eager_totals = [], []
    eager_total = 0
    for _ in range(50):
        runner(x)
        graph_totals.append(LaunchCounter.n)
        before = LaunchCounter.n
        run_eager(ops, x)
        eager_total += LaunchCounter.n - before
        LaunchCounter.n = before  # keep the runner's tally alone in LaunchCounter.n
        eager_totals.append(eager_total)
    predicted_graph = [impl.graph_launches(num_ops, k, capture) for k in range(1, 51)]
    predicted_eager = [impl.eager_launches(num_ops, k) for k in range(1, 51)]
    assert predicted_graph == graph_totals, (
        f"{num_ops} ops, {warmups} warmups: your graph_launches(n, k, {capture}) for k = 1..5 "
        f"gives {predicted_graph[:5]}; the simulator counted {graph_totals[:5]}")
    assert predicted_eager == eager_totals, (
        f"your eager_launches for k = 1..5 gives {predicted_eager[:5]}; the simulator counted "
        f"{eager_totals[:5]}")
    measured = next((k for k, (g, e) in enumerate(zip(graph_totals, eager_totals, strict=True),
                                                  start=1) if g < e), None)
    got = impl.crossover(num_ops, capture)
    assert got == measured, (
        f"{num_ops} ops, capture {capture}: the simulator's graph total first drops below "
        f"eager's at call {measured}; your crossover says {got!r}")
