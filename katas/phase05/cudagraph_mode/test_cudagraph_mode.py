"""Spec for kata 05-03: the routing table of vLLM's ``CUDAGraphMode``, over strings.

Every mode x both kinds of batch, the compile-time question (must the model be split at
attention?), ``has_mode`` over every simple target, the errors, and a composite that does not
exist yet. The live tests (``-m live``) compare your answers with the enum and the runtime
dispatcher of the installed vLLM; they need no engine.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from katas.phase05.cudagraph_mode import scaffold
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import require_vllm

pytestmark = pytest.mark.cpu_ok

MODES = ["NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"]

# The course's routing table: mode -> (decode batch, mixed batch, needs piecewise compilation).
ROUTING = {
    "NONE": ("NONE", "NONE", False),
    "PIECEWISE": ("PIECEWISE", "PIECEWISE", True),
    "FULL": ("FULL", "FULL", False),
    "FULL_DECODE_ONLY": ("FULL", "NONE", False),
    "FULL_AND_PIECEWISE": ("FULL", "PIECEWISE", True),
}

# has_mode(mode, target) is True exactly for these targets.
USES = {
    "NONE": {"NONE"},
    "PIECEWISE": {"PIECEWISE"},
    "FULL": {"FULL"},
    "FULL_DECODE_ONLY": {"FULL", "NONE"},
    "FULL_AND_PIECEWISE": {"FULL", "PIECEWISE"},
}


# -- the routing table ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_routing_table(impl, mode: str) -> None:
    decode, mixed, piecewise = ROUTING[mode]
    got = {
        "decode_mode": impl.decode_mode(mode),
        "mixed_mode": impl.mixed_mode(mode),
        "runtime_mode_for(is_decode=True)": impl.runtime_mode_for(mode, True),
        "runtime_mode_for(is_decode=False)": impl.runtime_mode_for(mode, False),
        "requires_piecewise_compilation": impl.requires_piecewise_compilation(mode),
    }
    expected = {
        "decode_mode": decode,
        "mixed_mode": mixed,
        "runtime_mode_for(is_decode=True)": decode,
        "runtime_mode_for(is_decode=False)": mixed,
        "requires_piecewise_compilation": piecewise,
    }
    wrong = {name: f"got {got[name]!r}, expected {expected[name]!r}"
             for name in expected if got[name] != expected[name]}
    assert not wrong, (
        f"routing table, row {mode}: a decode batch runs {decode}, a mixed batch runs {mixed}, "
        f"piecewise compilation {'needed' if piecewise else 'not needed'}. Wrong: {wrong}"
    )


def test_the_default_mode_splits_decode_from_mixed(impl) -> None:
    # The course's capture log: one capture pass per routine of the default mode,
    # (decode, FULL) and (mixed prefill-decode, PIECEWISE).
    mode = scaffold.DEFAULT_MODE
    passes = (impl.runtime_mode_for(mode, True), impl.runtime_mode_for(mode, False))
    assert passes == ("FULL", "PIECEWISE"), (
        f"{mode} (vLLM's default) replays one FULL graph for a pure-decode batch and piecewise "
        f"graphs for a mixed batch: expected (decode, mixed) = ('FULL', 'PIECEWISE'), got "
        f"{passes}"
    )
    assert impl.separate_routine(mode) is True and impl.requires_piecewise_compilation(mode), (
        f"{mode} keeps two routines, one of them piecewise: separate_routine and "
        f"requires_piecewise_compilation must both be True"
    )


@pytest.mark.parametrize("mode", MODES)
def test_only_composites_have_separate_routines(impl, mode: str) -> None:
    got = impl.separate_routine(mode)
    expected = mode in ("FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
    assert isinstance(got, bool), (
        f"separate_routine({mode!r}) must return a bool, got {type(got).__name__} {got!r}"
    )
    assert got is expected, (
        f"separate_routine({mode!r}): {mode} is {'a composite' if expected else 'a simple mode'}"
        f", so {expected}; got {got}"
    )


# -- has_mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_has_mode_asks_every_routine(impl, mode: str) -> None:
    got = {target: impl.has_mode(mode, target) for target in scaffold.SIMPLE_MODES}
    not_bool = {t: type(v).__name__ for t, v in got.items() if not isinstance(v, bool)}
    assert not not_bool, f"has_mode must return a bool; for {mode} it returned {not_bool}"
    used = {target for target, yes in got.items() if yes}
    assert used == USES[mode], (
        f"has_mode({mode!r}, target) must be True exactly for the routines {mode} runs "
        f"(decode and mixed): {sorted(USES[mode])}; yours says {sorted(used)}"
    )


@pytest.mark.parametrize("target", ["FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"])
def test_has_mode_target_must_be_a_single_routine(impl, target: str) -> None:
    with expect_raises(ValueError, f"has_mode asks about one simple mode; {target} is a pair",
                       match=target):
        impl.has_mode("FULL_AND_PIECEWISE", target)


# -- bad names --------------------------------------------------------------------------------

CALLS = {
    "separate_routine": lambda m, mode: m.separate_routine(mode),
    "decode_mode": lambda m, mode: m.decode_mode(mode),
    "mixed_mode": lambda m, mode: m.mixed_mode(mode),
    "has_mode": lambda m, mode: m.has_mode(mode, "FULL"),
    "requires_piecewise_compilation": lambda m, mode: m.requires_piecewise_compilation(mode),
    "runtime_mode_for(decode)": lambda m, mode: m.runtime_mode_for(mode, True),
    "runtime_mode_for(mixed)": lambda m, mode: m.runtime_mode_for(mode, False),
}


@pytest.mark.parametrize("bad", ["FULL_AND_PIECWISE", "full", ""])
@pytest.mark.parametrize("call", list(CALLS))
def test_unknown_mode_is_a_value_error_listing_the_valid_ones(impl, call: str, bad: str) -> None:
    with expect_raises(ValueError, f"{bad!r} is not a cudagraph mode", match=".") as info:
        CALLS[call](impl, bad)
    missing = [name for name in MODES if name not in str(info.value)]
    assert not missing, (
        f"{call} with the unknown mode {bad!r}: the ValueError should name every valid mode so "
        f"the typo is easy to fix; the message {str(info.value)!r} lacks {missing}"
    )


def test_has_mode_checks_the_target_name_too(impl) -> None:
    with expect_raises(ValueError, "'PIECEWYSE' is not a cudagraph mode", match="PIECEWYSE"):
        impl.has_mode("FULL_AND_PIECEWISE", "PIECEWYSE")


# -- a composite that does not exist yet --------------------------------------------------------


def test_a_new_composite_needs_no_new_code(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    # The course's Reflect question: a hypothetical PIECEWISE_DECODE_ONLY. Added to ROUTINES,
    # it must route, answer has_mode and demand piecewise compilation with no code change.
    monkeypatch.setitem(scaffold.ROUTINES, "PIECEWISE_DECODE_ONLY", ("PIECEWISE", "NONE"))
    mode = "PIECEWISE_DECODE_ONLY"
    got = {
        "separate_routine": impl.separate_routine(mode),
        "decode_mode": impl.decode_mode(mode),
        "mixed_mode": impl.mixed_mode(mode),
        "runtime_mode_for(is_decode=True)": impl.runtime_mode_for(mode, True),
        "runtime_mode_for(is_decode=False)": impl.runtime_mode_for(mode, False),
        "has_mode(NONE)": impl.has_mode(mode, "NONE"),
        "has_mode(PIECEWISE)": impl.has_mode(mode, "PIECEWISE"),
        "has_mode(FULL)": impl.has_mode(mode, "FULL"),
        "requires_piecewise_compilation": impl.requires_piecewise_compilation(mode),
    }
    expected = {
        "separate_routine": True,
        "decode_mode": "PIECEWISE",
        "mixed_mode": "NONE",
        "runtime_mode_for(is_decode=True)": "PIECEWISE",
        "runtime_mode_for(is_decode=False)": "NONE",
        "has_mode(NONE)": True,
        "has_mode(PIECEWISE)": True,
        "has_mode(FULL)": False,
        "requires_piecewise_compilation": True,
    }
    wrong = {name: f"got {got[name]!r}, expected {expected[name]!r}"
             for name in expected if got[name] != expected[name]}
    assert not wrong, (
        "a composite added to scaffold.ROUTINES ('PIECEWISE_DECODE_ONLY': ('PIECEWISE', "
        "'NONE')) must work with no code change: read ROUTINES when called, never a list of "
        f"names of your own. Wrong: {wrong}"
    )


# -- live: the installed vLLM's own enum and dispatcher ----------------------------------------


@functools.cache
def vllm_side() -> SimpleNamespace:
    """vLLM's enum and dispatcher, and an offline config for the tiny Llama (no weights)."""
    from vllm.config import CUDAGraphMode
    from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    from pytest_vllm_katas.live import vllm_twins

    v = vllm_twins.vllm_api()
    scheduler = v.SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=2048,
                                  max_model_len=vllm_twins.MAX_MODEL_LEN,
                                  is_encoder_decoder=False)
    config = v.VllmConfig(model_config=v.model_config, scheduler_config=scheduler)
    return SimpleNamespace(CUDAGraphMode=CUDAGraphMode, CudagraphDispatcher=CudagraphDispatcher,
                           config=config)


