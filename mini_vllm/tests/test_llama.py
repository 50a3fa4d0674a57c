"""The numpy Llama (mini_vllm.models.llama): against a dense per-head reference written here,
through a paged cache in every chunking, and (torch tier) against transformers' Llama.

``PagedBatch`` is the test side of a model runner: per-request block tables drawn shuffled from
one pool, slot mapping, positions, ``query_start_loc``/``seq_lens`` for packed requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from mini_vllm.attention import AttentionMetadata
from mini_vllm.models.llama import LlamaForCausalLM, RotaryEmbedding
from mini_vllm.models.tiny_llama import TinyLlamaSpec, tiny_llama_config, tiny_llama_weights

F64_ATOL = 1e-10
#: float32 against float32 computed in another order: max |diff| over max |logit|.
F32_RTOL = 2e-5

PROMPT = [72, 101, 108, 108, 111, 44, 32, 112, 97, 103, 101, 100, 32, 119, 111, 114, 108, 100,
          33, 10, 83]  # 21 tokens


class PagedBatch:
    """Per-layer paged K/V caches for ``num_requests`` requests whose blocks are scattered
    (shuffled) over one pool; ``step`` runs one packed forward over any of them."""

    def __init__(self, model: LlamaForCausalLM, max_tokens: int, num_requests: int = 1,
                 block_size: int = 4, seed: int = 0) -> None:
        self.model = model
        self.block_size = block_size
        per_request = -(-max_tokens // block_size)
        num_blocks = 1 + num_requests * per_request  # block 0 is the null block, never used
        blocks = np.random.default_rng(seed).permutation(np.arange(1, num_blocks))
        self.block_table = blocks.reshape(num_requests, per_request)
        shape = (num_blocks, block_size, model.num_kv_heads, model.head_dim)
        self.kv_caches = [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
                          for _ in range(model.num_layers)]
        self.num_computed = [0] * num_requests

    def step(self, chunks: dict[int, Sequence[int]]) -> dict[int, np.ndarray]:
        """Feed ``{request: next token ids}`` in one forward; each request's logits per row."""
        reqs = list(chunks)
        starts = np.array([self.num_computed[r] for r in reqs])
        lens = np.array([len(chunks[r]) for r in reqs])
        positions = np.concatenate([np.arange(s, s + n)
                                    for s, n in zip(starts, lens, strict=True)])
        table = self.block_table[reqs]
        row_of_token = np.repeat(np.arange(len(reqs)), lens)
        blocks = table[row_of_token, positions // self.block_size]
        metadata = AttentionMetadata(
            query_start_loc=np.concatenate([[0], np.cumsum(lens)]),
            seq_lens=starts + lens,
            block_table=table,
            slot_mapping=blocks * self.block_size + positions % self.block_size,
            block_size=self.block_size,
        )
        input_ids = np.concatenate([np.asarray(chunks[r], dtype=np.int64) for r in reqs])
        hidden = self.model.forward(input_ids, positions, self.kv_caches, metadata)
        logits = self.model.compute_logits(hidden)
        for r, n in zip(reqs, lens, strict=True):
            self.num_computed[r] += int(n)
        bounds = metadata.query_start_loc
        return {r: logits[bounds[i]:bounds[i + 1]] for i, r in enumerate(reqs)}


def run_prompt(model: LlamaForCausalLM, token_ids: Sequence[int],
               chunk_sizes: Sequence[int] | None = None, block_size: int = 4) -> np.ndarray:
    """Logits at every position of one request, prefilled in ``chunk_sizes`` (default: whole)."""
    paged = PagedBatch(model, len(token_ids), block_size=block_size)
    rows, start = [], 0
    for size in chunk_sizes or [len(token_ids)]:
        rows.append(paged.step({0: token_ids[start:start + size]})[0])
        start += size
    assert start == len(token_ids), "chunk sizes must add up to the prompt"
    return np.concatenate(rows)


def greedy_decode(model: LlamaForCausalLM, prompt: Sequence[int], steps: int) -> list[int]:
    """Prefill, then ``steps`` one-token decode steps taking the argmax; the tokens produced."""
    paged = PagedBatch(model, len(prompt) + steps)
    token = int(paged.step({0: prompt})[0][-1].argmax())
    out = [token]
    for _ in range(steps - 1):
        token = int(paged.step({0: [token]})[0][-1].argmax())
        out.append(token)
    return out


# -- a dense reference, one head at a time ----------------------------------------------------

def rope_reference(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate-half RoPE as complex multiplication: dims ``i`` and ``i + d/2`` are the real and
    imaginary parts of one number, turned by ``position * theta**(-2i/d)``."""
    half = x.shape[-1] // 2
    angles = positions[:, None] * theta ** (-np.arange(half) * 2.0 / x.shape[-1])
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * angles)[:, None, :]
    return np.concatenate([z.real, z.imag], axis=-1)


def dense_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal attention of ``q [T, H, D]`` over ``k, v [T, KVH, D]``, one head at a time:
    query head ``h`` reads KV head ``h // (H // KVH)``."""
    num_tokens, num_heads, head_dim = q.shape
    group = num_heads // k.shape[1]
    causal = np.tril(np.ones((num_tokens, num_tokens), dtype=bool))
    out = np.empty_like(q)
    for h in range(num_heads):
        scores = q[:, h] @ k[:, h // group].T / np.sqrt(head_dim)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        out[:, h] = probs @ v[:, h // group]
    return out


def dense_swiglu(h: np.ndarray, w: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Llama's MLP on the layer ``prefix``'s Hugging Face-named weights."""
    gate = h @ w[prefix + "mlp.gate_proj.weight"].T
    return (gate / (1 + np.exp(-gate)) * (h @ w[prefix + "mlp.up_proj.weight"].T)) \
        @ w[prefix + "mlp.down_proj.weight"].T


def dense_llama_logits(weights: dict[str, np.ndarray], config: dict, token_ids: Sequence[int],
                       mlp: Callable[[np.ndarray, dict[str, np.ndarray], str], np.ndarray]
                       = dense_swiglu) -> np.ndarray:
    """The textbook float64 Llama on Hugging Face-named weights: logits at every position.
    ``mlp(h, weights, "model.layers.{i}.")`` is each layer's MLP (Mixtral's test swaps it)."""
    w = {name: t.astype(np.float64) for name, t in weights.items()}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, theta = config["head_dim"], config["rope_theta"]
    positions = np.arange(len(token_ids))

    def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + config["rms_norm_eps"]) * weight

    x = w["model.embed_tokens.weight"][list(token_ids)]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(len(x), heads, head_dim)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(len(x), kv_heads, head_dim)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(len(x), kv_heads, head_dim)
        attn = dense_attention(rope_reference(q, positions, theta),
                               rope_reference(k, positions, theta), v)
        x = x + attn.reshape(len(x), -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        x = x + mlp(h, w, p)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(x, w["model.norm.weight"]) @ head.T


def build_model(spec: TinyLlamaSpec, dtype: type = np.float64
                ) -> tuple[LlamaForCausalLM, dict[str, np.ndarray], dict]:
    """A tiny Llama built in memory (no files): the model, its weights, its config."""
    weights, config = tiny_llama_weights(spec), tiny_llama_config(spec)
    model = LlamaForCausalLM(config, dtype=dtype)
    loaded = model.load_weights(weights.items())
    assert loaded == set(weights), f"load_weights consumed {sorted(set(weights) ^ loaded)} wrongly"
    return model, weights, config


# Norms of one would hide a norm weight applied to the wrong tensor; draw them too.
TINY = TinyLlamaSpec(seed=3)
GQA3 = TinyLlamaSpec(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, seed=4)


def _jitter_norms(weights: dict[str, np.ndarray], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, t in weights.items():
        if name.endswith("norm.weight"):
            t += rng.uniform(-0.5, 0.5, t.shape).astype(t.dtype)


@pytest.fixture(scope="module")
def tiny() -> tuple[LlamaForCausalLM, dict[str, np.ndarray], dict]:
    weights, config = tiny_llama_weights(TINY), tiny_llama_config(TINY)
    _jitter_norms(weights, 0)
    model = LlamaForCausalLM(config, dtype=np.float64)
    model.load_weights(weights.items())
    return model, weights, config


# -- core tier -----------------------------------------------------------------------------------

def test_rope_matches_complex_rotation() -> None:
    rope = RotaryEmbedding(head_dim=16, max_position=5000, base=100000.0, dtype=np.float64)
    rng = np.random.default_rng(0)
    positions = np.array([0, 1, 7, 300, 4999, 2])
    x = rng.standard_normal((len(positions), 3, 16))
    got = rope(positions, x)
    want = rope_reference(x, positions.astype(np.float64), 100000.0)
    assert np.abs(got - want).max() < 1e-12, "RoPE differs from rotate-half complex rotation"
    assert np.array_equal(got[0], x[0]), "position 0 must leave q/k unchanged"


def test_rope_scores_depend_on_relative_position_only() -> None:
    rope = RotaryEmbedding(head_dim=8, max_position=100, base=10000.0, dtype=np.float64)
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 1, 1, 8))
    scores = [float(rope(np.array([m + 5]), q).ravel() @ rope(np.array([m]), k).ravel())
              for m in (0, 17, 60)]
    assert np.ptp(scores) < 1e-12, f"q(m+5).k(m) should not depend on m: {scores}"


def test_float32_rope_cache_is_float32_and_close() -> None:
    rope32 = RotaryEmbedding(64, 8192, 100000.0, np.float32)
    rope64 = RotaryEmbedding(64, 8192, 100000.0, np.float64)
    assert rope32.cos_sin_cache.dtype == np.float32
    assert np.abs(rope32.cos_sin_cache - rope64.cos_sin_cache).max() < 1e-7, \
        "the float32 cache should be the float64 one rounded once"


@pytest.mark.parametrize("where", ["rope_parameters", "top_level"])
def test_rope_theta_is_read_from_either_config_place(where: str) -> None:
    """transformers 5 writes ``rope_parameters.rope_theta`` only (SmolLM2's config); older
    configs a top-level ``rope_theta``."""
    config = tiny_llama_config(TinyLlamaSpec())
    del config["rope_theta"], config["rope_parameters"]
    if where == "top_level":
        config["rope_theta"] = 100000.0
    else:
        config["rope_parameters"] = {"rope_theta": 100000.0, "rope_type": "default"}
    rope = LlamaForCausalLM(config).model.layers[0].self_attn.rotary_emb
    want = RotaryEmbedding(rope.head_dim, len(rope.cos_sin_cache), 100000.0, np.float32)
    assert np.array_equal(rope.cos_sin_cache, want.cos_sin_cache), f"{where}: theta not read"


def test_gqa_attention_layer_matches_dense_per_head() -> None:
    """Six query heads over two KV heads, prefilled in two chunks through shuffled blocks."""
    model, weights, config = build_model(GQA3)
    attn = model.model.layers[0].self_attn
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((13, config["hidden_size"]))
    positions = np.arange(13)

    def proj(name: str, heads: int) -> np.ndarray:
        return (hidden @ weights[f"model.layers.0.self_attn.{name}.weight"].T.astype(np.float64)
                ).reshape(13, heads, config["head_dim"])

    q = rope_reference(proj("q_proj", 6), positions, config["rope_theta"])
    k = rope_reference(proj("k_proj", 2), positions, config["rope_theta"])
    want = dense_attention(q, k, proj("v_proj", 2)).reshape(13, -1) \
        @ weights["model.layers.0.self_attn.o_proj.weight"].T

    paged = PagedBatch(model, 13, block_size=4, seed=5)
    got = []
    for chunk in (slice(0, 6), slice(6, 13)):
        pos = positions[chunk]
        blocks = paged.block_table[0, pos // 4]
        metadata = AttentionMetadata(np.array([0, len(pos)]), np.array([pos[-1] + 1]),
                                     paged.block_table, blocks * 4 + pos % 4, 4)
        got.append(attn(pos, hidden[chunk], paged.kv_caches[0], metadata))
    diff = np.abs(np.concatenate(got) - want).max()
    assert diff < F64_ATOL, f"GQA attention differs from the per-head reference by {diff:.3g}"


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_model_matches_dense_reference(tied: bool) -> None:
    spec = TinyLlamaSpec(tie_word_embeddings=tied, rope_theta=100000.0 if tied else 10000.0,
                         seed=6)
    model, weights, config = build_model(spec)
    want = dense_llama_logits(weights, config, PROMPT)
    got = run_prompt(model, PROMPT)
    diff = np.abs(got - want).max()
    assert diff < F64_ATOL, f"logits differ from the dense reference by up to {diff:.3g}"


def test_norm_weights_are_applied(tiny) -> None:
    model, weights, config = tiny
    diff = np.abs(run_prompt(model, PROMPT) - dense_llama_logits(weights, config, PROMPT)).max()
    assert diff < F64_ATOL, f"with non-unit norm weights the logits differ by {diff:.3g}"


def test_paged_prefill_whole_chunked_and_token_by_token_agree(tiny) -> None:
    model = tiny[0]
    whole = run_prompt(model, PROMPT)[-1]
    for chunks in ([5, 8, 8], [3] * 7, [1] * len(PROMPT)):
        diff = np.abs(run_prompt(model, PROMPT, chunks)[-1] - whole).max()
        assert diff < F64_ATOL, f"prefill in chunks {chunks} moves the last logits by {diff:.3g}"
    per_token = run_prompt(model, PROMPT, [1] * len(PROMPT))
    diff = np.abs(per_token - run_prompt(model, PROMPT)).max()
    assert diff < F64_ATOL, f"token-by-token logits differ from the whole prefill by {diff:.3g}"


def test_block_size_does_not_matter(tiny) -> None:
    model = tiny[0]
    a, b = run_prompt(model, PROMPT, block_size=1), run_prompt(model, PROMPT, block_size=16)
    assert np.abs(a - b).max() < F64_ATOL, "block size changed the logits"


def test_packed_requests_equal_each_run_alone(tiny) -> None:
    model = tiny[0]
    other = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 250]
    alone_a, alone_b = run_prompt(model, PROMPT), run_prompt(model, other)

    batch = PagedBatch(model, max_tokens=len(PROMPT), num_requests=2, seed=11)
    first = batch.step({0: PROMPT[:6], 1: other[:4]})          # two prefill chunks
    second = batch.step({1: other[4:5], 0: PROMPT[6:]})        # a decode beside a prefill
    third = batch.step({1: other[5:]})                         # the rest of the second
    got_a = np.concatenate([first[0], second[0]])
    got_b = np.concatenate([first[1], second[1], third[1]])
    assert np.abs(got_a - alone_a).max() < F64_ATOL, "request 0 changed when batched"
    assert np.abs(got_b - alone_b).max() < F64_ATOL, "request 1 changed when batched"

    decodes = batch.step({0: [5], 1: [6]})                     # two decodes at once
    alone = PagedBatch(model, max_tokens=len(PROMPT))
    alone.step({0: PROMPT})
    diff = np.abs(decodes[0] - alone.step({0: [5]})[0]).max()
    assert diff < F64_ATOL, f"a batched decode differs from the same decode alone by {diff:.3g}"


def test_float32_model_is_float32_throughout_and_close_to_float64(tiny) -> None:
    _, weights, config = tiny
    model32 = LlamaForCausalLM(config)
    model32.load_weights(weights.items())
    assert model32.dtype == np.float32
    wrong = [n for n, p in model32.named_parameters() if p.dtype != np.float32]
    assert not wrong, f"parameters not in float32: {wrong}"
    logits = run_prompt(model32, PROMPT)
    assert logits.dtype == np.float32, f"float32 model gave {logits.dtype} logits"
    ref = run_prompt(tiny[0], PROMPT)
    rel = np.abs(logits - ref).max() / np.abs(ref).max()
    assert rel < F32_RTOL, f"float32 logits are {rel:.3g} (relative) from float64"


def test_parameters_use_upstream_names_and_fused_shapes(tiny) -> None:
    model, _, config = tiny
    params = dict(model.named_parameters())
    h, inter = config["hidden_size"], config["intermediate_size"]
    qkv = (config["num_attention_heads"] + 2 * config["num_key_value_heads"]) * config["head_dim"]
    assert params["model.layers.1.self_attn.qkv_proj.weight"].shape == (h, qkv)
    assert params["model.layers.0.mlp.gate_up_proj.weight"].shape == (h, 2 * inter)
    assert "lm_head.weight" in params and "model.norm.weight" in params
    assert not any("q_proj" in n or "gate_proj" in n for n in params), "unfused names listed"
    assert model.max_model_len == config["max_position_embeddings"]


def test_tied_head_is_the_embedding_and_not_a_parameter() -> None:
    model, weights, _ = build_model(TinyLlamaSpec(tie_word_embeddings=True))
    assert "lm_head.weight" not in dict(model.named_parameters())
    np.testing.assert_array_equal(model.lm_head.T, weights["model.embed_tokens.weight"])


def test_position_past_max_model_len_is_refused() -> None:
    model, _, _ = build_model(TinyLlamaSpec(max_position_embeddings=8))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        run_prompt(model, PROMPT[:9])


def test_unsupported_configs_are_refused() -> None:
    config = tiny_llama_config(TINY)
    for change, pattern in [({"hidden_act": "gelu"}, "hidden_act"),
                            ({"attention_bias": True}, "attention_bias"),
                            ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0}},
                             "rope_type"),
                            ({"num_key_value_heads": 3}, "multiple")]:
        with pytest.raises(ValueError, match=pattern):
            LlamaForCausalLM({**config, **change})
    with pytest.raises(ValueError, match="float32 or float64"):
        LlamaForCausalLM(config, dtype=np.float16)


# -- torch tier: against transformers ------------------------------------------------------------

def _transformers_logits(model_dir, prompts: Sequence[Sequence[int]], dtype: str
                         ) -> list[np.ndarray]:
    """transformers' ``LlamaForCausalLM`` from ``model_dir`` in ``dtype``: logits per prompt."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    with torch.no_grad():
        return [hf(torch.tensor([list(ids)])).logits[0].numpy() for ids in prompts]


@pytest.fixture
def transformers_float64(monkeypatch):
    """transformers' Llama with its float32 islands removed, so that float64 means float64.

    Its RMSNorm upcasts to float32 (a no-op for float16/bf16 models, a downcast for float64) and
    its rotary embedding computes cos/sin in float32 from a float32 ``inv_freq``; both leave
    ~1e-7 errors. Patched here to do the same arithmetic in the input's dtype.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    def rms_norm(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    def rotary(self, x, position_ids):
        theta = self.config.rope_parameters["rope_theta"]
        dim = 2 * self.inv_freq.shape[0]
        inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", rotary)


TRANSFORMERS_SPECS = {
    "untied": TinyLlamaSpec(),
    "tied": TinyLlamaSpec(tie_word_embeddings=True),
    "theta100k": TinyLlamaSpec(rope_theta=100000.0),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS_SPECS))
def test_tiny_matches_transformers_float32(name: str) -> None:
    pytest.importorskip("transformers")
    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_llama import build_tiny_llama

    model_dir = build_tiny_llama(TRANSFORMERS_SPECS[name])
    [want] = _transformers_logits(model_dir, [PROMPT], "float32")
    got = run_prompt(load_model(model_dir), PROMPT)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < F32_RTOL, f"{name}: float32 logits are {rel:.3g} (relative) from transformers'"


@pytest.mark.parametrize("name", list(TRANSFORMERS_SPECS))
def test_tiny_matches_transformers_float64(name: str, transformers_float64) -> None:
    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_llama import build_tiny_llama

    model_dir = build_tiny_llama(TRANSFORMERS_SPECS[name])
    [want] = _transformers_logits(model_dir, [PROMPT], "float64")
    diff = np.abs(run_prompt(load_model(model_dir, np.float64), PROMPT) - want).max()
    assert diff < F64_ATOL, f"{name}: float64 logits differ from transformers' by {diff:.3g}"


SMOLLM2_PROMPTS = ["The capital of France is", "def fibonacci(n):",
                   "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]


def test_smollm2_matches_transformers_float32() -> None:
    pytest.importorskip("transformers")
    from pytest_vllm_katas.live.models import (
        smollm2_available,
        smollm2_missing_reason,
        smollm2_path,
    )

    if not smollm2_available():
        pytest.skip(smollm2_missing_reason())
    from tokenizers import Tokenizer

    from mini_vllm.models.loader import load_model

    model_dir = smollm2_path()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    prompts = [tokenizer.encode(text).ids for text in SMOLLM2_PROMPTS]
    model = load_model(model_dir)
    wanted = _transformers_logits(model_dir, prompts, "float32")
    for text, ids, want in zip(SMOLLM2_PROMPTS, prompts, wanted, strict=True):
        got = run_prompt(model, ids, block_size=16)
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < F32_RTOL, f"{text!r}: logits are {rel:.3g} (relative) from transformers'"
