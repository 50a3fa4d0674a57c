"""The mixture of experts (mini_vllm.layers.fused_moe, mini_vllm.models.mixtral): router top-k,
the expert-sorted layout, grouped experts against a per-token loop, the seeded tiny Mixtral
against a dense per-token reference written here, through the unchanged engine (paging, prefix
caching, chunked prefill, preemption), and (torch tier) against transformers' Mixtral.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mini_vllm import LLMEngine
from mini_vllm.layers.fused_moe import (
    FusedMoE,
    fused_experts,
    fused_topk,
    moe_align_block_size,
    swiglu_expert,
)
from mini_vllm.models.loader import load_model
from mini_vllm.models.mixtral import MixtralForCausalLM
from mini_vllm.models.registry import resolve_model_cls
from mini_vllm.models.tiny_mixtral import (
    TinyMixtralSpec,
    build_tiny_mixtral,
    tiny_mixtral_config,
    tiny_mixtral_weights,
)
from mini_vllm.tests.builders import (
    assert_caching_chunking_preemption_change_no_token,
    greedy,
    output_ids,
)
from mini_vllm.tests.test_llama import (
    F32_RTOL,
    F64_ATOL,
    PROMPT,
    dense_llama_logits,
    run_prompt,
)
from pytest_vllm_katas.invariants import assert_same_outputs

PREFIX = "You are a helpful assistant. "
PROMPTS = [PREFIX + q for q in ("Why?", "What is MoE?", "Hi")] + ["S" * 30, "hello world"]


# -- a dense per-token reference -----------------------------------------------------------------

def dense_moe(h: np.ndarray, w: dict[str, np.ndarray], prefix: str, top_k: int) -> np.ndarray:
    """Mixtral's MoE one token at a time: softmax over all experts, top-k, renormalise, weighted
    sum of the chosen SwiGLU experts."""
    out = np.zeros_like(h)
    gate = w[prefix + "gate.weight"]
    for t, x in enumerate(h):
        logits = gate @ x
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        chosen = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[:top_k]
        total = sum(probs[e] for e in chosen)
        for e in chosen:
            p = f"{prefix}experts.{e}."
            g = w[p + "w1.weight"] @ x
            y = w[p + "w2.weight"] @ (g / (1 + np.exp(-g)) * (w[p + "w3.weight"] @ x))
            out[t] += probs[e] / total * y
    return out


def dense_mixtral_logits(weights: dict[str, np.ndarray], config: dict,
                         token_ids: Sequence[int]) -> np.ndarray:
    """The textbook float64 Mixtral on Hugging Face-named weights: logits at every position
    (the dense Llama reference with :func:`dense_moe` as each layer's MLP)."""
    top_k = config["num_experts_per_tok"]
    return dense_llama_logits(weights, config, token_ids, mlp=lambda h, w, p: dense_moe(
        h, w, p + "block_sparse_moe.", top_k))


def dense_greedy(weights: dict[str, np.ndarray], config: dict, prompt: Sequence[int],
                 max_tokens: int) -> list[int]:
    """No cache at all: the whole sequence recomputed by the dense reference for every token."""
    tokens, out = list(prompt), []
    for _ in range(max_tokens):
        token = int(np.argmax(dense_mixtral_logits(weights, config, tokens)[-1]))
        out.append(token)
        tokens.append(token)
    return out


SPEC = TinyMixtralSpec(seed=3)


@pytest.fixture(scope="module")
def tiny() -> tuple[MixtralForCausalLM, dict[str, np.ndarray], dict]:
    weights, config = tiny_mixtral_weights(SPEC), tiny_mixtral_config(SPEC)
    rng = np.random.default_rng(0)  # norms of one would hide a norm applied to the wrong tensor
    for name, t in weights.items():
        if name.endswith("norm.weight"):
            t += rng.uniform(-0.5, 0.5, t.shape).astype(t.dtype)
    model = MixtralForCausalLM(config, dtype=np.float64)
    loaded = model.load_weights(weights.items())
    assert loaded == set(weights), f"load_weights consumed {sorted(set(weights) ^ loaded)} wrongly"
    return model, weights, config


@pytest.fixture(scope="module")
def tiny_mixtral() -> MixtralForCausalLM:
    """mini_vllm's seeded tiny Mixtral (the default spec) in float64, from its checkpoint."""
    return load_model(build_tiny_mixtral(), dtype=np.float64)


# -- the router ----------------------------------------------------------------------------------

def test_fused_topk_is_softmax_topk_renormalised() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, 4.0, 4.5]])
    weights, ids = fused_topk(logits, 2)
    assert ids.tolist() == [[1, 2], [3, 2]], f"top-2 by descending weight, got {ids.tolist()}"
    assert ids.dtype == np.int64
    # Renormalised softmax over all experts == softmax over the selected logits only.
    want = np.array([[np.exp(3) / (np.exp(3) + np.exp(2)), np.exp(2) / (np.exp(3) + np.exp(2))],
                     [1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(0.5))]])
    assert np.abs(weights - want).max() < 1e-15
    raw, _ = fused_topk(logits, 2, renormalize=False)
    assert np.all(raw.sum(axis=1) < 1), "without renormalise the kept mass is below one"