@pytest.mark.live
def test_your_table_agrees_with_vllms_enum(impl) -> None:
    require_vllm()  # skips, with the install command, where vLLM cannot run
    enum = vllm_side().CUDAGraphMode
    ours = {
        mode: {
            "separate_routine()": impl.separate_routine(mode),
            "decode_mode()": impl.decode_mode(mode),
            "mixed_mode()": impl.mixed_mode(mode),
            "requires_piecewise_compilation()": impl.requires_piecewise_compilation(mode),
            **{f"has_mode({t})": impl.has_mode(mode, t) for t in scaffold.SIMPLE_MODES},
        }
        for mode in MODES
    }
    names = [member.name for member in enum]
    assert sorted(names) == sorted(MODES), (
        f"premise: vLLM's CUDAGraphMode has the five modes of the course; it has {names}"
    )
    for member in enum:
        theirs = {
            "separate_routine()": member.separate_routine(),
            "decode_mode()": member.decode_mode().name,
            "mixed_mode()": member.mixed_mode().name,
            "requires_piecewise_compilation()": member.requires_piecewise_compilation(),
            **{f"has_mode({t})": member.has_mode(enum[t]) for t in scaffold.SIMPLE_MODES},
        }
        mine = ours[member.name]
        wrong = {k: f"yours {mine[k]!r}, vLLM's {theirs[k]!r}"
                 for k in theirs if mine[k] != theirs[k]}
        assert not wrong, f"CUDAGraphMode.{member.name} in the installed vLLM disagrees: {wrong}"


