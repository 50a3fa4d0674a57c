"""Qwen2 (mini_vllm.models.qwen2): Llama's hooks plus a q/k/v bias, registered out of tree.

The seeded tiny Qwen2 against a dense float64 reference written here (the textbook Llama with
biased q/k/v), resolved from its ``config.json`` through the registry once registered, through
the unchanged engine (paging, prefix caching, chunked prefill, preemption), and (torch tier)
against transformers' ``Qwen2ForCausalLM`` on the same checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mini_vllm import LLM
from mini_vllm.models import qwen2, registry
from mini_vllm.models.llama import LlamaForCausalLM
from mini_vllm.models.loader import load_model
from mini_vllm.models.tiny_qwen2 import (
    TinyQwen2Spec,
    build_tiny_qwen2,
    tiny_qwen2_config,
    tiny_qwen2_weights,
)
from mini_vllm.tests.builders import (
    assert_caching_chunking_preemption_change_no_token,
    greedy,
)
from mini_vllm.tests.test_llama import (
    F32_RTOL,
    F64_ATOL,
    PROMPT,
    dense_attention,
    dense_swiglu,
    rope_reference,
    run_prompt,
)

PREFIX = "You are a helpful assistant. "
PROMPTS = [PREFIX + q for q in ("Why?", "What is a bias?", "Hi")] + ["S" * 30, "hello world"]
SPEC = TinyQwen2Spec(seed=3)


def dense_qwen2_logits(weights: dict[str, np.ndarray], config: dict,
                       token_ids: Sequence[int]) -> np.ndarray:
    """The textbook float64 Qwen2 on Hugging Face-named weights: logits at every position."""
    w = {name: t.astype(np.float64) for name, t in weights.items()}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, theta = config["head_dim"], config["rope_theta"]
    positions = np.arange(len(token_ids))

    def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + config["rms_norm_eps"]) * weight

    def proj(h: np.ndarray, p: str, n: int) -> np.ndarray:
        return (h @ w[p + ".weight"].T + w[p + ".bias"]).reshape(len(h), n, head_dim)

    x = w["model.embed_tokens.weight"][list(token_ids)]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = proj(h, p + "self_attn.q_proj", heads)
        k = proj(h, p + "self_attn.k_proj", kv_heads)
        v = proj(h, p + "self_attn.v_proj", kv_heads)
        attn = dense_attention(rope_reference(q, positions, theta),
                               rope_reference(k, positions, theta), v)
        x = x + attn.reshape(len(x), -1) @ w[p + "self_attn.o_proj.weight"].T
        x = x + dense_swiglu(rms(x, w[p + "post_attention_layernorm.weight"]), w, p)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(x, w["model.norm.weight"]) @ head.T


@pytest.fixture(scope="module")
def tiny() -> tuple[qwen2.Qwen2ForCausalLM, dict[str, np.ndarray], dict]:
    weights, config = tiny_qwen2_weights(SPEC), tiny_qwen2_config(SPEC)
    rng = np.random.default_rng(0)  # norms of one would hide a norm applied to the wrong tensor
    for name, t in weights.items():
        if name.endswith("norm.weight"):
            t += rng.uniform(-0.5, 0.5, t.shape).astype(t.dtype)
    model = qwen2.Qwen2ForCausalLM(config, dtype=np.float64)
    loaded = model.load_weights(weights.items())
    assert loaded == set(weights), f"load_weights consumed {sorted(set(weights) ^ loaded)} wrongly"
    return model, weights, config


@pytest.fixture
def with_qwen2(monkeypatch) -> None:
    """The registry with Qwen2 registered, restored afterwards."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    qwen2.register()


@pytest.fixture(scope="module")
def tiny_qwen2() -> qwen2.Qwen2ForCausalLM:
    """mini_vllm's seeded tiny Qwen2 (the default spec) in float64, built from its directory."""
    return _load(build_tiny_qwen2(), np.float64)


def _load(model_dir, dtype) -> qwen2.Qwen2ForCausalLM:  # type: ignore[no-untyped-def]
    saved = dict(registry._MODELS)
    qwen2.register()
    try:
        return load_model(model_dir, dtype=dtype)
    finally:
        registry._MODELS.clear()
        registry._MODELS.update(saved)


# -- registry and loading ------------------------------------------------------------------------

