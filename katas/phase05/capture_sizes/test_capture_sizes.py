"""Spec for kata 05-05: the capture-size ladder, the rung a batch replays at, and the padding.

The course's six tests, pinned exactly, plus the edges it leaves open (ceilings off the
stride, an empty ladder, unsorted rungs) and vLLM's current ladder (16-steps from 256). The
live tests (``-m live``) build vLLM's own config and dispatcher offline: what vLLM does on
this CPU (no ladder at all), the ladder it computes for a GPU, and how it pads each batch.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import require_vllm

pytestmark = pytest.mark.cpu_ok

# Oracles, written out (never computed by the code under test).
LADDER_64 = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
COURSE_512 = [1, 2, 4, *range(8, 513, 8)]  # the course's rule: 67 rungs
VLLM_512 = [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]  # vLLM v0.22.1 and 0.32: 51


def smallest_rung(batch: int, ladder: list[int]) -> int | None:
    return min((s for s in ladder if s >= batch), default=None)


# -- the ladder -------------------------------------------------------------------------------


def test_ladder_shape(impl) -> None:
    got = impl.default_capture_sizes(64)
    assert list(got) == LADDER_64, (
        f"the ladder up to 64 is 1, 2, 4, then every multiple of 8: {LADDER_64}; got {got}"
    )


@pytest.mark.parametrize(
    ("max_size", "expected"),
    [
        pytest.param(1, [1], id="1"),
        pytest.param(2, [1, 2], id="2"),
        pytest.param(3, [1, 2], id="3-between_2_and_4"),
        pytest.param(4, [1, 2, 4], id="4"),
        pytest.param(7, [1, 2, 4], id="7-below_the_first_8"),
        pytest.param(8, [1, 2, 4, 8], id="8"),
        pytest.param(20, [1, 2, 4, 8, 16], id="20-off_the_stride"),
        pytest.param(100, [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96],
                     id="100-off_the_stride"),
    ],
)
def test_ladder_for_small_and_off_stride_ceilings(impl, max_size: int,
                                                  expected: list[int]) -> None:
    got = impl.default_capture_sizes(max_size)
    assert list(got) == expected, (
        f"default_capture_sizes({max_size}): the rule's rungs that are <= {max_size}, and no "
        f"others ({max_size} itself only if the rule puts a rung there): {expected}; got {got}"
    )


def test_course_rule_gives_67_rungs_for_512(impl) -> None:
    got = list(impl.default_capture_sizes(512))
    assert got == COURSE_512, (
        f"the course's rule up to 512: 1, 2, 4 and the 64 multiples of 8, 67 rungs ending at "
        f"512; got {len(got)} rungs: {got}"
    )


def test_vllm_ladder_coarsens_to_16_from_256(impl) -> None:
    got = list(impl.default_capture_sizes(512, coarse_from=256))
    assert got == VLLM_512, (
        "vLLM's default ladder (v0.22.1 and 0.32) for a ceiling of 512: 1, 2, 4, every "
        "multiple of 8 below 256, then 256, 272, ..., 512 in steps of 16: 51 rungs. "
        f"Expected {VLLM_512}; got {len(got)} rungs: {got}"
    )
    for max_size, expected in ((272, [*COURSE_512[:34], 256, 272]),
                               (300, [*COURSE_512[:34], 256, 272, 288])):
        got = list(impl.default_capture_sizes(max_size, coarse_from=256))
        assert got == expected, (
            f"default_capture_sizes({max_size}, coarse_from=256) ends ..., 248, then every "
            f"multiple of 16 from 256 up to {max_size}: {expected[-5:]}; got ...{got[-5:]}"
        )
    # Below the switch both rules are the same ladder.
    for max_size in (64, 255, 256, 263):
        course = list(impl.default_capture_sizes(max_size))
        coarse = list(impl.default_capture_sizes(max_size, coarse_from=256))
        assert coarse == course, (
            f"up to {max_size} vLLM's ladder and the course's agree (they part at 264); "
            f"with coarse_from=256 got {coarse[-4:]}, without {course[-4:]}"
        )


@pytest.mark.parametrize("max_size", [0, -8])
def test_a_ceiling_below_one_is_a_value_error(impl, max_size: int) -> None:
    with expect_raises(ValueError, f"max_size={max_size}: a graph holds at least one row",
                       match="max_size"):
        impl.default_capture_sizes(max_size)


@pytest.mark.parametrize("coarse_from", [0, 8, 100, -256])
def test_coarse_from_must_be_a_positive_multiple_of_16(impl, coarse_from: int) -> None:
    with expect_raises(ValueError, f"coarse_from={coarse_from} is not a positive multiple of 16",
                       match="coarse_from"):
        impl.default_capture_sizes(512, coarse_from=coarse_from)


# -- the rung lookup --------------------------------------------------------------------------


def test_exact_rung_pays_nothing(impl) -> None:
    for rung in LADDER_64:
        got, pad = impl.select_capture_size(rung, LADDER_64), impl.padded_tokens(rung, LADDER_64)
        assert (got, pad) == (rung, 0), (
            f"a batch of {rung} is a rung: it replays the {rung} graph with 0 padding rows; "
            f"got rung {got}, padding {pad}"
        )


def test_between_rungs_rounds_up(impl) -> None:
    got = impl.select_capture_size(33, LADDER_64), impl.padded_tokens(33, LADDER_64)
    assert got == (40, 7), (
        f"why is my batch of 33 running at 40? 40 is the smallest rung that holds 33 rows, and "
        f"the 7 extra rows are padding: expected (40, 7), got {got}"
    )
    wrong = {}
    for batch in range(1, 65):
        rung = impl.select_capture_size(batch, LADDER_64)
        if rung != smallest_rung(batch, LADDER_64):
            wrong[batch] = rung
    assert not wrong, (
        f"every batch of 1..64 replays at the smallest rung >= itself on {LADDER_64}; "
        f"wrong for (batch: your rung) {wrong}"
    )


@pytest.mark.parametrize("batch", [65, 100, 10_000])
def test_oversize_batch_runs_eager(impl, batch: int) -> None:
    rung = impl.select_capture_size(batch, LADDER_64)
    assert rung is None, (
        f"a batch of {batch} is above the top rung (64): no graph, it runs eagerly, so "
        f"select_capture_size returns None; got {rung}"
    )
    pad = impl.padded_tokens(batch, LADDER_64)
    assert pad == 0, f"an eager batch runs at its own size: 0 padding rows, got {pad}"


def test_empty_ladder_runs_everything_eagerly(impl) -> None:
    # vLLM on a CPU: cudagraph_capture_sizes == [].
    rungs = {batch: impl.select_capture_size(batch, []) for batch in (1, 8, 512)}
    assert all(r is None for r in rungs.values()), (
        f"with no captured sizes every batch runs eagerly (None); got {rungs}"
    )
    waste = impl.trace_waste([1, 8, 512], [])
    assert waste == 0, f"no graphs, no padding: trace_waste is 0, got {waste}"


def test_rungs_may_come_in_any_order(impl) -> None:
    ladder = [64, 8, 40, 1, 48, 40, 4, 2]
    got = {batch: impl.select_capture_size(batch, ladder) for batch in (33, 5, 3, 41, 1)}
    expected = {33: 40, 5: 8, 3: 4, 41: 48, 1: 1}
    assert got == expected, (
        f"the rung is the smallest size >= the batch, whatever the order of {ladder}: "
        f"expected {expected}, got {got}"
    )
    assert impl.padded_tokens(33, ladder) == 7, "33 on an unsorted ladder still pads to 40"


@pytest.mark.parametrize("batch", [0, -1])
def test_a_batch_below_one_row_is_a_value_error(impl, batch: int) -> None:
    with expect_raises(ValueError, f"batch={batch}: a step runs at least one row", match="batch"):
        impl.select_capture_size(batch, LADDER_64)
    with expect_raises(ValueError, f"batch={batch}: a step runs at least one row", match="batch"):
        impl.padded_tokens(batch, LADDER_64)


def test_course_waste_percentages(impl) -> None:
    # The course's three numbers, on the 512 ladder. Its percentages use two denominators:
    # 7/40 is the share of the replayed graph that is padding; 1/3 and 6/250 are padding on
    # top of the real rows.
    cases = {33: (40, 7), 3: (4, 1), 250: (256, 6)}
    got = {b: (impl.select_capture_size(b, COURSE_512), impl.padded_tokens(b, COURSE_512))
           for b in cases}
    assert got == cases, f"(rung, padding) for batches 33, 3, 250: expected {cases}, got {got}"
    assert f"{got[33][1] / got[33][0]:.1%}" == "17.5%", "33 -> 40: 7 of the 40 replayed rows"
    assert f"{got[3][1] / 3:.0%}" == "33%", "3 -> 4: one padded row on three real ones, 33%"
    assert f"{got[250][1] / 250:.1%}" == "2.4%", "250 -> 256: six rows on 250 real ones, 2.4%"


# -- trace accounting -------------------------------------------------------------------------


def test_trace_accounting(impl) -> None:
    trace = [1, 3, 33, 64, 65, 100, 7, 40, 17]  # waste 0 1 7 0 0 0 1 0 7
    got = impl.trace_waste(trace, LADDER_64)
    assert got == 16, (
        f"trace {trace} on the 64 ladder: padding 0+1+7+0+0+0+1+0+7 = 16 rows (the eager steps "
        f"65 and 100 add nothing); got {got}"
    )
    assert impl.trace_waste([], LADDER_64) == 0, "an empty trace costs nothing"
    assert impl.trace_waste(iter([33, 33]), tuple(LADDER_64)) == 14, (
        "the trace may be any iterable (here an iterator) and the ladder any collection: "
        "two steps of 33 cost 14 rows"
    )


def test_finer_ladder_trades_graphs_for_padding(impl) -> None:
    # Every batch size from 1 to 64 once, on three ladders with the same top rung.
    trace = range(1, 65)
    ladders = {
        "powers of two": [1, 2, 4, 8, 16, 32, 64],
        "default": LADDER_64,
        "every 4": [1, 2, *range(4, 65, 4)],
    }
    got = {name: (len(ladder), impl.trace_waste(trace, ladder))
           for name, ladder in ladders.items()}
    expected = {"powers of two": (7, 651), "default": (11, 203), "every 4": (18, 91)}
    assert got == expected, (
        "a denser ladder pads less but captures more graphs; over batches 1..64, "
        f"(rungs, padding rows) should be {expected}; got {got}"
    )


# -- live: the installed vLLM's config and dispatcher -----------------------------------------


@functools.cache
def vllm_api() -> SimpleNamespace:
    from vllm.config import CUDAGraphMode
    from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    from pytest_vllm_katas.live import vllm_twins

    return SimpleNamespace(CUDAGraphMode=CUDAGraphMode, CudagraphDispatcher=CudagraphDispatcher,
                           twins=vllm_twins.vllm_api(), max_model_len=vllm_twins.MAX_MODEL_LEN)


def vllm_config(max_num_seqs: int = 16) -> object:
    """A fresh VllmConfig for the tiny local Llama, built offline (no weights are read)."""
    v = vllm_api()
    scheduler = v.twins.SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=2048,
                                        max_model_len=v.max_model_len, is_encoder_decoder=False)
    return v.twins.VllmConfig(model_config=v.twins.model_config, scheduler_config=scheduler)


@pytest.mark.live
def test_vllm_on_this_cpu_captures_nothing(impl) -> None:
    require_vllm()  # skips, with the install command, where vLLM cannot run
    config = vllm_config()
    sizes = config.compilation_config.cudagraph_capture_sizes
    ours = {batch: impl.select_capture_size(batch, sizes) for batch in (1, 4, 33, 512)}
    waste = impl.trace_waste(range(1, 65), sizes)
    mode = config.compilation_config.cudagraph_mode
    assert (mode.name, sizes) == ("NONE", []), (
        f"premise: vLLM's CPU platform switches graphs off (cudagraph_mode NONE, "
        f"cudagraph_capture_sizes []) even without enforce_eager; this vLLM gives "
        f"{mode.name}, {sizes}"
    )
    assert all(r is None for r in ours.values()) and waste == 0, (
        f"vLLM's ladder on this CPU is []: every batch runs eagerly with no padding; your "
        f"select_capture_size gives {ours} and trace_waste {waste}"
    )


@pytest.mark.live
def test_your_ladder_is_the_one_vllm_builds(impl) -> None:
    require_vllm()
    v = vllm_api()
    config = vllm_config()
    # The CPU platform never reaches vLLM's ladder code; VllmConfig._set_cudagraph_sizes is
    # that code (private: there is no public function). Run it as a GPU would: graphs on,
    # no explicit sizes, an explicit ceiling below max_num_batched_tokens (2048).
    build = getattr(config, "_set_cudagraph_sizes", None)
    if build is None:
        pytest.skip("this vLLM has no VllmConfig._set_cudagraph_sizes to compare with")
    compilation = config.compilation_config
    wrong = {}
    for max_size in (1, 3, 4, 8, 20, 64, 255, 256, 263, 264, 272, 300, 512):
        ours = list(impl.default_capture_sizes(max_size, coarse_from=256))
        compilation.cudagraph_mode = v.CUDAGraphMode.FULL_AND_PIECEWISE
        compilation.cudagraph_capture_sizes = None
        compilation.max_cudagraph_capture_size = max_size
        build()
        theirs = list(compilation.cudagraph_capture_sizes)
        if ours != theirs:
            wrong[max_size] = f"yours {ours}, vLLM's {theirs}"
    assert not wrong, (
        "default_capture_sizes(max_size, coarse_from=256) must equal the ladder vLLM builds for "
        f"max_cudagraph_capture_size=max_size; differs for {wrong}"
    )
    # vLLM's own default: ceiling min(2 * max_num_seqs, 512), here 512.
    config = vllm_config(max_num_seqs=256)
    compilation = config.compilation_config
    compilation.cudagraph_mode = v.CUDAGraphMode.FULL_AND_PIECEWISE
    compilation.cudagraph_capture_sizes = None
    compilation.max_cudagraph_capture_size = None
    config._set_cudagraph_sizes()
    ours = list(impl.default_capture_sizes(512, coarse_from=256))
    theirs = compilation.cudagraph_capture_sizes
    assert ours == theirs, (
        f"with max_num_seqs=256 vLLM's default ladder has {len(theirs)} rungs up to "
        f"{compilation.max_cudagraph_capture_size}: {theirs}; yours has {len(ours)}: {ours}"
    )


@pytest.mark.live
@pytest.mark.parametrize("ladder", [LADDER_64, VLLM_512], ids=["course_64", "vllm_512"])
def test_vllm_pads_every_batch_like_you(impl, ladder: list[int]) -> None:
    require_vllm()
    v = vllm_api()
    config = vllm_config()
    top = ladder[-1]
    ours = {batch: (impl.select_capture_size(batch, ladder), impl.padded_tokens(batch, ladder))
            for batch in range(1, top + 17)}
    config.compilation_config.cudagraph_capture_sizes = list(ladder)
    config.compilation_config.max_cudagraph_capture_size = top
    dispatcher = v.CudagraphDispatcher(config)
    dispatcher.initialize_cudagraph_keys(v.CUDAGraphMode.PIECEWISE, 1)
    wrong = {}
    for batch, (rung, pad) in ours.items():
        mode, descriptor = dispatcher.dispatch(batch, uniform_decode=False)
        theirs = (None, 0) if mode.name == "NONE" else (descriptor.num_tokens,
                                                        descriptor.num_tokens - batch)
        if (rung, pad) != theirs:
            wrong[batch] = f"yours {(rung, pad)}, vLLM's {theirs}"
    assert not wrong, (
        f"vLLM's CudagraphDispatcher on the ladder ...{ladder[-4:]} pads each batch to its "
        f"graph size (None: runs eagerly). (rung, padding) differs for {len(wrong)} batches: "
        f"{dict(list(wrong.items())[:8])}"
    )
