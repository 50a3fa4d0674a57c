"""Kata 14-02 — trace weight loading.

Without vLLM: the course's Llama-3-8B capture table predicted from its config alone, your
prediction against a recorded vLLM-CPU trace of SmolLM2 (``recorded_trace.json``), and your
tracer on ``FakeVllmLlama`` (vLLM's loading path in miniature). With vLLM (``-m live``): your
tracer around a real engine start on SmolLM2, compared with your prediction name by name.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from katas.phase14.trace_weight_loading.scaffold import (
    LLAMA3_8B_CONFIG,
    FakeVllmLlama,
    default_weight_loader,
    llama_checkpoint_names,
    load_recorded_trace,
)
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

L0 = "model.layers.0."
COURSE_TABLE = [  # the course's captured mapping (Llama-3-8B, vLLM 0.22.1)
    (L0 + "self_attn.q_proj.weight", L0 + "self_attn.qkv_proj.weight", "q", (0, 4096)),
    (L0 + "self_attn.k_proj.weight", L0 + "self_attn.qkv_proj.weight", "k", (4096, 5120)),
    (L0 + "self_attn.v_proj.weight", L0 + "self_attn.qkv_proj.weight", "v", (5120, 6144)),
    (L0 + "mlp.gate_proj.weight", L0 + "mlp.gate_up_proj.weight", 0, (0, 14336)),
    (L0 + "input_layernorm.weight", L0 + "input_layernorm.weight", None, None),
]

# A fake model small enough to build per test: GQA 4:2, head_dim 4, 2 layers.
FAKE_CONFIG = {"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
               "vocab_size": 10, "tie_word_embeddings": False}


def _fake_checkpoint(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Tensors with the shapes a Hugging Face checkpoint of FAKE_CONFIG holds."""
    h, inter, v = 8, 12, 10
    shapes = {"input_layernorm.weight": (h,), "mlp.down_proj.weight": (h, inter),
              "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h),
              "post_attention_layernorm.weight": (h,), "self_attn.k_proj.weight": (8, h),
              "self_attn.o_proj.weight": (h, 16), "self_attn.q_proj.weight": (16, h),
              "self_attn.v_proj.weight": (8, h)}
    rng = np.random.default_rng(seed)
    out = []
    for name in llama_checkpoint_names(FAKE_CONFIG):
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            shape: tuple[int, ...] = (v, h)
        elif name == "model.norm.weight":
            shape = (h,)
        else:
            shape = shapes[name.split(".", 3)[3]]
        out.append((name, rng.standard_normal(shape)))
    return out


def _expected_fake_captures() -> list[tuple[Any, ...]]:
    out = []
    for name, tensor in _fake_checkpoint():
        param, shard = name, None
        for part, fused, sid in ((".q_proj", ".qkv_proj", "q"), (".k_proj", ".qkv_proj", "k"),
                                 (".v_proj", ".qkv_proj", "v"),
                                 (".gate_proj", ".gate_up_proj", 0),
                                 (".up_proj", ".gate_up_proj", 1)):
            if part in name:
                param, shard = name.replace(part, fused), sid
                break
        out.append((name, param, shard, tensor.shape))
    return out


def _as_tuples(records: list) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in records]


# -- the course's Llama-3-8B table, from the config alone --------------------------------------

def test_course_llama3_8b_capture_table(impl) -> None:
    got = impl.predict_mapping([row[0] for row in COURSE_TABLE], LLAMA3_8B_CONFIG)
    assert len(got) == len(COURSE_TABLE), f"one Mapping per name: expected 5, got {len(got)}"
    for want, row in zip(COURSE_TABLE, got, strict=True):
        assert tuple(row) == want, (
            f"{want[0]}: the course captured param/shard/rows {want[1:]}, you predicted "
            f"{tuple(row)[1:]}")


def test_llama3_8b_fused_shapes(impl) -> None:
    got = impl.fused_shapes(LLAMA3_8B_CONFIG)
    want = {"qkv_proj": (6144, 4096), "gate_up_proj": (28672, 4096)}
    assert got == want, (
        f"32 q heads x 128 + 2 x (8 KV heads x 128) = 6144 rows; gate + up = 2 x 14336 = 28672 "
        f"rows; expected {want}, got {got}")