def test_qwen2_is_out_of_tree_until_registered(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    registry._MODELS.pop("Qwen2ForCausalLM", None)
    with pytest.raises(ValueError, match="Qwen2ForCausalLM"):
        load_model(build_tiny_qwen2())
    qwen2.register()
    assert registry.resolve_model_cls(["Qwen2ForCausalLM"]) is qwen2.Qwen2ForCausalLM
    model = load_model(build_tiny_qwen2())
    assert isinstance(model, qwen2.Qwen2ForCausalLM) and model.dtype == np.float32


def test_llm_reads_the_architecture_from_config_json(with_qwen2) -> None:
    model_dir = build_tiny_qwen2()
    llm = LLM(model_dir, dtype="float64", block_size=4, kv_cache_memory_gib=0.01)
    assert isinstance(llm.model, qwen2.Qwen2ForCausalLM)
    names = dict(llm.model.named_parameters())
    assert names["model.layers.1.self_attn.qkv_proj.bias"].shape == (16 * 4 + 2 * 16 * 2,)
    assert np.shares_memory(names["model.layers.1.self_attn.qkv_proj.bias"],
                            llm.model.model.layers[1].self_attn.qkv_bias)
    weights = tiny_qwen2_weights(TinyQwen2Spec())
    bias = llm.model.model.layers[0].self_attn.qkv_bias
    assert np.array_equal(bias[64:96], weights["model.layers.0.self_attn.k_proj.bias"]), (
        "k's bias must land in the k slice of the stacked bias")
    got = [o.output_token_ids for o in llm.generate(PROMPTS[:2], greedy(6))]
    assert all(len(o) == 6 for o in got)


def test_loader_names_a_missing_bias(tmp_path, with_qwen2) -> None:
    from safetensors.numpy import save_file

    weights, config = tiny_qwen2_weights(SPEC), tiny_qwen2_config(SPEC)
    del weights["model.layers.1.self_attn.v_proj.bias"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn\.v_proj\.bias"):
        load_model(tmp_path)


def test_bad_configs_and_bias_shapes_are_refused() -> None:
    config = tiny_qwen2_config(SPEC)
    with pytest.raises(ValueError, match="sliding"):
        qwen2.Qwen2ForCausalLM({**config, "use_sliding_window": True})
    model = qwen2.Qwen2ForCausalLM(config)
    with pytest.raises(ValueError, match="shape"):
        model.load_weights([("model.layers.0.self_attn.k_proj.bias", np.zeros(64, np.float32))])


def test_the_llama_part_is_the_tiny_llama_bit_for_bit() -> None:
    from mini_vllm.models.tiny_llama import TinyLlamaSpec, tiny_llama_weights

    qwen = tiny_qwen2_weights(SPEC)
    llama = tiny_llama_weights(TinyLlamaSpec(seed=SPEC.seed))
    assert set(qwen) - set(llama) == {f"model.layers.{i}.self_attn.{p}.bias"
                                      for i in range(2) for p in ("q_proj", "k_proj", "v_proj")}
    assert all(np.array_equal(qwen[n], llama[n]) for n in llama)


# -- the model -----------------------------------------------------------------------------------

def test_model_matches_the_dense_reference(tiny) -> None:
    model, weights, config = tiny
    want = dense_qwen2_logits(weights, config, PROMPT)
    for chunks in (None, [5, 8, 8], [1] * len(PROMPT)):
        diff = np.abs(run_prompt(model, PROMPT, chunks) - want).max()
        assert diff < F64_ATOL, f"prefill in chunks {chunks}: logits differ by {diff:.3g}"


def test_the_bias_matters(tiny) -> None:
    # The same weights without biases are a Llama: Qwen2 must not be equal to it.
    model, weights, config = tiny
    llama = LlamaForCausalLM({**config, "architectures": ["LlamaForCausalLM"]}, np.float64)
    llama.load_weights((n, t) for n, t in weights.items() if not n.endswith(".bias"))
    a, b = run_prompt(model, PROMPT), run_prompt(llama, PROMPT)
    assert np.abs(a - b).max() > 0.1, "the q/k/v biases change nothing: are they applied?"
    zeroed = qwen2.Qwen2ForCausalLM(config, np.float64)
    zeroed.load_weights((n, t * 0 if n.endswith(".bias") else t) for n, t in weights.items())
    assert np.abs(run_prompt(zeroed, PROMPT) - b).max() < F64_ATOL, "zero bias must be Llama"


def test_caching_chunking_and_preemption_change_no_token(tiny_qwen2) -> None:
    assert_caching_chunking_preemption_change_no_token(tiny_qwen2, PROMPTS)


def test_float32_qwen2_is_float32_and_close_to_float64(tiny) -> None:
    _, weights, config = tiny
    model32 = qwen2.Qwen2ForCausalLM(config)
    model32.load_weights(weights.items())
    logits = run_prompt(model32, PROMPT)
    assert logits.dtype == np.float32
    ref = run_prompt(tiny[0], PROMPT)
    assert np.abs(logits - ref).max() / np.abs(ref).max() < F32_RTOL


# -- torch tier: against transformers ------------------------------------------------------------

def test_tiny_qwen2_matches_transformers_float32() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir = build_tiny_qwen2()
    hf = transformers.Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = _load(model_dir, np.float32)
    for ids in (PROMPT, list(b"Qwen2 puts a bias on q, k and v; o has none.")):
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0].numpy()
        got = run_prompt(model, ids)
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < F32_RTOL, f"float32 logits are {rel:.3g} (relative) from transformers'"