def test_fused_topk_breaks_ties_towards_the_lower_expert_id() -> None:
    weights, ids = fused_topk(np.array([[0.0, 2.0, 1.0, 2.0, 2.0]]), 2)
    assert ids.tolist() == [[1, 3]], f"of three equal logits, ids 1 and 3 first, got {ids}"
    assert weights[0, 0] == weights[0, 1] == 0.5


def test_fused_topk_is_stable_for_huge_logits_and_checks_k() -> None:
    weights, ids = fused_topk(np.array([[1000.0, 999.0, -1000.0]]), 2)
    assert np.all(np.isfinite(weights)) and ids.tolist() == [[0, 1]]
    for k in (0, 4):
        with pytest.raises(ValueError, match="topk"):
            fused_topk(np.zeros((2, 3)), k)


# -- the expert-sorted layout --------------------------------------------------------------------

def test_moe_align_block_size_sorts_and_pads_per_expert() -> None:
    topk_ids = np.array([[2, 0], [2, 3], [0, 2]])          # flat: 2 0 2 3 0 2
    sorted_ids, expert_ids, total = moe_align_block_size(topk_ids, 4, num_experts=5)
    pad = topk_ids.size
    # expert 0: flat 1, 4 (+2 pad); expert 2: flat 0, 2, 5 (+1); expert 3: flat 3 (+3).
    assert sorted_ids.tolist() == [1, 4, pad, pad, 0, 2, 5, pad, 3, pad, pad, pad]
    assert expert_ids.tolist() == [0, 2, 3], "one entry per block; empty experts get none"
    assert total == 12


def test_moe_align_block_size_conserves_every_assignment() -> None:
    rng = np.random.default_rng(1)
    topk_ids = rng.integers(0, 8, size=(37, 2))
    for block_size in (1, 3, 16):
        sorted_ids, expert_ids, total = moe_align_block_size(topk_ids, block_size, 8)
        real = sorted_ids[sorted_ids < topk_ids.size]
        assert sorted(real.tolist()) == list(range(topk_ids.size)), "each assignment exactly once"
        assert total % block_size == 0 and len(expert_ids) == total // block_size
        block_expert = np.repeat(expert_ids, block_size)
        assert np.array_equal(topk_ids.reshape(-1)[real], block_expert[sorted_ids < topk_ids.size])
        assert np.all(np.diff(expert_ids) >= 0), "blocks are expert-major"
    with pytest.raises(ValueError, match="topk_ids"):
        moe_align_block_size(np.array([[0, 8]]), 4, 8)


def test_fused_experts_equal_a_per_token_loop_even_with_a_duplicate_expert() -> None:
    rng = np.random.default_rng(2)
    layer = FusedMoE(num_experts=4, top_k=2, hidden_size=6, intermediate_size=5, dtype=np.float64)
    layer.w13_weight[...] = rng.standard_normal(layer.w13_weight.shape)
    layer.w2_weight[...] = rng.standard_normal(layer.w2_weight.shape)
    x = rng.standard_normal((7, 6))
    topk_ids = rng.integers(0, 4, size=(7, 2))
    topk_ids[3] = [1, 1]                                   # one token, one expert, twice
    topk_weights = rng.uniform(0.1, 1.0, size=(7, 2))
    want = np.zeros_like(x)
    for t in range(7):
        for j in range(2):
            e = topk_ids[t, j]
            want[t] += topk_weights[t, j] * swiglu_expert(x[t:t + 1], layer.w13_weight[e],
                                                          layer.w2_weight[e])[0]
    for block_size in (1, 4):
        got = fused_experts(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids,
                            block_size)
        assert np.abs(got - want).max() < 1e-12, f"block_size {block_size}: grouped != loop"


# -- the model -----------------------------------------------------------------------------------

def test_registry_and_loader_build_a_mixtral(tiny_mixtral) -> None:
    assert resolve_model_cls(["MixtralForCausalLM"]) is MixtralForCausalLM
    assert isinstance(tiny_mixtral, MixtralForCausalLM) and tiny_mixtral.dtype == np.float64
    names = dict(tiny_mixtral.named_parameters())
    assert names["model.layers.1.block_sparse_moe.gate.weight"].shape == (64, 8)
    assert names["model.layers.0.block_sparse_moe.experts.7.w13.weight"].shape == (64, 128)
    moe = tiny_mixtral.moe_layers[0].experts
    assert np.shares_memory(names["model.layers.0.block_sparse_moe.experts.7.w2.weight"],
                            moe.w2_weight), "per-expert parameters are views of the stack"