def test_tp2_halves_every_fused_shape(impl) -> None:
    shapes = impl.fused_shapes(LLAMA3_8B_CONFIG, tp_size=2)
    assert shapes == {"qkv_proj": (3072, 4096), "gate_up_proj": (14336, 4096)}, (
        f"tensor_parallel_size=2: each rank holds 16 q heads and 4 KV heads ((16 + 8) x 128 = "
        f"3072 rows) and 7168 rows each of gate and up; got {shapes}")
    rows = {m.shard_id: m.rows for m in impl.predict_mapping(
        [L0 + "self_attn.q_proj.weight", L0 + "self_attn.k_proj.weight",
         L0 + "self_attn.v_proj.weight", L0 + "mlp.gate_proj.weight", L0 + "mlp.up_proj.weight"],
        LLAMA3_8B_CONFIG, tp_size=2)}
    want = {"q": (0, 2048), "k": (2048, 2560), "v": (2560, 3072), 0: (0, 7168), 1: (7168, 14336)}
    assert rows == want, f"rows inside one rank's buffers at tp=2: expected {want}, got {rows}"


def test_mha_has_its_own_fingerprint(impl) -> None:
    mha = {**LLAMA3_8B_CONFIG, "num_key_value_heads": 32}
    got = impl.fused_shapes(mha)["qkv_proj"]
    assert got == (12288, 4096), (
        f"with 32 KV heads (MHA) q, k and v are equal: 3 x 4096 = 12288 rows, got {got}")
    no_kv_key = {k: v for k, v in LLAMA3_8B_CONFIG.items() if k != "num_key_value_heads"}
    got = impl.fused_shapes(no_kv_key)["qkv_proj"]
    assert got == (12288, 4096), f"no num_key_value_heads means MHA: expected 12288 rows, got {got}"


def test_llama3_8b_291_tensors_onto_195_parameters(impl) -> None:
    names = llama_checkpoint_names(LLAMA3_8B_CONFIG)
    got = impl.predict_mapping(names, LLAMA3_8B_CONFIG)
    assert [m.checkpoint for m in got] == names, "one Mapping per name, in the order given"
    params = {m.param for m in got}
    assert len(names) == 291 and len(params) == 195, (
        f"291 checkpoint tensors: 32 layers x 3 q/k/v -> 1 and x 2 gate/up -> 1 leave 195 "
        f"parameters, got {len(params)}")
    stacked = sum(m.shard_id is not None for m in got)
    assert stacked == 160, (
        f"the five stacked rows claim 32 x 5 = 160 of 291 tensors, got {stacked}")


def test_splits_that_do_not_divide_are_refused(impl) -> None:
    config, _ = load_recorded_trace()
    with expect_raises(ValueError, "SmolLM2's 9 query heads do not split over 2 ranks"):
        impl.fused_shapes(config, tp_size=2)
    with expect_raises(ValueError, "tp_size 0 is not a tensor-parallel size"):
        impl.predict_mapping(["model.norm.weight"], config, tp_size=0)


# -- the recorded vLLM-CPU trace of SmolLM2 -----------------------------------------------------

def test_prediction_matches_the_recorded_smollm2_trace(impl) -> None:
    config, captures = load_recorded_trace()
    got = impl.predict_mapping([c.checkpoint for c in captures], config)
    assert len(got) == len(captures) == 272, f"272 tensors, predicted {len(got)}"
    for c, m in zip(captures, got, strict=True):
        assert (m.param, m.shard_id) == (c.param, c.shard_id), (
            f"{c.checkpoint}: vLLM loaded it into {c.param} with shard id {c.shard_id!r}; you "
            f"predicted {m.param} with {m.shard_id!r}")
    assert len({m.param for m in got}) == 182, "vLLM filled 182 parameters"


