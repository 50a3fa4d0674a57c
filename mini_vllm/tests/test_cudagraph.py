"""mini_vllm.cudagraph: capture once, replay as one launch; fixed shapes; static buffers.

The course's seven (its lab 05-01's six and the piecewise one), then the exercises of phase 05
that extend the simulator: capture sizes with padding (exercise 7), launches of full, piecewise
and eager runs (exercise 8), and warmup runs that make a capture cost more than one pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm.cudagraph import (
    GraphRunner,
    LaunchCounter,
    PiecewiseGraphRunner,
    run_eager,
    select_capture_size,
)

# Three "kernels" whose composition is x -> 10x (so 1 -> 10 and 5 -> 50); order matters.
OPS = [lambda x: x * 2, lambda x: x + 3, lambda x: (x - 3) * 5]


@pytest.fixture(autouse=True)
def _fresh_counter() -> None:
    LaunchCounter.reset()


def launches(fn, *args) -> int:  # type: ignore[no-untyped-def]
    before = LaunchCounter.n
    fn(*args)
    return LaunchCounter.n - before


def test_eager_pays_one_launch_per_op() -> None:
    x = np.arange(4.0)
    assert launches(run_eager, OPS, x) == 3
    assert launches(run_eager, OPS, x) == 3
    np.testing.assert_array_equal(run_eager(OPS, x), 10 * x)


def test_capture_then_replay_is_one_launch() -> None:
    runner = GraphRunner(OPS)
    x = np.ones(4)
    assert launches(runner, x) == 3  # capture: every op launches
    assert launches(runner, x) == 1  # replay: one launch for the recording
    assert runner.num_captured == 1 and runner.num_replays == 1


def test_replay_output_matches_eager() -> None:
    runner = GraphRunner(OPS)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.standard_normal(4)
        np.testing.assert_array_equal(runner(x), run_eager(OPS, x))


def test_static_buffer_reflects_new_input() -> None:
    runner = GraphRunner(OPS)
    assert runner(np.full(4, 1.0)).tolist() == [10.0] * 4
    assert runner(np.full(4, 5.0)).tolist() == [50.0] * 4


def test_new_shape_triggers_recapture() -> None:
    runner = GraphRunner(OPS)
    assert launches(runner, np.ones(4)) == 3
    assert launches(runner, np.ones(8)) == 3
    assert {entry.shape for entry in runner.graphs.values()} == {(4,), (8,)}
    assert launches(runner, np.ones(4)) == 1 and launches(runner, np.ones(8)) == 1


def test_graphs_win_when_overhead_dominates() -> None:
    x = np.ones(4)
    for _ in range(100):
        run_eager(OPS, x)
    eager = LaunchCounter.n
    LaunchCounter.reset()
    runner = GraphRunner(OPS)
    for _ in range(100):
        runner(x)
    assert (eager, LaunchCounter.n) == (300, 102)


def test_piecewise_equals_eager_and_splits_around_the_middle_op() -> None:
    runner = PiecewiseGraphRunner(OPS, is_capturable=lambda i: i != 1)
    assert runner.num_graphs == 2  # two capturable runs surround one eager op
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal(5)
        np.testing.assert_array_equal(runner(x), run_eager(OPS, x))
    assert PiecewiseGraphRunner(OPS, lambda i: True).num_graphs == 1
    assert PiecewiseGraphRunner(OPS, lambda i: False).num_graphs == 0


# -- beyond the course's seven ------------------------------------------------------------------


def test_the_static_input_is_written_in_place_never_rebound() -> None:
    runner = GraphRunner(OPS)
    caller = np.ones(4)
    runner(caller)
    (entry,) = runner.graphs.values()
    buffer, address = entry.static_input, entry.input_address
    assert not np.shares_memory(buffer, caller), "capture copies into memory the graph owns"
    caller[:] = 7.0
    np.testing.assert_array_equal(buffer, np.ones(4))
    for value in (2.0, 3.0, 4.0):
        runner(np.full(4, value))
        assert entry.static_input is buffer
        assert entry.static_input.__array_interface__["data"][0] == address
        np.testing.assert_array_equal(buffer, np.full(4, value))
    entry.static_input = np.ones(4)  # a rebinding, as a careless "optimization" would do
    with pytest.raises(AssertionError, match="never rebound"):
        runner(np.ones(4))


def test_replay_overwrites_and_returns_the_entrys_output_buffer() -> None:
    runner = GraphRunner(OPS)
    first = runner(np.ones(4))
    second = runner(np.full(4, 2.0))
    (entry,) = runner.graphs.values()
    assert first is entry.output and second is entry.output
    assert first.tolist() == [20.0] * 4  # the earlier result was overwritten: copy to keep it


def test_the_key_is_shape_and_dtype() -> None:
    runner = GraphRunner(OPS)
    runner(np.ones((2, 4)))
    out = runner(np.ones((2, 1)))  # same len(x), another shape: another graph
    assert out.shape == (2, 1) and runner.num_captured == 2
    out = runner(np.ones((2, 4), np.float32))
    assert out.dtype == np.float32 and runner.num_captured == 3


def test_capture_sizes_pad_batches_up_to_a_rung() -> None:
    # Exercise 7: batches 1..8, each twice (capture, then replay).
    plain = GraphRunner(OPS)
    padded = GraphRunner(OPS, capture_sizes=[1, 2, 4, 8])
    rng = np.random.default_rng(2)
    for batch in range(1, 9):
        for _ in range(2):
            x = rng.standard_normal((batch, 3))
            expected = run_eager(OPS, x)
            np.testing.assert_array_equal(plain(x), expected)
            got = padded(x)
            assert got.shape == (batch, 3)
            np.testing.assert_array_equal(got, expected)
    assert plain.num_captured == 8
    assert padded.num_captured == 4
    assert sorted(e.shape[0] for e in padded.graphs.values()) == [1, 2, 4, 8]
    # 3 -> 4 adds 1 row, 5 -> 8 adds 3, 6 -> 8 adds 2, 7 -> 8 adds 1; each twice.
    assert padded.num_padded_rows == 2 * (1 + 3 + 2 + 1)


def test_batches_five_and_seven_share_the_graph_of_eight() -> None:
    runner = GraphRunner(OPS, capture_sizes=[1, 2, 4, 8])
    assert launches(runner, np.ones((5, 2))) == 3
    assert launches(runner, np.ones((7, 2))) == 1
    assert [e.shape for e in runner.graphs.values()] == [(8, 2)]


def test_a_batch_above_the_largest_size_runs_eagerly() -> None:
    runner = GraphRunner(OPS, capture_sizes=[8, 4, 2, 1])  # any order
    x = np.ones((9, 2))
    assert launches(runner, x) == 3 and launches(runner, x) == 3
    assert runner.num_captured == 0 and runner.num_eager_calls == 2
    np.testing.assert_array_equal(runner(x), 10 * x)
    assert select_capture_size(9, [1, 2, 4, 8]) is None
    assert select_capture_size(3, [1, 2, 4, 8]) == 4


@pytest.mark.parametrize("sizes", [[], [0, 4], [2, -1], [1.5]])
def test_bad_capture_sizes_are_refused(sizes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="capture sizes"):
        GraphRunner(OPS, capture_sizes=sizes)


def test_an_empty_op_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one op"):
        GraphRunner([])


def test_full_piecewise_and_eager_launches_of_a_ten_op_model() -> None:
    # Exercise 8: 10 ops, op 5 (the attention stand-in) cannot be captured.
    ops = [lambda x, i=i: x + i for i in range(10)]
    full = GraphRunner(ops)
    piecewise = PiecewiseGraphRunner(ops, is_capturable=lambda i: i != 5)
    x = np.zeros(3)
    assert piecewise.num_graphs == 2
    assert [launches(full, x) for _ in range(3)] == [10, 1, 1]
    assert [launches(piecewise, x) for _ in range(3)] == [10, 3, 3]  # 5 + 1 + 4, then 1 + 1 + 1
    assert [launches(run_eager, ops, x) for _ in range(3)] == [10, 10, 10]
    np.testing.assert_array_equal(piecewise(x), run_eager(ops, x))


def test_warmups_make_a_capture_cost_more_than_one_pass() -> None:
    runner = GraphRunner(OPS, num_warmups=4)
    x = np.ones(4)
    assert [launches(runner, x) for _ in range(3)] == [15, 1, 1]  # (4 + 1) * 3, then replays
    assert runner(np.full(4, 5.0)).tolist() == [50.0] * 4
