"""Kata 14-03 — checkpoint surgery: the course's five tests, then SmolLM2's real checkpoint.

The course's tests use a toy GQA layer (4 query heads, 1 KV head, head_dim 32: q 128 rows, k and
v 32 each). The SmolLM2 tests (9 query heads, 3 KV heads, head_dim 64, 30 layers, 272 tensors)
skip until ``katas models fetch`` has run; they read every tensor's shape from the safetensors
header but load only layers 0 and 1 (and the embedding and final norm) into memory.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from katas.phase14.checkpoint_surgery.scaffold import LayerShapes
from mini_vllm.distributed import column_shards, qkv_shards, shard_model
from mini_vllm.distributed.tensor_parallel import kv_heads_of_rank
from mini_vllm.models.llama import LlamaForCausalLM
from mini_vllm.tests.builders import dense_last_logits
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

pytestmark = pytest.mark.cpu_ok

# The course's toy layer: q 4 x 32 = 128 rows, k and v 1 x 32 = 32 rows each.
TOY = LayerShapes(num_heads=4, num_kv_heads=1, head_dim=32, intermediate_size=48, hidden_size=64)

needs_smollm2 = pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
LOADED_LAYERS = (0, 1)  # loaded fully; every other layer is checked by shape
VOCAB_ROWS = 8192  # of 49152: the embedding (and tied head) rows the whole-model checks keep


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _toy_weights(shapes: LayerShapes, seed: int = 0) -> dict[str, np.ndarray]:
    rng = _rng(seed)
    q = shapes.num_heads * shapes.head_dim
    kv = shapes.num_kv_heads * shapes.head_dim
    h, inter = shapes.hidden_size, shapes.intermediate_size
    return {"q": rng.standard_normal((q, h)), "k": rng.standard_normal((kv, h)),
            "v": rng.standard_normal((kv, h)), 0: rng.standard_normal((inter, h)),
            1: rng.standard_normal((inter, h))}


def _rank_rows(fused: str, shapes: LayerShapes, tp_size: int) -> int:
    """Rows of one rank's fused buffer (what QKVParallelLinear / MergedColumnParallelLinear
    allocate per rank)."""
    if fused == "qkv_proj":
        kv_per_rank = len(kv_heads_of_rank(shapes.num_kv_heads, tp_size, 0))
        return (shapes.num_heads // tp_size + 2 * kv_per_rank) * shapes.head_dim
    return 2 * shapes.intermediate_size // tp_size


def _fill(impl: Any, shapes: LayerShapes, weights: dict, ids: tuple, tp_rank: int = 0,
          tp_size: int = 1) -> tuple[np.ndarray, dict]:
    """A NaN-filled rank buffer with the shards ``ids`` loaded through ``impl.load_stacked``;
    returns it and the slice each call returned."""
    fused = "qkv_proj" if ids[0] in ("q", "k", "v") else "gate_up_proj"
    buf = np.full((_rank_rows(fused, shapes, tp_size), shapes.hidden_size), np.nan)
    returned = {sid: impl.load_stacked(buf, weights[sid], sid, shapes, tp_rank, tp_size)
                for sid in ids}
    return buf, returned


def fuse_checkpoint(impl: Any, weights: dict[str, np.ndarray], shapes: LayerShapes,
                    tp_rank: int = 0, tp_size: int = 1) -> dict[str, np.ndarray]:
    """The production loop around your three functions: every checkpoint tensor renamed by
    ``map_weight_name`` and, when it has a shard id, placed by ``load_stacked`` into its
    parameter's (rank's) fused buffer. Buffers start as NaN, so a row nobody wrote shows."""
    params: dict[str, np.ndarray] = {}
    for name, tensor in weights.items():
        param, shard_id = impl.map_weight_name(name)
        if shard_id is None:
            assert param not in params, f"{param} was produced twice by map_weight_name"
            params[param] = tensor
            continue
        fused = param.split(".")[-2]
        assert fused in ("qkv_proj", "gate_up_proj"), (
            f"map_weight_name({name!r}) gave shard id {shard_id!r} but parameter {param!r}, "
            f"which is not a fused qkv_proj / gate_up_proj")
        if param not in params:
            params[param] = np.full((_rank_rows(fused, shapes, tp_size), shapes.hidden_size),
                                    np.nan, tensor.dtype)
        impl.load_stacked(params[param], tensor, shard_id, shapes, tp_rank, tp_size)
    return params


# -- the course's five tests ------------------------------------------------------------------

def test_name_mapping(impl) -> None:
    cases = {
        "model.layers.3.self_attn.q_proj.weight": ("model.layers.3.self_attn.qkv_proj.weight", "q"),
        "model.layers.3.self_attn.k_proj.weight": ("model.layers.3.self_attn.qkv_proj.weight", "k"),
        "model.layers.3.self_attn.v_proj.weight": ("model.layers.3.self_attn.qkv_proj.weight", "v"),
        "model.layers.17.mlp.gate_proj.weight": ("model.layers.17.mlp.gate_up_proj.weight", 0),
        "model.layers.17.mlp.up_proj.weight": ("model.layers.17.mlp.gate_up_proj.weight", 1),
    }
    for name, expected in cases.items():
        got = impl.map_weight_name(name)
        assert tuple(got) == expected, (
            f"map_weight_name({name!r}) should swap only the projection name, keep the layer "
            f"path and tag the shard: expected {expected}, got {got}")


def test_unstacked_names_pass_through(impl) -> None:
    names = [
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        # already fused (a checkpoint saved by vLLM): "up_proj" is inside, ".up_proj" is not
        "model.layers.0.mlp.gate_up_proj.weight", "model.layers.0.self_attn.qkv_proj.weight",
    ]
    for name in names:
        got = impl.map_weight_name(name)
        assert tuple(got) == (name, None), (
            f"{name!r} is not a stacked shard: it must map to itself with shard id None, got "
            f"{got} (is the match too greedy, e.g. 'up_proj' found inside 'gate_up_proj'?)")


def test_qkv_slices_account_for_gqa(impl) -> None:
    s = impl.qkv_slices(4, 1, 32)
    assert set(s) == {"q", "k", "v"}, f"expected slices for 'q', 'k', 'v', got keys {set(s)}"
    assert all(isinstance(v, slice) and v.step in (None, 1) for v in s.values()), (
        f"each entry must be a contiguous slice, got {s}")
    q, k, v = s["q"], s["k"], s["v"]
    sizes = (q.stop - q.start, k.stop - k.start, v.stop - v.start)
    assert sizes == (128, 32, 32), (
        f"4 query heads x 32 = 128 rows for q, 1 KV head x 32 = 32 rows each for k and v "
        f"(GQA: k/v are narrower), got sizes {sizes} from {s}")
    assert q.start == 0 and q.stop == k.start and k.stop == v.start and v.stop == 192, (
        f"the slices must tile rows 0 .. (4 + 2*1)*32 = 192 in the order q, k, v with no gap "
        f"and no overlap, got {s}")


def test_fused_matmul_equals_separate_projections(impl) -> None:
    w = _toy_weights(TOY)
    fused, _ = _fill(impl, TOY, w, ("q", "k", "v"))
    # Where the attention layer reads them (vLLM's qkv.split([q_size, kv_size, kv_size])).
    s = {"q": slice(0, 128), "k": slice(128, 160), "v": slice(160, 192)}
    assert fused.shape == (192, 64) and not np.isnan(fused).any(), (
        "after loading q, k and v every row of the (192, 64) fused buffer must be written; "
        f"{int(np.isnan(fused).any(axis=1).sum())} rows were left untouched")
    x = _rng(1).standard_normal((5, TOY.hidden_size))
    out = x @ fused.T
    for sid in ("q", "k", "v"):
        assert_close(out[:, s[sid]], x @ w[sid].T, cause="float64-same-order",
                     what=f"slice {sid!r} of the fused output vs the separate {sid}_proj")


def test_shape_mismatch_is_loud(impl) -> None:
    fused = np.zeros((192, 64))
    mha_k = _rng(2).standard_normal((128, 64))  # 4 KV heads' worth: an MHA checkpoint
    why = ("an MHA-width k shard (128 rows) does not fit a GQA config (32 rows of k): the load "
           "must stop, naming both shapes")
    with expect_raises(ValueError, why) as info:
        impl.load_stacked(fused, mha_k, "k", TOY)
    message = str(info.value)
    assert "(128, 64)" in message and "(32, 64)" in message, (
        f"the error must name the shard's shape (128, 64) and the expected (32, 64), got "
        f"{message!r}")
    assert not fused.any(), "a refused shard must not have written anything into the buffer"


# -- beyond the course --------------------------------------------------------------------------

def test_gate_up_halves_follow_shard_ids(impl) -> None:
    w = _toy_weights(TOY)
    fused, returned = _fill(impl, TOY, w, (0, 1))
    assert returned == {0: slice(0, 48), 1: slice(48, 96)}, (
        f"gate (shard 0) owns rows 0:48 and up (shard 1) rows 48:96 of the (96, 64) gate_up "
        f"buffer; load_stacked returned {returned}")
    assert np.array_equal(fused[:48], w[0]) and np.array_equal(fused[48:], w[1]), (
        "gate_up_proj must hold gate_proj's rows then up_proj's rows, unchanged")


def test_a_wrong_shape_is_refused_before_any_write(impl) -> None:
    w = _toy_weights(TOY)
    fused = np.zeros((192, 64))
    one_row = w["k"][:1]  # (1, 64): numpy would broadcast it over all 32 rows of k silently
    with expect_raises(ValueError, "a (1, 64) k shard is not (32, 64); copying it would "
                                   "broadcast one row over the whole slice"):
        impl.load_stacked(fused, one_row, "k", TOY)
    mha_buffer = np.zeros((384, 64))  # sized for 4 KV heads: q would fit, silently
    with expect_raises(ValueError, "a (384, 64) fused buffer is not the (192, 64) this config "
                                   "builds: it was allocated for another model"):
        impl.load_stacked(mha_buffer, w["q"], "q", TOY)
    assert not fused.any() and not mha_buffer.any(), "a refused load must write nothing"


def test_bad_arguments_are_refused(impl) -> None:
    w = _toy_weights(TOY)
    for bad in ("o", 2):
        with expect_raises(ValueError, f"shard id {bad!r} is none of 'q', 'k', 'v', 0, 1"):
            impl.load_stacked(np.zeros((192, 64)), w["q"], bad, TOY)
    with expect_raises(ValueError, "9 query heads cannot be grouped over 2 KV heads"):
        impl.qkv_slices(9, 2, 64)
    with expect_raises(ValueError, "rank 2 does not exist when tp_size is 2"):
        impl.load_stacked(np.zeros((96, 64)), w["q"], "q", TOY, 2, 2)


TP_TOY = LayerShapes(num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=24,
                     hidden_size=16)


@pytest.mark.parametrize("tp_size", [1, 2, 4], ids=lambda tp: f"tp{tp}")
def test_tp_rank_rows_match_mini_vllm_sharding(impl, tp_size: int) -> None:
    """tp 4 with 2 KV heads: each KV head is replicated on two ranks."""
    w = _toy_weights(TP_TOY, seed=3)
    expected_qkv = qkv_shards(w["q"], w["k"], w["v"], 4, 2, tp_size)
    gate, up = column_shards(w[0], tp_size), column_shards(w[1], tp_size)
    for r in range(tp_size):
        qkv, _ = _fill(impl, TP_TOY, w, ("q", "k", "v"), r, tp_size)
        want = np.concatenate(expected_qkv[r])
        assert np.array_equal(qkv, want), (
            f"tp={tp_size} rank {r}: qkv_proj must hold the rank's query heads then its KV "
            f"heads (KV head {list(kv_heads_of_rank(2, tp_size, r))}), as 10-01's sharding "
            f"gives; rows differ at {np.flatnonzero((qkv != want).any(axis=1)).tolist()}")
        gate_up, _ = _fill(impl, TP_TOY, w, (0, 1), r, tp_size)
        assert np.array_equal(gate_up, np.concatenate([gate[r], up[r]])), (
            f"tp={tp_size} rank {r}: gate_up_proj must hold the rank's slice of gate then its "
            f"slice of up (intermediate {24 // tp_size} rows each)")


def test_tp_refuses_heads_that_do_not_split(impl) -> None:
    shapes = replace(TP_TOY, num_heads=6, num_kv_heads=3)
    w = _toy_weights(shapes)
    with expect_raises(ValueError, "6 query heads do not split over 4 ranks"):
        impl.load_stacked(np.zeros((32, 16)), w["q"], "q", shapes, 0, 4)


# -- SmolLM2's real checkpoint ------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol() -> SimpleNamespace:
    from safetensors import safe_open

    model_dir = smollm2_path()
    config = json.loads((model_dir / "config.json").read_text())
    header: dict[str, tuple[int, ...]] = {}
    weights: dict[str, np.ndarray] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():
                header[name] = tuple(f.get_slice(name).get_shape())
                parts = name.split(".")
                if parts[1] != "layers" or int(parts[2]) in LOADED_LAYERS:
                    weights[name] = f.get_tensor(name)
    embed = "model.embed_tokens.weight"
    weights[embed] = np.ascontiguousarray(weights[embed][:VOCAB_ROWS])
    for name, tensor in weights.items():
        assert tensor.dtype == np.float32, f"expected the converted float32 checkpoint: {name}"
    return SimpleNamespace(config=config, shapes=LayerShapes.from_config(config), header=header,
                           weights=weights)


def _truncated(smol: SimpleNamespace) -> dict:
    """SmolLM2 cut to its loaded layers, its first VOCAB_ROWS tokens and a short rotary cache:
    a complete model still, small enough to load twice in a fraction of a second."""
    return {**smol.config, "num_hidden_layers": len(LOADED_LAYERS), "vocab_size": VOCAB_ROWS,
            "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def stock(smol: SimpleNamespace) -> LlamaForCausalLM:
    """The truncated SmolLM2 loaded by mini_vllm's own ``load_weights``."""
    model = LlamaForCausalLM(_truncated(smol))
    model.load_weights(smol.weights.items())
    return model


