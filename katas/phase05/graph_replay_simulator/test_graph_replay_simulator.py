"""Spec for kata 05-01: capture once, replay as one launch; one graph per shape and dtype; the
input copied into the captured buffer, never bound in its place.

The course's six tests come first, under its names and with its numbers (3 ops; 1 -> 10 at
capture, 5 -> 50 on replay; 300 eager launches against 102 over 100 calls). Then what the
course leaves implicit, and last your runner on a real network: the MLPs of mini_vllm's tiny
Llama captured per token count while the engine generates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.models.llama import silu_and_mul
from pytest_vllm_katas import assert_same_outputs, expect_raises

pytestmark = pytest.mark.cpu_ok


def double(x: np.ndarray) -> np.ndarray:
    return x * 2


def add_three(x: np.ndarray) -> np.ndarray:
    return x + 3


def minus_three_times_five(x: np.ndarray) -> np.ndarray:
    return (x - 3) * 5


# Three "kernels"; in this order they map x to 10x (1 -> 10, 5 -> 50). In another order they
# do not (reversed: 10x - 24), so the order is checked too.
OPS = [double, add_three, minus_three_times_five]


def launches(impl, fn: Callable, *args) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    """(launches ``fn(*args)`` cost, its result)."""
    before = impl.LaunchCounter.n
    result = fn(*args)
    return impl.LaunchCounter.n - before, result


def only_entry(runner):  # type: ignore[no-untyped-def]
    entries = list(runner.graphs.values())
    assert len(entries) == 1, (
        f"one shape was seen, so runner.graphs should hold one GraphEntry; it holds "
        f"{len(entries)}")
    return entries[0]


# -- the course's six ---------------------------------------------------------------------------


def test_eager_pays_one_launch_per_op(impl) -> None:
    impl.LaunchCounter.reset()
    x = np.arange(4.0)
    for call in (1, 2):
        cost, out = launches(impl, impl.run_eager, OPS, x)
        assert cost == 3, (
            f"eager call {call} of a 3-op model should cost 3 launches (one per op), cost {cost} "
            f"(is every launch bumped on LaunchCounter itself, the one class-level tally?)")
        assert np.asarray(out).tolist() == (10 * x).tolist(), (
            f"run_eager must apply the ops in list order (x*2, +3, (x-3)*5 = 10x): for "
            f"{x.tolist()} expected {(10 * x).tolist()}, got {np.asarray(out).tolist()}")
    assert impl.LaunchCounter.n == 6, f"two eager calls: LaunchCounter.n == 6, got " \
        f"{impl.LaunchCounter.n}"
    cost, out = launches(impl, impl.run_eager, [], x)
    assert cost == 0 and np.array_equal(out, x), "no ops: x back, no launch"


def test_capture_then_replay_is_one_launch(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    x = np.ones(4)
    costs = [launches(impl, runner, x)[0] for _ in range(3)]
    assert costs == [3, 1, 1], (
        f"the first call captures (one launch per op: 3), every later call with the same shape "
        f"replays the whole recording as exactly 1 launch: expected [3, 1, 1], got {costs}")
    assert runner.num_captured == 1, f"one shape, one graph: num_captured {runner.num_captured}"


def test_replay_output_matches_eager(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    rng = np.random.default_rng(0)
    runner(rng.standard_normal(4))  # capture
    for call in range(4):
        x = rng.standard_normal(4)
        got = np.array(runner(x))  # a copy: the next replay overwrites the output buffer
        expected = impl.run_eager(OPS, x)
        assert np.array_equal(got, expected), (
            f"replay {call + 1} must equal eager on its own input (a graph is an optimization, "
            f"not a behaviour change): expected {np.round(expected, 4).tolist()}, got "
            f"{np.round(got, 4).tolist()}")


def test_static_buffer_reflects_new_input(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    captured = np.asarray(runner(np.full(4, 1.0))).tolist()
    assert captured == [10.0] * 4, f"capture with ones through 10x: expected 10s, got {captured}"
    replayed = np.asarray(runner(np.full(4, 5.0))).tolist()
    assert replayed == [50.0] * 4, (
        f"replay with fives must give 50s, got {replayed}: "
        + ("the replay ran on the captured ones, so the new input never reached the static "
           "buffer (rebinding a name does not write the memory the graph reads: copy into it)"
           if replayed == [10.0] * 4 else "wrong values"))


def test_new_shape_triggers_recapture(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    assert launches(impl, runner, np.ones(4))[0] == 3, "the first (4,) call captures: 3 launches"
    cost, out = launches(impl, runner, np.ones(8))
    assert cost == 3, (
        f"shape (8,) after (4,) is a new recording and pays a full capture (3 launches), "
        f"cost {cost}")
    assert np.asarray(out).shape == (8,), f"the (8,) call returns shape (8,), got " \
        f"{np.asarray(out).shape}"
    shapes = sorted(tuple(e.shape) for e in runner.graphs.values())
    assert shapes == [(4,), (8,)] and runner.num_captured == 2, (
        f"both graphs must coexist in runner.graphs: entries for shapes {shapes}, num_captured "
        f"{runner.num_captured}")
    again = [launches(impl, runner, np.ones(n))[0] for n in (4, 8)]
    assert again == [1, 1], f"both shapes now replay at 1 launch each, cost {again}"


def test_graphs_win_when_overhead_dominates(impl) -> None:
    impl.LaunchCounter.reset()
    x = np.ones(4)
    for _ in range(100):
        impl.run_eager(OPS, x)
    eager = impl.LaunchCounter.n
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    for _ in range(100):
        runner(x)
    graph = impl.LaunchCounter.n
    assert (eager, graph) == (300, 102), (
        f"100 calls of a 3-op model: eager 100 x 3 = 300 launches, graphs 3 + 99 x 1 = 102; "
        f"got eager {eager}, graphs {graph}")


# -- what the course leaves implicit --------------------------------------------------------------


def test_launch_counter_is_one_tally_for_the_process(impl) -> None:
    impl.LaunchCounter.reset()
    assert impl.LaunchCounter.n == 0, f"after reset() n is 0, got {impl.LaunchCounter.n}"
    impl.LaunchCounter.bump()
    impl.LaunchCounter.bump(4)
    assert impl.LaunchCounter.n == 5, (
        f"bump() adds 1 and bump(4) adds 4: n == 5, got {impl.LaunchCounter.n}")
    impl.LaunchCounter.reset()
    first, second = impl.GraphRunner(OPS), impl.GraphRunner(OPS)
    first(np.ones(2))
    second(np.ones(2))
    impl.run_eager(OPS, np.ones(2))
    first(np.ones(2))
    assert impl.LaunchCounter.n == 3 + 3 + 3 + 1, (
        f"two runners and an eager call all pay into the one LaunchCounter.n: two captures, one "
        f"eager call (3 each) and a replay (1) make 10, got {impl.LaunchCounter.n}")


def test_the_static_input_is_one_buffer_for_life(impl) -> None:
    # Upstream's debug mode records the input addresses at capture and asserts them on replay.
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    runner(np.ones(4))
    entry = only_entry(runner)
    buffer = entry.static_input
    address = buffer.__array_interface__["data"][0]
    for value in (2.0, 3.0, 4.0):
        runner(np.full(4, value))
        now = only_entry(runner).static_input
        assert now is buffer and now.__array_interface__["data"][0] == address, (
            "a replay must write the new input into the captured static_input array (np.copyto), "
            "never put another array in its place: the recording reads the captured address")
        assert buffer.tolist() == [value] * 4, (
            f"after a replay with {value}s the static buffer holds them, got {buffer.tolist()}")


def test_capture_copies_the_input_into_memory_it_owns(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    x = np.ones(4)
    runner(x)
    entry = only_entry(runner)
    assert not np.shares_memory(entry.static_input, x), (
        "static_input must be a copy of the first input, in memory the graph owns: it aliases "
        "the caller's array, so every replay would write into the caller's data")
    x[:] = 7.0
    y = np.full(4, 5.0)
    runner(y)
    assert x.tolist() == [7.0] * 4 and y.tolist() == [5.0] * 4, (
        f"the caller's arrays are never written: x {x.tolist()}, y {y.tolist()}")


def test_every_call_returns_the_entrys_output_buffer(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    first = runner(np.ones(4))
    second = runner(np.full(4, 2.0))
    entry = only_entry(runner)
    assert first is entry.output and second is entry.output, (
        "capture and replay both return the entry's output array itself (upstream returns "
        "entry.output), so every call with one shape returns the same array")
    assert np.asarray(first).tolist() == [20.0] * 4, (
        f"the replay overwrote the output buffer in place: the array the capture returned now "
        f"holds the replay's 20s, got {np.asarray(first).tolist()}")


def test_shapes_of_the_same_length_are_different_graphs(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    runner(np.ones((2, 4)))
    cost, out = launches(impl, runner, np.full((2, 1), 5.0))
    out = np.asarray(out)
    assert out.shape == (2, 1) and out.tolist() == [[50.0], [50.0]], (
        f"a (2, 1) input after a (2, 4) one has the same len() but another shape: it needs its "
        f"own graph and returns shape (2, 1) of 50s; got shape {out.shape}")
    assert cost == 3 and runner.num_captured == 2, (
        f"(2, 1) must be captured (3 launches, 2 graphs), cost {cost}, "
        f"num_captured {runner.num_captured}")


def test_a_new_dtype_is_a_new_graph(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    runner(np.ones(4))
    for dtype, graphs in ((np.float32, 2), (np.int64, 3)):
        cost, out = launches(impl, runner, np.full(4, 5, dtype))
        out = np.asarray(out)
        assert out.dtype == dtype and out.tolist() == [50] * 4, (
            f"a {np.dtype(dtype).name} input through a graph recorded for float64 would be cast "
            f"to float64: a recording holds for one dtype, so it needs its own graph; got "
            f"{out.dtype} {out.tolist()}")
        assert cost == 3 and runner.num_captured == graphs, (
            f"a new dtype is a capture (3 launches): cost {cost}, num_captured "
            f"{runner.num_captured}, expected {graphs}")


def test_graph_entry_records_the_capture(impl) -> None:
    impl.LaunchCounter.reset()
    runner = impl.GraphRunner(OPS)
    x = np.arange(4.0)
    runner(x)
    entry = only_entry(runner)
    assert isinstance(entry, impl.GraphEntry), f"entries are GraphEntry, got {type(entry)}"
    assert tuple(entry.shape) == (4,) and entry.num_ops == 3, (
        f"the entry records shape (4,) and 3 ops, got {entry.shape} and {entry.num_ops}")
    assert np.array_equal(entry.static_input, x) and np.array_equal(entry.output, 10 * x), (
        "static_input holds the captured input, output its result")


def test_an_empty_op_list_is_refused(impl) -> None:
    with expect_raises(ValueError, "a graph records at least one op", match="op"):
        impl.GraphRunner([])


# -- your runner on a real network ----------------------------------------------------------------
# The MLP of a Llama layer treats every token row alone and has no metadata, so its kernels can be
# recorded for each token count: what vLLM's piecewise mode captures. Attention stays eager.


def mlp_ops(mlp) -> list:  # type: ignore[no-untyped-def]
    """A LlamaMLP as three kernels, with mini_vllm's own arithmetic (so bit for bit the same)."""

    def gate_up_proj(x: np.ndarray) -> np.ndarray:
        return x @ mlp.gate_up_proj

    def down_proj(act: np.ndarray) -> np.ndarray:
        return act @ mlp.down_proj

    return [gate_up_proj, silu_and_mul, down_proj]