def test_predicted_rows_tile_each_fused_parameter(impl) -> None:
    config, captures = load_recorded_trace()
    got = impl.predict_mapping([c.checkpoint for c in captures], config)
    shapes = impl.fused_shapes(config)
    assert shapes == {"qkv_proj": (960, 576), "gate_up_proj": (3072, 576)}, (
        f"SmolLM2: (9 + 2 x 3) x 64 = 960 qkv rows, 2 x 1536 gate_up rows; got {shapes}")
    spans: dict[str, list] = defaultdict(list)
    for c, m in zip(captures, got, strict=True):
        if c.shard_id is None:
            assert m.rows is None, f"{c.checkpoint} is unfused: rows must be None, got {m.rows}"
            continue
        assert m.rows is not None and m.rows[1] - m.rows[0] == c.shape[0], (
            f"{c.checkpoint}: vLLM loaded {c.shape[0]} rows, your rows are {m.rows}")
        spans[m.param].append(m.rows)
    for param, rows in spans.items():
        total = shapes[param.split(".")[-2]][0]
        ordered = sorted(rows)
        joined = all(a[1] == b[0] for a, b in zip(ordered, ordered[1:], strict=False))
        assert ordered[0][0] == 0 and ordered[-1][1] == total and joined, (
            f"{param}: the shards' rows must tile 0..{total} with no gap or overlap, got "
            f"{ordered}")


# -- the tracer, on vLLM's loading path in miniature --------------------------------------------

def test_tracer_records_every_loader_call(impl) -> None:
    model = FakeVllmLlama(FAKE_CONFIG)
    with impl.tracing(FakeVllmLlama, default_weight_loader) as captures:
        loaded = model.load_weights(iter(_fake_checkpoint()))
    want = _expected_fake_captures()
    got = _as_tuples(captures)
    assert len(got) == len(want), (
        f"one Capture per weight-loader call: the fake checkpoint has {len(want)} tensors, "
        f"you recorded {len(got)}")
    for w, g in zip(want, got, strict=True):
        assert g == w, f"expected {w}, recorded {g}"
        assert all(type(d) is int for d in g[3]), f"{g[0]}: the shape must be a tuple of ints"
    assert isinstance(loaded, set) and len(loaded) == 6 * 2 + 3, (
        f"the traced load_weights must return what the model's returns (15 names), got "
        f"{loaded!r}")


def test_traced_load_equals_untraced(impl) -> None:
    traced, plain = FakeVllmLlama(FAKE_CONFIG), FakeVllmLlama(FAKE_CONFIG)
    with impl.tracing(FakeVllmLlama, default_weight_loader):
        traced.load_weights(_fake_checkpoint())
    plain.load_weights(_fake_checkpoint())
    for (name, a), (_, b) in zip(traced.named_parameters(), plain.named_parameters(),
                                 strict=True):
        assert np.array_equal(a.data, b.data), f"{name}: tracing changed what was loaded"


def test_tracer_sees_a_model_built_inside_the_block(impl) -> None:
    with impl.tracing(FakeVllmLlama, default_weight_loader) as captures:
        FakeVllmLlama(FAKE_CONFIG).load_weights(_fake_checkpoint())  # as an engine start does
    assert len(captures) == 21, (
        f"a model built and loaded inside the block must be traced too: 21 tensors, recorded "
        f"{len(captures)}")


def test_tracer_leaves_nothing_behind(impl) -> None:
    original = FakeVllmLlama.__dict__["load_weights"]
    model = FakeVllmLlama(FAKE_CONFIG)
    loaders_before = {n: p.__dict__.get("weight_loader") for n, p in model.named_parameters()}
    with impl.tracing(FakeVllmLlama, default_weight_loader) as captures:
        model.load_weights(_fake_checkpoint())
    n = len(captures)
    assert FakeVllmLlama.__dict__["load_weights"] is original, (
        "after the block FakeVllmLlama.load_weights must be the original function again")
    loaders_after = {n: p.__dict__.get("weight_loader") for n, p in model.named_parameters()}
    assert loaders_after == loaders_before, (
        "after the block every parameter's weight_loader must be what it was (none for the "
        f"norms); changed: {[k for k in loaders_before if loaders_before[k] != loaders_after[k]]}")
    model.load_weights(_fake_checkpoint())
    assert len(captures) == n, "a load after the block must not be recorded"


def test_tracer_restores_after_an_error(impl) -> None:
    original = FakeVllmLlama.__dict__["load_weights"]
    model = FakeVllmLlama(FAKE_CONFIG)
    with expect_raises(KeyError, "the model's own error must come through the tracer"):
        with impl.tracing(FakeVllmLlama, default_weight_loader):
            model.load_weights([("model.layers.9.mlp.down_proj.weight", np.zeros((8, 12)))])
    assert FakeVllmLlama.__dict__["load_weights"] is original, (
        "an exception inside the block must still restore FakeVllmLlama.load_weights")