@needs_smollm2
def test_smollm2_272_tensors_map_onto_182_parameters(impl, smol) -> None:
    mapped = {name: tuple(impl.map_weight_name(name)) for name in smol.header}
    assert len(smol.header) == 272, f"SmolLM2's checkpoint has 272 tensors, read {len(smol.header)}"
    params = {p for p, _ in mapped.values()}
    stock = {n for n, _ in LlamaForCausalLM(smol.config).named_parameters()}
    assert params == stock, (
        f"the 272 names must map onto mini_vllm's (and vLLM's) 182 parameters; unexpected: "
        f"{sorted(params - stock)[:4]}, missing: {sorted(stock - params)[:4]}")
    assert len(params) == 182, f"expected 182 parameters, got {len(params)}"
    shards: dict[str, list] = {}
    for p, sid in mapped.values():
        shards.setdefault(p, []).append(sid)
    for p, ids in shards.items():
        kind = p.split(".")[-2]
        want = {"qkv_proj": ["k", "q", "v"], "gate_up_proj": ["0", "1"]}.get(kind, ["None"])
        assert sorted(map(str, ids)) == want, f"{p}: shard ids {ids}, expected {want}"


@needs_smollm2
def test_smollm2_slices_tile_the_fused_rows(impl, smol) -> None:
    sh = smol.shapes
    s = impl.qkv_slices(sh.num_heads, sh.num_kv_heads, sh.head_dim)
    assert s == {"q": slice(0, 576), "k": slice(576, 768), "v": slice(768, 960)}, (
        f"SmolLM2 (9 heads, 3 KV heads, head_dim 64): q 0:576, k 576:768, v 768:960 of 960 "
        f"rows, got {s}")
    for layer in range(smol.config["num_hidden_layers"]):
        for sid in ("q", "k", "v"):
            name = f"model.layers.{layer}.self_attn.{sid}_proj.weight"
            rows = s[sid].stop - s[sid].start
            assert smol.header[name] == (rows, 576), (
                f"{name}: the checkpoint holds {smol.header[name]}, your slice has {rows} rows")
    w = {0: smol.weights["model.layers.0.mlp.gate_proj.weight"],
         1: smol.weights["model.layers.0.mlp.up_proj.weight"]}
    _, returned = _fill(impl, sh, w, (0, 1))
    assert returned == {0: slice(0, 1536), 1: slice(1536, 3072)}, (
        f"gate_up_proj (3072 x 576): gate 0:1536, up 1536:3072, got {returned}")


