"""Kata 05-04: CUDA graphs against eager on a real decode step.

The kata needs torch (the CPU build is enough; without it the plugin skips every test with the
install command). Four groups of tests:

- The arithmetic: the course's L4 capture, the H200 recording next to this file, vLLM's capture
  log and the launch bill.
- The runner, on every device the ``device`` fixture offers: on ``cpu`` through the scaffold's
  ``SimulatedCuda`` (the rules of real graphs, on a toy step in float32), on ``cuda`` through
  ``torch.cuda`` itself (a SmolLM2-shaped step in bf16).
- The timer, on the simulator's clock, where every answer is exact.
- On a GPU only: the course's shape, measured. Graphs must beat eager at batch 1, 8 and 64,
  and by less at 64 than at 1. These are the kata's only assertions on measured time: CUDA
  events, medians of many calls, on a step whose ratios were measured far from both bounds
  (see the README). Without a GPU the test is skipped, and the recording stands in for it.

One live test reads vLLM's own config on the CPU platform: no graphs there at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import pytest

from katas.phase05.graphs_vs_eager.scaffold import (
    COURSE_CAPTURE_SIZES,
    COURSE_L4_RUNS,
    GPU_CONTEXT_LEN,
    SMOLLM2_SHAPE,
    TINY_STEP,
    DecodeStep,
    GraphEntry,
    SimulatedCuda,
    random_tokens,
    recorded,
)
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.hardware import cuda_present

pytestmark = pytest.mark.gpu_opt

SIZES = (1, 8, 64)
TORCH_REASON = 'the runner and the timer need torch: pip install -e ".[torch]"'


def _torch() -> Any:
    return pytest.importorskip("torch", reason=TORCH_REASON)


# ------------------------------------------------------------------------------ the arithmetic


def test_the_course_l4_run_is_2_5x_fading_to_1_13x(impl) -> None:
    got = impl.graph_speedups(COURSE_L4_RUNS)
    assert isinstance(got, dict) and sorted(got) == [1, 8, 64], (
        f"graph_speedups returns {{batch: ratio}} for batches 1, 8, 64; got {got!r}")
    for batch, eager, graph, shown in [(1, 980.3, 2473.6, "~2.5x"), (8, 6912.4, 11034.8, "~1.6x"),
                                       (64, 41560.2, 46883.1, "~1.13x")]:
        assert_close(got[batch], graph / eager, cause="arithmetic",
                     what=f"batch {batch}: {graph} tok/s with graphs over {eager} eager ({shown}; "
                     "a throughput grows when graphs help)")


def test_step_times_give_eager_over_graph(impl) -> None:
    runs = [{"batch": 4, "eager_ms": 6.0, "graph_ms": 1.5}, {"batch": 2, "eager_ms": 3.0,
                                                               "graph_ms": 3.0}]
    got = impl.graph_speedups(runs)
    assert got == {4: 4.0, 2: 1.0}, (
        f"6 ms eager against 1.5 ms graphed is 4x (a time shrinks when graphs help), equal "
        f"times are 1x; got {got}")


@pytest.mark.parametrize("runs", [
    [{"batch": 1, "eager_ms": 2.0, "graph_ms": 1.0},
     {"batch": 1, "eager_ms": 3.0, "graph_ms": 1.0}],
    [{"batch": 1, "eager_ms": 2.0, "graph_tok_s": 1.0}],
    [{"batch": 1, "eager_ms": 2.0, "graph_ms": 0.0}],
    [{"batch": 1, "eager_tok_s": -5.0, "graph_tok_s": 10.0}],
], ids=["batch_twice", "mixed_units", "zero_time", "negative_throughput"])
def test_graph_speedups_refuses_rows_it_cannot_read(impl, runs: list[dict]) -> None:
    with expect_raises(ValueError, f"graph_speedups({runs}): a repeated batch, a row without a "
                       "matching pair, or a non-positive number has no ratio"):
        impl.graph_speedups(runs)


def test_the_h200_recording_has_the_course_shape(impl) -> None:
    rec = recorded()
    got = impl.graph_speedups(rec["runs"])
    batches = [row["batch"] for row in rec["runs"]]
    assert isinstance(got, dict) and sorted(got) == batches, (
        f"one ratio per recorded batch {batches}; got {got!r}")
    for row in rec["runs"]:
        assert_close(got[row["batch"]], row["eager_ms"] / row["graph_ms"], cause="arithmetic",
                     what=f"batch {row['batch']} on the {rec['machine']['gpu']}: "
                     f"{row['eager_ms']} ms eager over {row['graph_ms']} ms graphed")
    assert impl.fades_with_batch(got) is True, (
        f"the H200 ratios {got} are above 1 everywhere and smaller at 64 than at 1: the "
        "course's shape")
    assert impl.fades_with_batch(impl.graph_speedups(COURSE_L4_RUNS)) is True, (
        "the course's 2.5x / 1.6x / 1.13x has the course's shape")


@pytest.mark.parametrize(("speedups", "expected", "why"), [
    ({1: 2.5, 8: 1.6, 64: 1.13}, True, "the course's run"),
    ({1: 3.0, 8: 3.2, 64: 1.5}, True, "a noisy middle point does not break a fade"),
    ({64: 1.13, 1: 2.5, 8: 1.6}, True, "sizes come in any order: compare the smallest batch's "
                                       "ratio with the largest's"),
    ({8: 1.6, 1: 1.2, 64: 1.4}, False, "in size order 1.2 -> 1.4 grows: no fade, whatever "
                                      "the order of the dict"),
    ({1: 2.5, 8: 1.6, 64: 1.0}, False, "a ratio of exactly 1 is no win"),
    ({1: 2.5, 8: 0.9, 64: 1.1}, False, "graphs lost at batch 8"),
    ({1: 1.5, 64: 1.5}, False, "no fade: as good at 64 as at 1"),
], ids=["course", "noisy_middle", "unordered", "unordered_growing", "ratio_of_one",
        "loses_in_the_middle", "flat"])
def test_fades_with_batch(impl, speedups: dict[int, float], expected: bool, why: str) -> None:
    got = impl.fades_with_batch(speedups)
    assert got is expected, f"fades_with_batch({speedups}) must be {expected} ({why}); got {got}"


def test_a_fade_needs_two_batch_sizes(impl) -> None:
    with expect_raises(ValueError, "one batch size cannot show a fade"):
        impl.fades_with_batch({1: 2.5})


def test_the_course_log_is_46_captures(impl) -> None:
    got = impl.capture_count(COURSE_CAPTURE_SIZES, "FULL_AND_PIECEWISE")
    assert got == 46, (
        "the default mode captures every size once per routine: 23 (decode, FULL) + 23 (mixed "
        f"prefill-decode, PIECEWISE) = 46, the two progress bars of the course's log; got {got}")


@pytest.mark.parametrize(("mode", "expected"), [
    ("NONE", 0), ("PIECEWISE", 23), ("FULL", 23), ("FULL_DECODE_ONLY", 23),
    ("FULL_AND_PIECEWISE", 46),
])
def test_capture_count_follows_the_routing_table(impl, mode: str, expected: int) -> None:
    got = impl.capture_count(23, mode)
    assert got == expected, (
        f"{mode} over 23 sizes: lab 05-03's table gives its routines; each routine that is not "
        f"NONE captures all 23 sizes, and a simple mode is one routine: {expected}; got {got}")


@pytest.mark.parametrize(("num_sizes", "mode"), [(23, "FULL_AND_NONE"), (23, "eager"),
                                                 (-1, "FULL")])
def test_capture_count_refuses_what_it_cannot_count(impl, num_sizes: int, mode: str) -> None:
    with expect_raises(ValueError, f"capture_count({num_sizes}, {mode!r}): not a mode of lab "
                       "05-03, or a negative number of sizes"):
        impl.capture_count(num_sizes, mode)


class CUDAGraphMode(enum.Enum):  # vLLM's enum, as far as its names go
    NONE = 0
    PIECEWISE = 1
    FULL = 2
    FULL_DECODE_ONLY = (2, 0)
    FULL_AND_PIECEWISE = (2, 1)


def test_capture_plan_reads_sizes_and_the_mode_name(impl) -> None:
    ladder = [1, 2, 4] + list(range(160, 7, -8))  # 23 sizes, stored largest first
    config = SimpleNamespace(cudagraph_capture_sizes=ladder,
                             cudagraph_mode=CUDAGraphMode.FULL_AND_PIECEWISE)
    got = impl.capture_plan(config)
    assert isinstance(got, tuple) and len(got) == 2, (
        f"capture_plan returns (sizes, mode); got {got!r}")
    sizes, mode = got
    assert sizes == sorted(ladder), f"the capture sizes in increasing order; got {sizes}"
    assert mode == "FULL_AND_PIECEWISE", (
        f"the mode's name, as lab 05-03's strings spell it (not str() of the enum); got {mode!r}")
    assert impl.capture_count(len(sizes), mode) == 46, "this plan is the course's 46 captures"
    nothing = SimpleNamespace(cudagraph_capture_sizes=[], cudagraph_mode=CUDAGraphMode.NONE)
    assert impl.capture_plan(nothing) == ([], "NONE"), "no sizes and mode NONE: ([], 'NONE')"


def test_300_launches_at_5_us_cost_1_5_ms_per_token(impl) -> None:
    got = impl.launch_overhead_ms(300, 5.0)
    assert_close(got, 1.5, cause="arithmetic", what="300 kernels x 5 us, in milliseconds")
    assert_close(impl.launch_overhead_ms(1500, 4.0), 6.0, cause="arithmetic",
                 what="1500 kernels x 4 us, in milliseconds")


def test_removing_the_launch_bill_buys_at_most_amdahls_ratio(impl) -> None:
    got = impl.amdahl_ratio(1.5, 1.5)
    assert_close(got, 2.0, cause="arithmetic",
                 what="1.5 ms of launches before 1.5 ms of GPU work: a graph halves the step")
    assert_close(impl.amdahl_ratio(1.5, 15.0), 1.1, cause="arithmetic",
                 what="ten times the GPU work (a large batch): the same launches buy only 1.1x")
    assert_close(impl.amdahl_ratio(0.0, 2.0), 1.0, cause="arithmetic",
                 what="no launch bill: nothing to win, and never a loss")


@pytest.mark.parametrize(("call", "args"), [
    ("launch_overhead_ms", (-1, 5.0)), ("launch_overhead_ms", (300, -5.0)),
    ("amdahl_ratio", (1.5, 0.0)), ("amdahl_ratio", (-1.0, 1.5)),
])
def test_the_launch_arithmetic_refuses_meaningless_inputs(impl, call: str, args: tuple) -> None:
    with expect_raises(ValueError, f"{call}{args}: negative counts or costs, or no GPU work to "
                       "divide by"):
        getattr(impl, call)(*args)


# ------------------------------------------------------------------------------------ the runner


def _ignore(tokens: Any) -> Any:
    raise AssertionError("padded_size and the constructor never run the step")


def test_padded_size_rounds_a_batch_up_to_a_capture_size(impl) -> None:
    runner = impl.CudaGraphRunner(_ignore, [64, 1, 8], cuda=SimulatedCuda())
    for batch, expected in [(1, 1), (2, 8), (5, 8), (8, 8), (9, 64), (64, 64), (65, None),
                            (1000, None)]:
        got = runner.padded_size(batch)
        assert got == expected, (
            f"sizes [1, 8, 64]: a batch of {batch} runs at the smallest size >= {batch}, "
            f"{expected} (None: above the largest, run eagerly); got {got}")
    eager = impl.CudaGraphRunner(_ignore, [1, 8, 64], enforce_eager=True, cuda=SimulatedCuda())
    assert eager.padded_size(1) is None, "enforce_eager: no batch runs through a graph"
    with expect_raises(ValueError, "a batch of 0 sequences is not a batch"):
        runner.padded_size(0)


@pytest.mark.parametrize("sizes", [[1, 8, 8], [0, 8], [-4]], ids=["duplicate", "zero", "negative"])
def test_capture_sizes_must_be_positive_and_distinct(impl, sizes: list[int]) -> None:
    with expect_raises(ValueError, f"capture sizes {sizes}: a graph per size needs distinct "
                       "positive sizes"):
        impl.CudaGraphRunner(_ignore, sizes, cuda=SimulatedCuda())


@dataclass
class Rig:
    """A step on one device, the ``cuda`` it runs under, and how closely results must agree."""

    device: str
    step: DecodeStep
    cuda: Any
    sim: SimulatedCuda | None
    cause: str

    def tokens(self, batch: int, seed: int = 0) -> Any:
        return random_tokens(batch, self.step.config.vocab, seed=seed, device=self.device)

    def eager(self, tokens: Any) -> Any:
        return self.step.forward(tokens)  # the computation alone: no simulator bookkeeping


# The step the runner tests use on a GPU: SmolLM2's shape with a short context, in bf16.
CUDA_STEP = replace(SMOLLM2_SHAPE, context_len=256)


@pytest.fixture(scope="module")
def steps() -> dict[str, DecodeStep]:
    return {}


@pytest.fixture
def rig(device: str, steps: dict[str, DecodeStep]) -> Rig:
    torch = _torch()
    if device not in steps:
        config = TINY_STEP if device == "cpu" else CUDA_STEP
        steps[device] = DecodeStep(config, device=device, max_batch=128)
    step = steps[device]
    if device == "cpu":
        sim = SimulatedCuda()
        return Rig(device, sim.attach(step), sim, sim, "float32")
    step.on_call = None
    return Rig(device, step, torch.cuda, None, "bf16")


def _call(runner: Any, tokens: Any, what: str) -> Any:
    try:
        return runner(tokens)
    except (RuntimeError, ValueError) as exc:
        pytest.fail(f"{what}: the runner raised {type(exc).__name__}: {exc}", pytrace=False)


def _check(rig: Rig, got: Any, tokens: Any, what: str) -> None:
    batch, vocab = tokens.shape[0], rig.step.config.vocab
    assert tuple(got.shape) == (batch, vocab), (
        f"{what}: logits must be [batch, vocab] = [{batch}, {vocab}], got {tuple(got.shape)}")
    assert_close(got, rig.eager(tokens), cause=rig.cause, what=what)


@pytest.mark.parametrize("batch", SIZES)
def test_a_replay_equals_the_eager_step(impl, rig: Rig, batch: int) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    tokens = rig.tokens(batch, seed=batch)
    _call(runner, tokens, f"first call at batch {batch}")
    got = _call(runner, tokens, f"second call at batch {batch}")
    _check(rig, got, tokens, f"batch {batch}, replayed, against the eager step")
    assert sorted(runner.graphs) == [batch], (
        f"one call size, one graph: graphs should be keyed [{batch}], got {sorted(runner.graphs)}")
    if rig.sim is not None:
        assert rig.sim.captures == [batch] and rig.sim.replays >= 1, (
            f"batch {batch} twice: one capture and replays after it; the simulator saw captures "
            f"{rig.sim.captures} and {rig.sim.replays} replays")


def test_the_capturing_call_returns_computed_logits(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    tokens = rig.tokens(8, seed=3)
    got = _call(runner, tokens, "first call at batch 8 (the one that captures)")
    _check(rig, got, tokens, "the first call at a size: a capture records and computes nothing, "
           "so its output holds garbage until a replay")


def test_a_replay_reads_the_new_tokens(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    first, second = rig.tokens(8, seed=1), rig.tokens(8, seed=2)
    _call(runner, first, "capture at batch 8")
    got = _call(runner, second, "a replay with new tokens")
    _check(rig, got, second, "new tokens copied into the captured input buffer (a replay reads "
           "the tensor the capture saw: rebinding a name to the new tokens leaves it stale)")
    again = _call(runner, first, "a replay with the first tokens again")
    _check(rig, again, first, "back to the first tokens")


def test_each_capture_size_gets_its_own_graph(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    for batch in (1, 8, 1, 8):
        tokens = rig.tokens(batch, seed=10 + batch)
        got = _call(runner, tokens, f"a call at batch {batch} after other sizes")
        _check(rig, got, tokens, f"batch {batch} after other sizes (a graph has one shape)")
    assert sorted(runner.graphs) == [1, 8], (
        f"batches 1 and 8 need one graph each; graphs has sizes {sorted(runner.graphs)}")
    for size, entry in runner.graphs.items():
        assert isinstance(entry, GraphEntry) and entry.size == size, (
            f"graphs[{size}] must be the scaffold's GraphEntry of that size; got {entry!r}")
        assert tuple(entry.static_input.shape) == (size,), (
            f"graphs[{size}].static_input holds {size} token ids; shape "
            f"{tuple(entry.static_input.shape)}")
    if rig.sim is not None:
        assert rig.sim.captures == [1, 8], (
            f"each size captured once, on first use: captures {rig.sim.captures}")


def test_an_odd_batch_is_padded_up_to_a_captured_size(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    for batch in (5, 7, 8, 3):
        tokens = rig.tokens(batch, seed=20 + batch)
        got = _call(runner, tokens, f"batch {batch} with capture sizes {SIZES}")
        _check(rig, got, tokens, f"batch {batch}, run on the size-8 graph, first {batch} rows")
    assert sorted(runner.graphs) == [8], (
        f"batches 5, 7, 8 and 3 all pad up to 8: one graph of size 8; graphs has sizes "
        f"{sorted(runner.graphs)}")


def test_a_batch_above_the_largest_size_runs_eagerly(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    tokens = rig.tokens(100, seed=4)
    got = _call(runner, tokens, "batch 100 with capture sizes up to 64")
    _check(rig, got, tokens, "batch 100, above every capture size: the eager step")
    assert runner.graphs == {}, f"no graph fits 100 rows, so none is captured: {runner.graphs}"


def test_enforce_eager_never_captures(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, enforce_eager=True, cuda=rig.cuda)
    for batch in (1, 8):
        tokens = rig.tokens(batch, seed=30 + batch)
        _check(rig, _call(runner, tokens, f"enforce_eager, batch {batch}"), tokens,
               f"enforce_eager at batch {batch}: the eager step")
    assert runner.graphs == {}, f"enforce_eager captures nothing; graphs: {runner.graphs}"
    if rig.sim is not None:
        assert rig.sim.captures == [] and rig.sim.replays == 0, (
            f"enforce_eager: no capture, no replay; saw captures {rig.sim.captures}, "
            f"{rig.sim.replays} replays")


def test_a_returned_result_survives_the_next_call(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    first = _call(runner, rig.tokens(8, seed=5), "batch 8")
    kept = first.clone()
    _call(runner, rig.tokens(8, seed=6), "batch 8 again, other tokens")
    assert bool((first == kept).all()), (
        "a result returned earlier changed when the runner was called again: it is a view of "
        "the graph's static output, which every replay overwrites; hand out a copy")


def test_tokens_must_be_a_non_empty_vector(impl, rig: Rig) -> None:
    runner = impl.CudaGraphRunner(rig.step, SIZES, cuda=rig.cuda)
    for bad in (rig.tokens(8)[:0], rig.tokens(8).reshape(2, 4)):
        with expect_raises(ValueError, f"tokens of shape {tuple(bad.shape)}: a batch is a "
                           "non-empty 1-D tensor of token ids"):
            runner(bad)


# --------------------------------------------------------------------- simulator-only rules


@pytest.fixture
def sim_rig(steps: dict[str, DecodeStep]) -> Rig:
    _torch()
    if "cpu" not in steps:
        steps["cpu"] = DecodeStep(TINY_STEP, device="cpu", max_batch=128)
    sim = SimulatedCuda()
    return Rig("cpu", sim.attach(steps["cpu"]), sim, sim, "float32")


def test_a_capture_is_warmed_up_on_a_side_stream_first(impl, sim_rig: Rig) -> None:
    runner = impl.CudaGraphRunner(sim_rig.step, SIZES, cuda=sim_rig.cuda)
    tokens = sim_rig.tokens(5, seed=7)
    got = _call(runner, tokens, "capturing size 8 for a batch of 5 (the simulator refuses a "
                "capture of a size that never ran on a side stream)")
    _check(sim_rig, got, tokens, "batch 5 through the size-8 graph")
    assert sim_rig.sim.captures == [8] and sim_rig.sim.eager_calls >= 1, (
        f"a warm-up run at size 8, then one capture at 8: saw {sim_rig.sim.eager_calls} eager "
        f"calls and captures {sim_rig.sim.captures}")


def test_median_ms_reads_the_device_clock(impl, sim_rig: Rig) -> None:
    sim = SimulatedCuda(hiccup_every=3, hiccup_us=50_000.0)
    step = sim.attach(sim_rig.step)
    tokens = sim_rig.tokens(1)
    got = impl.median_ms(lambda: step(tokens), iters=15, warmup=2, cuda=sim)
    expected = sim.step_cost_us(step, 1, graphed=False) / 1000.0
    assert_close(got, expected, cause="float64-reordered",
                 what=f"median device time of one eager step at batch 1 on the simulator's clock "
                 f"({step.kernels_per_step} launches x 5 us = {expected} ms; every third call "
                 "stalls 50 ms, which a median ignores; a host clock measures something else)")


@pytest.mark.parametrize(("batch", "expected"), [(1, 4.0), (8, 5.0 / 3.0), (64, 1.0)],
                         ids=["launch_bound", "between", "gpu_bound"])
def test_measure_ratio_is_eager_time_over_graph_time(impl, sim_rig: Rig, batch: int,
                                                     expected: float) -> None:
    sim = sim_rig.sim
    step, tokens = sim_rig.step, sim_rig.tokens(batch)
    got = impl.measure_ratio(lambda: step(tokens), sim.replay_of(step, tokens), iters=5,
                             warmup=1, cuda=sim)
    assert_close(got, expected, cause="float64-reordered",
                 what=f"eager over graphed at batch {batch} on the simulator (launch 5 us, kernel "
                 f"{1 + 0.25 * batch} us: eager pays max(launch, kernel) per kernel, a replay "
                 "max(launch, all kernels))")


@pytest.mark.parametrize(("iters", "warmup"), [(0, 5), (10, -1)])
def test_median_ms_refuses_nothing_to_time(impl, iters: int, warmup: int) -> None:
    with expect_raises(ValueError, f"median_ms(iters={iters}, warmup={warmup}): no call to time "
                       "or a negative warm-up"):
        impl.median_ms(lambda: None, iters=iters, warmup=warmup, cuda=SimulatedCuda())


# ------------------------------------------------------------------------------- on a real GPU

GPU_STEP = replace(SMOLLM2_SHAPE, context_len=GPU_CONTEXT_LEN)


def _measure_on_the_gpu(impl) -> dict[int, float]:  # noqa: ANN001
    step = DecodeStep(GPU_STEP, device="cuda", max_batch=max(SIZES))
    runner = impl.CudaGraphRunner(step, SIZES)
    ratios = {}
    for batch in SIZES:
        tokens = random_tokens(batch, GPU_STEP.vocab, seed=batch, device="cuda")
        ratios[batch] = impl.measure_ratio(lambda t=tokens: step(t), lambda t=tokens: runner(t),
                                           iters=30, warmup=3)
    return ratios


def test_on_a_gpu_graphs_win_at_every_batch_and_win_less_at_64(
    impl, record_property: pytest.RecordProperty, capsys: pytest.CaptureFixture[str],
) -> None:
    impl.CudaGraphRunner(_ignore, SIZES, cuda=SimulatedCuda())  # your code first
    if not cuda_present():
        pytest.skip("timing real CUDA graphs needs an NVIDIA GPU (none found); without one, "
                    "test_the_h200_recording_has_the_course_shape grades the same shape on "
                    "numbers recorded on an H200")
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("an NVIDIA GPU is visible but torch has no CUDA support")
    ratios = _measure_on_the_gpu(impl)
    torch.cuda.empty_cache()
    for batch, ratio in ratios.items():
        record_property(f"ratio_batch_{batch}", round(ratio, 3))
    with capsys.disabled():
        print(f"\n{torch.cuda.get_device_name()}: eager / graphed = "
              + ", ".join(f"{r:.2f}x at batch {b}" for b, r in ratios.items()))
    assert all(r > 1.0 for r in ratios.values()), (
        f"graphs must beat eager at every batch: measured {ratios}")
    assert ratios[64] < ratios[1], (
        f"the win must fade: smaller at batch 64 ({ratios[64]:.2f}x) than at 1 "
        f"({ratios[1]:.2f}x)")


# ---------------------------------------------------------------------------------------- live


@pytest.mark.live
def test_vllm_on_cpu_captures_no_graphs(impl) -> None:
    impl.capture_count(1, "NONE")  # your code first: no vLLM import for a stub
    from pytest_vllm_katas.live.fixtures import require_vllm

    require_vllm()
    from pytest_vllm_katas.live.vllm_twins import vllm_api

    v = vllm_api()
    config = v.VllmConfig(model_config=v.model_config)  # graphs asked for: no enforce_eager
    assert not config.model_config.enforce_eager, "this config asks for graphs"
    sizes, mode = impl.capture_plan(config.compilation_config)
    assert (sizes, mode) == ([], "NONE"), (
        f"vLLM's CPU platform resolves every config to no capture sizes and mode NONE (graphs "
        f"need a GPU); your capture_plan read {sizes}, {mode!r}")
    got = impl.capture_count(len(sizes), mode)
    assert got == 0, f"no sizes, no routine that captures: 0 graphs at start-up; got {got}"