def test_your_runner_replays_a_tiny_llama_mlp_exactly(impl, tiny_llama) -> None:
    impl.LaunchCounter.reset()
    mlp = tiny_llama.model.layers[0].mlp
    runner = impl.GraphRunner(mlp_ops(mlp))
    rng = np.random.default_rng(3)
    costs = []
    for rows in (1, 3, 1, 3, 3, 8):
        x = rng.standard_normal((rows, tiny_llama.hidden_size))
        cost, out = launches(impl, runner, x)
        costs.append(cost)
        out = np.asarray(out)
        assert out.shape == (rows, tiny_llama.hidden_size) and np.array_equal(out, mlp(x)), (
            f"{rows} token rows through your graph of the layer-0 MLP must equal the MLP itself, "
            f"bit for bit (the same kernels on a copy of the same input)")
    assert costs == [3, 3, 1, 1, 1, 3], (
        f"token counts 1, 3, 1, 3, 3, 8: capture, capture, then replays, then a capture for 8; "
        f"launches per call should be [3, 3, 1, 1, 1, 3], got {costs}")


PROMPTS = ["You are terse. Why?", "Hi", "S" * 13, "hello world", "abc", "qwerty"]
MAX_TOKENS = [12, 7, 5, 9, 3, 10]


class GraphedMLP:
    """Stands in for a layer's MLP: your GraphRunner over its kernels; logs the token counts."""

    def __init__(self, runner, log: list[int]) -> None:  # type: ignore[no-untyped-def]
        self.runner, self.log = runner, log

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.log.append(x.shape[0])
        return self.runner(x)