@pytest.mark.live
def test_your_dispatch_agrees_with_vllms_dispatcher(impl) -> None:
    require_vllm()
    side = vllm_side()
    enum, config = side.CUDAGraphMode, side.config
    # On this CPU vLLM turns graphs off (mode NONE, no sizes). Hand its dispatcher a ladder and
    # a mode anyway: dispatching is bookkeeping, no graph is captured or replayed.
    config.compilation_config.cudagraph_capture_sizes = [1, 2, 4, 8]
    config.compilation_config.max_cudagraph_capture_size = 8
    for mode in MODES:
        ours = {kind: impl.runtime_mode_for(mode, kind == "decode") for kind in ("decode", "mixed")}
        dispatcher = side.CudagraphDispatcher(config)
        dispatcher.initialize_cudagraph_keys(enum[mode], 1)
        # A batch of 4 (on a captured size, within max_num_seqs): one token per request for
        # a pure-decode batch, the same token count with a prefill in it for a mixed one.
        theirs = {kind: dispatcher.dispatch(4, uniform_decode=kind == "decode")[0].name
                  for kind in ("decode", "mixed")}
        assert ours == theirs, (
            f"cudagraph_mode={mode}: vLLM's CudagraphDispatcher runs a batch of 4 as {theirs}; "
            f"your runtime_mode_for says {ours}"
        )
        passes = sorted({r for r in ours.values() if r != "NONE"})
        captured = sorted(m.name for m, _ in dispatcher.get_capture_descs())
        assert passes == captured, (
            f"cudagraph_mode={mode}: vLLM captures one pass per graph routine, {captured}; your "
            f"routines (NONE captures nothing) give {passes}"
        )