@needs_smollm2
def test_smollm2_fused_buffers_hold_the_checkpoint_rows(impl, smol) -> None:
    params = fuse_checkpoint(impl, smol.weights, smol.shapes)
    for layer in LOADED_LAYERS:
        p = f"model.layers.{layer}."
        qkv = params.get(p + "self_attn.qkv_proj.weight")
        gate_up = params.get(p + "mlp.gate_up_proj.weight")
        assert qkv is not None and qkv.shape == (960, 576), (
            f"layer {layer}: expected a (960, 576) qkv_proj, got "
            f"{None if qkv is None else qkv.shape}")
        assert gate_up is not None and gate_up.shape == (3072, 576), (
            f"layer {layer}: expected a (3072, 576) gate_up_proj, got "
            f"{None if gate_up is None else gate_up.shape}")
        want_qkv = np.concatenate([smol.weights[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        want_gu = np.concatenate([smol.weights[p + f"mlp.{x}_proj.weight"] for x in ("gate", "up")])
        assert np.array_equal(qkv, want_qkv), f"layer {layer}: qkv_proj is not [q; k; v]"
        assert np.array_equal(gate_up, want_gu), f"layer {layer}: gate_up_proj is not [gate; up]"


@needs_smollm2
def test_smollm2_fused_projection_equals_separate(impl, smol) -> None:
    params = fuse_checkpoint(impl, smol.weights, smol.shapes)
    s = {"q": slice(0, 576), "k": slice(576, 768), "v": slice(768, 960)}
    x = smol.weights["model.embed_tokens.weight"][[1, 504, 3456, 28, 8000]].astype(np.float64)
    for layer in LOADED_LAYERS:
        p = f"model.layers.{layer}.self_attn."
        out = x @ params[p + "qkv_proj.weight"].astype(np.float64).T
        for sid in "qkv":
            separate = x @ smol.weights[p + f"{sid}_proj.weight"].T.astype(np.float64)
            assert_close(out[:, s[sid]], separate, cause="float64-same-order",
                         what=f"layer {layer} {sid} from the fused matmul")


def _install(model: LlamaForCausalLM, params: dict[str, np.ndarray]) -> None:
    """Copy checkpoint-layout parameters into mini_vllm's Llama (projections are [in, out])."""
    own = dict(model.named_parameters())
    assert set(params) == set(own), (
        f"your loading produced {sorted(set(params) - set(own))[:4]} not in the model and "
        f"missed {sorted(set(own) - set(params))[:4]}")
    for name, value in params.items():
        target = own[name]
        if target.ndim == 2 and name != "model.embed_tokens.weight":
            value = value.T
        assert target.shape == value.shape, f"{name}: {value.shape} does not fit {target.shape}"
        target[...] = value
    model.lm_head[...] = model.model.embed_tokens.T  # tied embeddings


@needs_smollm2
def test_smollm2_logits_through_your_loading_equal_stock(impl, smol, stock) -> None:
    params = fuse_checkpoint(impl, smol.weights, smol.shapes)
    for name, value in params.items():
        assert not np.isnan(value).any(), f"{name}: rows never written by load_stacked"
    mine = LlamaForCausalLM(_truncated(smol))
    _install(mine, params)
    tokens = [1, 504, 3456, 28, 8000, 17]
    got, want = dense_last_logits(mine, tokens), dense_last_logits(stock, tokens)
    assert np.array_equal(got, want), (
        f"SmolLM2's first {len(LOADED_LAYERS)} layers loaded through your mapping must give "
        f"the very logits of mini_vllm's own load; max difference "
        f"{float(np.abs(got - want).max())}")


@needs_smollm2
def test_smollm2_tp3_ranks_get_mini_vllm_shards(impl, smol, stock) -> None:
    """TP 3: each rank 3 query heads and 1 KV head; gate/up 512 rows each."""
    params = fuse_checkpoint(impl, smol.weights, smol.shapes, 0, 3)
    sharded = shard_model(stock, 3)
    for r in range(3):
        params = params if r == 0 else fuse_checkpoint(impl, smol.weights, smol.shapes, r, 3)
        for layer in LOADED_LAYERS:
            p = f"model.layers.{layer}."
            for fused, rows, held in (("self_attn.qkv_proj.weight", 320,
                                       sharded.ranks[r].attn[layer].qkv_proj),
                                      ("mlp.gate_up_proj.weight", 1024,
                                       sharded.ranks[r].mlp[layer].gate_up_proj)):
                got = params[p + fused]
                assert got.shape == (rows, 576), (
                    f"tp=3 rank {r}: {p + fused} should be ({rows}, 576), got {got.shape}")
                assert np.array_equal(got, held.T), (
                    f"tp=3 rank {r}: {p + fused} differs from what mini_vllm's shard_model "
                    f"gives that rank")


@needs_smollm2
def test_smollm2_tp9_replicates_each_kv_head_on_three_ranks(impl, smol) -> None:
    w = {x: smol.weights[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv"}
    want = qkv_shards(w["q"], w["k"], w["v"], 9, 3, 9)
    for r in range(9):
        got, _ = _fill(impl, smol.shapes, w, ("q", "k", "v"), r, 9)
        assert np.array_equal(got, np.concatenate(want[r]).astype(np.float64)), (
            f"tp=9 rank {r}: one query head ({r}) and KV head {r // 3} (3 ranks share each of "
            f"the 3 KV heads)")
    with expect_raises(ValueError, "SmolLM2's 9 query heads do not split over 2 ranks"):
        impl.load_stacked(np.zeros((1, 576)), w["q"], "q", smol.shapes, 0, 2)