def generate(model) -> list[list[int]]:  # type: ignore[no-untyped-def]
    # Decode batches padded to 1, 2, 4 or 8 rows, as vLLM pads to its captured sizes.
    engine = LLMEngine(model=model, block_size=4, num_blocks=64, max_num_batched_tokens=16,
                       cudagraph_capture_sizes=[1, 2, 4, 8])
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in MAX_TOKENS]
    return [o.output_token_ids for o in engine.generate(PROMPTS, params)]


def test_your_runner_drives_the_tiny_llama_engine(impl, tiny_llama, monkeypatch) -> None:
    stock = generate(tiny_llama)
    impl.LaunchCounter.reset()
    logs: list[list[int]] = []
    runners = []
    for layer in tiny_llama.model.layers:
        runners.append(impl.GraphRunner(mlp_ops(layer.mlp)))
        logs.append([])
        monkeypatch.setattr(layer, "mlp", GraphedMLP(runners[-1], logs[-1]))
    mine = generate(tiny_llama)
    assert_same_outputs(stock, mine, labels=("eager MLPs", "your graphed MLPs"))
    counts = logs[0]
    expected = sum(3 if n not in counts[:i] else 1 for i, n in enumerate(counts)) * len(runners)
    assert impl.LaunchCounter.n == expected, (
        f"{len(counts)} forward passes through {len(runners)} graphed MLPs of 3 kernels, "
        f"{len(set(counts))} distinct token counts: each count's first pass captures (3 "
        f"launches per layer), every other replays (1): {expected} launches, counted "
        f"{impl.LaunchCounter.n}")
    for runner in runners:
        assert runner.num_captured == len(set(counts)), (
            f"one graph per distinct token count ({sorted(set(counts))}), got "
            f"{runner.num_captured}")
