"""Spec for kata 07-02: predict the fused-MoE op count, read it and its time share off a
profile, and check vLLM's routing against your 07-01 router.

The core tests run anywhere: the course's captured table (41.2% for the grouped expert GEMM on
an L4) and one recorded vLLM-CPU run (``recorded_profile.json``: the seeded tiny Mixtral, 3
layers, 2 prompts, 4 tokens). The ``live`` tests start vLLM on CPU once for the module (the same
model, built into a temporary directory), profile a generate and hook every layer's router;
without vLLM they skip, naming the install command.
"""

from __future__ import annotations

import numpy as np
import pytest

from katas.phase07.profile_fused_moe.scaffold import (
    COURSE_TABLE,
    MAX_TOKENS,
    NUM_LAYERS,
    PROMPTS,
    TOP_K,
    Row,
    gate_weight,
    load_recording,
    profile_generate,
    recorded_rows,
    start_mixtral,
)
from mini_vllm.layers.fused_moe import fused_topk
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.fixtures import LiveEngines, require_vllm

pytestmark = pytest.mark.gpu_opt

RECORDING = load_recording()
FUSED_MOE = "fused_moe"  # _C::cpu_fused_moe on vLLM-CPU, fused_moe_kernel on CUDA


def _sorted_like_yours(ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """vLLM's CPU router takes ``torch.topk(sorted=False)``: put each row in the contract's order
    (descending weight, lower id first on ties) before comparing."""
    order = np.stack([np.lexsort((i, -w)) for i, w in zip(ids, weights, strict=True)])
    return np.take_along_axis(ids, order, -1), np.take_along_axis(weights, order, -1)


# ------------------------------------------------------------------------- prediction (core)


def test_forward_steps_count_the_prefill_as_the_first_token(impl) -> None:
    for max_tokens, want in [(1, 1), (4, 4), (32, 32)]:
        got = impl.forward_steps(max_tokens)
        assert got == want, (
            f"{max_tokens} tokens per prompt: the prefill pass samples the first, each further "
            f"token is one decode pass: {want} forward passes, got {got}")
    with expect_raises(ValueError, "a generate of 0 tokens is not a generate"):
        impl.forward_steps(0)


def test_predicted_calls_are_layers_times_steps(impl) -> None:
    got = impl.predict_fused_moe_calls(NUM_LAYERS, impl.forward_steps(MAX_TOKENS))
    assert got == 12, f"3 MoE layers x 4 forward passes = 12 fused-MoE calls, got {got}"
    # The course's run shape on Mixtral-8x7B (32 MoE layers): 32 tokens -> 32 passes.
    got = impl.predict_fused_moe_calls(32, impl.forward_steps(32))
    assert got == 1024, f"32 layers x 32 passes = 1024, got {got}"
    with expect_raises(ValueError, "a negative layer count is a bug upstream of you"):
        impl.predict_fused_moe_calls(-1, 4)


# ------------------------------------------------------------------------ parsing (core)


def test_count_calls_on_the_recorded_profile(impl) -> None:
    rows = recorded_rows(RECORDING)
    got = impl.count_calls(rows, FUSED_MOE)
    assert got == 12, (
        f"the recorded vLLM-CPU run calls _C::cpu_fused_moe 12 times (3 layers x 4 passes); "
        f"your count_calls(rows, {FUSED_MOE!r}) says {got}")
    assert impl.count_calls(rows, "no_such_op") == 0, "no matching row means 0 calls"
    got = impl.count_calls(rows, r"^aten::(add|mul)$")
    want = sum(r.count for r in rows if r.key in ("aten::add", "aten::mul"))
    assert got == want, f"a regular expression over two ops: {want} calls, got {got}"


def test_time_share_on_the_recorded_profile(impl) -> None:
    rows = recorded_rows(RECORDING)
    moe = next(r for r in rows if r.key == "_C::cpu_fused_moe")
    want = moe.self_cpu_time_total / sum(r.self_cpu_time_total for r in rows)
    got = impl.time_share(rows, FUSED_MOE)
    assert_close(got, want, cause="arithmetic",
                 what="the fused-MoE op's share of self CPU time in the recorded run (self time "
                      "of every row in the denominator; inclusive times count parents twice)")
    with expect_raises(ValueError, "rows without any time have no shares"):
        impl.time_share([Row("idle", 3)], FUSED_MOE)


def test_time_share_reproduces_the_courses_table(impl) -> None:
    for pattern, want in [("fused_moe", 0.412), ("align_block", 0.068), ("flash_attn", 0.185),
                          ("gate", 0.013)]:
        got = impl.time_share(COURSE_TABLE, pattern, time_attr="self_device_time_total")
        assert_close(got, want, cause="arithmetic",
                     what=f"share of device time matching {pattern!r} in the course's capture")


def test_route_agrees_with_the_recorded_vllm_routing(impl) -> None:
    # route(logits, I, k): with W_gate the identity, the router logits are x itself.
    for call in RECORDING["routing"]:
        logits = np.array(call["logits"])
        ids, weights = impl.route(logits, np.eye(logits.shape[1]), TOP_K)
        ids, weights = np.asarray(ids), np.asarray(weights)
        assert ids.shape == weights.shape == (len(logits), TOP_K), (
            f"route returns two (T, k) arrays, got {ids.shape} and {weights.shape}")
        want_ids, want_w = _sorted_like_yours(np.array(call["topk_ids"]),
                                              np.array(call["topk_weights"]))
        assert ids.tolist() == want_ids.tolist(), (
            f"layer {call['layer']}: vLLM routed the prefill tokens to {want_ids.tolist()}, "
            f"your router to {ids.tolist()}")
        assert_close(weights, want_w, cause="float32",
                     what=f"layer {call['layer']}: combine weights against vLLM's (float32)")


# -------------------------------------------------------------------------------------- live


@pytest.fixture(scope="module")
def profiled(live_engines: LiveEngines, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One vLLM-CPU engine for this module on the seeded tiny Mixtral, one profiled generate."""
    require_vllm()
    live_engines.close()  # at most one engine alive: free the shared ones first
    llm = start_mixtral(tmp_path_factory.mktemp("tiny-mixtral"))
    try:
        yield profile_generate(llm)
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass


@pytest.mark.live
def test_live_fused_moe_calls_are_layers_times_steps(impl, request) -> None:
    predicted = impl.predict_fused_moe_calls(NUM_LAYERS, impl.forward_steps(MAX_TOKENS))
    run = request.getfixturevalue("profiled")
    counted = impl.count_calls(run.rows, FUSED_MOE)
    truth = sum(r.count for r in run.rows if r.key == "_C::cpu_fused_moe")
    assert counted == truth, f"the trace holds {truth} _C::cpu_fused_moe calls; you read {counted}"
    assert predicted == counted, (
        f"you predicted {predicted} fused-MoE calls ({run.num_layers} layers, {MAX_TOKENS} "
        f"tokens); the profile shows {counted}")
    gate_calls = len(run.gate_calls)
    assert gate_calls == counted, f"one router call per fused-MoE call: {gate_calls} vs {counted}"


@pytest.mark.live
def test_live_fused_moe_share_of_self_cpu_time(impl, request, record_property) -> None:
    impl.time_share(COURSE_TABLE, FUSED_MOE, time_attr="self_device_time_total")
    run = request.getfixturevalue("profiled")
    share = impl.time_share(run.rows, FUSED_MOE)
    record_property("fused_moe_self_cpu_share", share)
    print(f"\n_C::cpu_fused_moe: {share:.1%} of self CPU time (course, L4 CUDA time: 41.2%)")
    assert 0.0 < share < 1.0, f"the fused-MoE op's share must lie strictly in (0, 1), got {share}"


@pytest.mark.live
def test_live_gate_routing_equals_your_router(impl, request) -> None:
    impl.route(np.eye(2), np.eye(2), 1)
    run = request.getfixturevalue("profiled")
    assert run.gate_calls, "no router call was captured"
    for call in run.gate_calls:
        W_gate = gate_weight(call.layer)
        hidden = call.hidden.astype(np.float64)
        assert_close(call.logits, hidden @ W_gate.T.astype(np.float64), cause="float32",
                     what=f"layer {call.layer}: the hook's logits are hidden @ W_gate.T")
        ids, weights = impl.route(hidden, W_gate.astype(np.float64), TOP_K)
        ids, weights = np.asarray(ids), np.asarray(weights)
        assert ids.shape == (len(hidden), TOP_K), f"topk_ids shape {ids.shape}"
        # The routing vLLM actually used (its router, tapped); without the tap, vLLM's rule on
        # the hook's logits (mini_vllm's fused_topk, the same rule).
        if call.topk_ids is not None:
            want_ids, want_w = _sorted_like_yours(call.topk_ids, call.topk_weights)
        else:
            want_w, want_ids = fused_topk(call.logits.astype(np.float64), TOP_K)
        assert ids.tolist() == want_ids.tolist(), (
            f"layer {call.layer}, {len(hidden)} tokens: vLLM routed to {want_ids.tolist()}, "
            f"your router to {ids.tolist()}")
        assert_close(weights, want_w, cause="float32",
                     what=f"layer {call.layer}: your combine weights against vLLM's")
    layers_seen = sorted({c.layer for c in run.gate_calls})
    assert layers_seen == list(range(NUM_LAYERS)), f"every layer's router hooked: {layers_seen}"
    assert len(PROMPTS) == len(run.tokens)