def test_loader_names_a_missing_expert_tensor(tmp_path) -> None:
    from safetensors.numpy import save_file

    weights, config = tiny_mixtral_weights(SPEC), tiny_mixtral_config(SPEC)
    del weights["model.layers.1.block_sparse_moe.experts.5.w3.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    with pytest.raises(ValueError, match=r"experts\.5\.w3"):
        load_model(tmp_path)


def test_bad_expert_tensors_are_refused() -> None:
    model = MixtralForCausalLM(tiny_mixtral_config(SPEC))
    for name, shape, pattern in [
            ("model.layers.0.block_sparse_moe.experts.8.w1.weight", (64, 64), "out of range"),
            ("model.layers.0.block_sparse_moe.experts.0.w1.weight", (64, 65), "shape"),
            ("model.layers.0.block_sparse_moe.experts.0.w4.weight", (64, 64), "unknown"),
            ("model.layers.5.block_sparse_moe.gate.weight", (8, 64), "unknown")]:
        with pytest.raises(ValueError, match=pattern):
            model.load_weights([(name, np.zeros(shape, np.float32))])
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MixtralForCausalLM({**tiny_mixtral_config(SPEC), "num_experts_per_tok": 9})


def test_model_matches_the_dense_per_token_reference(tiny) -> None:
    model, weights, config = tiny
    want = dense_mixtral_logits(weights, config, PROMPT)
    for chunks in (None, [5, 8, 8], [1] * len(PROMPT)):
        diff = np.abs(run_prompt(model, PROMPT, chunks) - want).max()
        assert diff < F64_ATOL, f"prefill in chunks {chunks}: logits differ by {diff:.3g}"


def test_engine_greedy_tokens_equal_the_dense_reference(tiny_mixtral) -> None:
    weights, config = tiny_mixtral_weights(TinyMixtralSpec()), tiny_mixtral_config(
        TinyMixtralSpec())
    prompts = PROMPTS[:2] + PROMPTS[-1:]
    engine = LLMEngine(model=tiny_mixtral, block_size=4, long_prefill_token_threshold=5,
                       max_num_batched_tokens=12)
    got = output_ids(engine, prompts, greedy(6))
    expected = [dense_greedy(weights, config, list(p.encode()), 6) for p in prompts]
    assert_same_outputs(expected, got, labels=("dense per-token reference", "paged engine"))


def test_caching_chunking_and_preemption_change_no_token(tiny_mixtral) -> None:
    assert_caching_chunking_preemption_change_no_token(tiny_mixtral, PROMPTS)


def test_set_moe_impl_drives_every_layer_and_restores_the_default(tiny_mixtral) -> None:
    calls = {"route": 0, "forward": 0}

    def route(x, w_gate, k):  # type: ignore[no-untyped-def]
        calls["route"] += 1
        weights, ids = fused_topk(x @ w_gate.T, k)
        return ids, weights

    def forward(x, experts, topk_ids, topk_weights, expert_fn):  # type: ignore[no-untyped-def]
        calls["forward"] += 1
        out = np.zeros_like(x)
        for t, (ids, ws) in enumerate(zip(topk_ids, topk_weights, strict=True)):
            for e, w in zip(ids, ws, strict=True):
                out[t] += w * expert_fn(x[t:t + 1], *experts[e])[0]
        return out

    stock = output_ids(LLMEngine(model=tiny_mixtral, block_size=4), PROMPTS[:2], greedy(5))
    tiny_mixtral.set_moe_impl(route=route, moe_forward=forward)
    try:
        driven = output_ids(LLMEngine(model=tiny_mixtral, block_size=4), PROMPTS[:2], greedy(5))
        assert calls["route"] == calls["forward"] > 0
        assert calls["route"] % tiny_mixtral.num_layers == 0, "every layer routes every step"
        tiny_mixtral.set_moe_impl(route=lambda x, w, k: (np.zeros((len(x), 3), int),
                                                         np.ones((len(x), 3))))
        with pytest.raises(ValueError, match="shape"):
            run_prompt(tiny_mixtral, PROMPT[:3])
    finally:
        tiny_mixtral.set_moe_impl()
    assert_same_outputs(stock, driven, labels=("stock MoE", "injected MoE"))
    assert all(m.route_fn is None and m.moe_forward_fn is None for m in tiny_mixtral.moe_layers)


def test_float32_mixtral_is_float32_and_close_to_float64(tiny) -> None:
    _, weights, config = tiny
    model32 = MixtralForCausalLM(config)
    model32.load_weights(weights.items())
    logits = run_prompt(model32, PROMPT)
    assert logits.dtype == np.float32
    ref = run_prompt(tiny[0], PROMPT)
    assert np.abs(logits - ref).max() / np.abs(ref).max() < F32_RTOL


# -- torch tier: against transformers ------------------------------------------------------------

def test_tiny_mixtral_matches_transformers_float32() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir = build_tiny_mixtral()
    # transformers 5 runs experts with torch's grouped_mm by default; "eager" is its plain loop.
    hf = transformers.MixtralForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                         experts_implementation="eager")
    prompts = [PROMPT, list(b"The mixture of experts routes each token to two of eight.")]
    model = load_model(model_dir)
    for ids in prompts:
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0].numpy()
        got = run_prompt(model, ids)
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < F32_RTOL, f"float32 logits are {rel:.3g} (relative) from transformers'"