# -- live: vLLM-CPU loads SmolLM2 under your tracer ---------------------------------------------

# Its own configuration (not shared with other katas' engines): the trace needs a fresh start.
LIVE = EngineConfig(model="smollm2", max_model_len=136, max_num_seqs=2)
_LIVE: dict[str, Any] = {}


def _live_trace(impl: Any, live_engines: LiveEngines) -> tuple[list, Any]:
    """Start SmolLM2 once for this module, with your tracer installed around the start."""
    if "captures" not in _LIVE:
        from vllm.model_executor.model_loader.weight_utils import default_weight_loader as dwl
        from vllm.model_executor.models.llama import LlamaForCausalLM

        before = LlamaForCausalLM.__dict__["load_weights"]
        with impl.tracing(LlamaForCausalLM, dwl) as captures:
            handle = live_engines.get(LIVE)
        assert LlamaForCausalLM.__dict__["load_weights"] is before, (
            "vLLM's LlamaForCausalLM.load_weights must be restored after the block")
        assert captures, ("nothing was recorded: the engine for this configuration was already "
                          "running before the tracer was installed")
        _LIVE.update(captures=list(captures), handle=handle)
    return _LIVE["captures"], _LIVE["handle"]


def test_live_trace_is_272_tensors_into_182_parameters(impl, live_engines) -> None:
    config, _ = load_recorded_trace()
    impl.predict_mapping(["model.norm.weight"], config)  # your code first: a stub stops here
    captures, _ = _live_trace(impl, live_engines)
    assert len(captures) == 272, f"SmolLM2 has 272 tensors; the trace holds {len(captures)}"
    params = {c.param for c in captures}
    assert len(params) == 182, f"vLLM fills 182 parameters; the trace names {len(params)}"


def test_live_trace_equals_your_prediction(impl, live_engines) -> None:
    config, _ = load_recorded_trace()
    predicted = impl.predict_mapping(llama_checkpoint_names(config), config)
    captures, _ = _live_trace(impl, live_engines)
    by_name = {m.checkpoint: m for m in predicted}
    assert sorted(c.checkpoint for c in captures) == sorted(by_name), (
        "the trace and your prediction must cover the same checkpoint names")
    for c in captures:
        m = by_name[c.checkpoint]
        assert (m.param, m.shard_id) == (c.param, c.shard_id), (
            f"{c.checkpoint}: vLLM loaded it into {c.param} with shard id {c.shard_id!r}; you "
            f"predicted {m.param} with {m.shard_id!r}")
        if m.rows is not None:
            assert m.rows[1] - m.rows[0] == c.shape[0], (
                f"{c.checkpoint}: vLLM's loader got {c.shape[0]} rows, your slice {m.rows}")


def test_live_fused_shards_have_the_predicted_shapes(impl, live_engines) -> None:
    config, _ = load_recorded_trace()
    shapes = impl.fused_shapes(config)
    captures, _ = _live_trace(impl, live_engines)
    seen = {(c.param.split(".")[-2], c.shard_id): c.shape for c in captures
            if c.shard_id is not None and ".layers.0." in c.param}
    want = {("qkv_proj", "q"): (576, 576), ("qkv_proj", "k"): (192, 576),
            ("qkv_proj", "v"): (192, 576), ("gate_up_proj", 0): (1536, 576),
            ("gate_up_proj", 1): (1536, 576)}
    assert seen == want, f"layer 0's shards as vLLM loaded them: expected {want}, got {seen}"
    for fused in ("qkv_proj", "gate_up_proj"):
        rows = sum(s[0] for (f, _), s in seen.items() if f == fused)
        assert shapes[fused] == (rows, 576), (
            f"{fused}: the shards vLLM loaded add up to ({rows}, 576), you predicted "
            f"{shapes[fused]}")


def test_live_traced_engine_still_answers(impl, live_engines) -> None:
    config, _ = load_recorded_trace()
    impl.fused_shapes(config)  # your code first: a stub stops here
    _, handle = _live_trace(impl, live_engines)
    from vllm import SamplingParams

    out = handle.llm.generate(["The capital of France is"],
                              SamplingParams(max_tokens=3, temperature=0.0))
    text = out[0].outputs[0].text
    assert "Paris" in text, (
        f"weights loaded under your tracer must be the same weights: greedy SmolLM2 should say "
        f"Paris, said {text!r}")
