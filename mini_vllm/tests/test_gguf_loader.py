"""The numpy GGUF converter on a tiny synthetic Llama GGUF written with ``gguf.GGUFWriter``.

Known weights go in (Q and K rows permuted the way llama.cpp's converter permutes them); the
Hugging Face directory that comes out must hold exactly those weights under Hugging Face's names,
a config read from the metadata, and a tokenizer that round-trips. Bad files are refused with one
ValueError naming what is wrong, and leave nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from safetensors.numpy import load_file  # noqa: E402

from mini_vllm.models.cache import MARKER  # noqa: E402
from mini_vllm.models.gguf_loader import convert_gguf, unpermute_rope_rows  # noqa: E402
from mini_vllm.tokenizer import HFTokenizer, bytes_to_unicode, get_tokenizer  # noqa: E402

HIDDEN, HEADS, KV_HEADS, LAYERS, INTER = 64, 4, 2, 2, 128
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "he ll"]
TOKENS = SPECIALS + list(bytes_to_unicode().values()) + ["he", "ll", "hell"]
VOCAB = len(TOKENS)
BOS, EOS, PAD = 1, 2, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Quantized to Q8_0 with a scale of exactly 2**-7, so dequantizing gives these values back.
Q8_TENSOR = "blk.1.ffn_down.weight"


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``convert_hf_to_gguf.py: LlamaModel.permute``, verbatim in numpy."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def hf_weights(tied: bool) -> dict[str, np.ndarray]:
    """Known Hugging Face weights, seeded; the Q8_0 tensor is on its exact grid."""
    rng = np.random.default_rng(7)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    w = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN), "model.norm.weight": normal(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = normal(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = normal(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * HEAD_DIM)
        w[p + "post_attention_layernorm.weight"] = normal(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = normal(INTER, HIDDEN)
        w[p + "mlp.up_proj.weight"] = normal(INTER, HIDDEN)
        w[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTER)
    grid = rng.integers(-127, 128, size=(HIDDEN, INTER)).astype(np.float32)
    grid[:, ::32] = 127  # every 32-wide block holds 127, so its scale is exactly 1/128
    w["model.layers.1.mlp.down_proj.weight"] = grid / 128
    if not tied:
        w["lm_head.weight"] = normal(VOCAB, HIDDEN)
    return w


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{LAYER_NAMES[rest.removesuffix('.weight')]}.weight"


def write_gguf(path: Path, *, tied: bool = False, arch: str = "llama", add_bos: bool = False,
               drop_key: str | None = None, drop_tensor: str | None = None) -> dict:
    """A 2-layer Llama GGUF with ``hf_weights``; returns those weights."""
    weights = hf_weights(tied)
    writer = gguf.GGUFWriter(str(path), arch)
    metadata = {
        "llama.block_count": LAYERS, "llama.context_length": 256,
        "llama.embedding_length": HIDDEN, "llama.feed_forward_length": INTER,
        "llama.attention.head_count": HEADS, "llama.attention.head_count_kv": KV_HEADS,
        "llama.rope.dimension_count": HEAD_DIM, "llama.vocab_size": VOCAB,
        "tokenizer.ggml.bos_token_id": BOS, "tokenizer.ggml.eos_token_id": EOS,
        "tokenizer.ggml.padding_token_id": PAD,
    }
    for key, value in metadata.items():
        if key != drop_key:
            writer.add_uint32(key, value)
    floats = {"llama.rope.freq_base": 100000.0, "llama.attention.layer_norm_rms_epsilon": 1e-5}
    for key, value in floats.items():
        if key != drop_key:
            writer.add_float32(key, value)
    if drop_key != "tokenizer.ggml.model":
        writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (VOCAB - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(CHAT_TEMPLATE)
    for hf_name, value in weights.items():
        name = gguf_name(hf_name)
        if name == drop_tensor:
            continue
        if hf_name.endswith("q_proj.weight"):
            value = llama_cpp_permute(value, HEADS)
        elif hf_name.endswith("k_proj.weight"):
            value = llama_cpp_permute(value, KV_HEADS)
        if name == Q8_TENSOR:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(value, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def converted(request, tmp_path_factory) -> tuple[Path, dict, bool]:
    tied = request.param
    root = tmp_path_factory.mktemp("gguf")
    weights = write_gguf(root / "tiny.gguf", tied=tied)
    out = convert_gguf(root / "tiny.gguf", root / "models" / "tiny", marker={"format": 99})
    return out, weights, tied


def test_every_tensor_comes_back_under_its_hugging_face_name(converted) -> None:
    out, weights, tied = converted
    loaded = load_file(str(out / "model.safetensors"))
    assert sorted(loaded) == sorted(weights), "tensor names differ from Hugging Face Llama's"
    assert ("lm_head.weight" in loaded) is not tied, "lm_head must be written exactly when untied"
    for name, expected in weights.items():
        got = loaded[name]
        assert got.dtype == np.float32, f"{name} is {got.dtype}, expected float32"
        assert got.shape == expected.shape, f"{name} has shape {got.shape}, not {expected.shape}"
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} changed in conversion")


def test_q8_0_tensor_is_dequantized_exactly(converted) -> None:
    out, weights, _ = converted
    got = load_file(str(out / "model.safetensors"))["model.layers.1.mlp.down_proj.weight"]
    np.testing.assert_array_equal(got, weights["model.layers.1.mlp.down_proj.weight"],
                                  err_msg="Q8_0 on its exact grid must dequantize bit for bit")


@pytest.mark.parametrize("n_head", [1, 2, 4])
def test_unpermute_inverts_llama_cpp_permute(n_head: int) -> None:
    w = np.arange(8 * n_head * 3, dtype=np.float32).reshape(8 * n_head, 3)
    permuted = llama_cpp_permute(w, n_head)
    assert not np.array_equal(permuted, w), "the permutation must move rows for this test to bite"
    np.testing.assert_array_equal(unpermute_rope_rows(permuted, n_head), w,
                                  err_msg="un-permuting llama.cpp's Q/K rows must restore them")


def test_config_comes_from_the_metadata(converted) -> None:
    out, _, tied = converted
    config = json.loads((out / "config.json").read_text())
    expected = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "max_position_embeddings": 256,
        "vocab_size": VOCAB, "tie_word_embeddings": tied, "rope_theta": 100000.0,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
        "torch_dtype": "bfloat16", "dtype": "bfloat16",
    }
    for key, value in expected.items():
        assert config.get(key) == value, f"config.json {key}: {config.get(key)!r}, want {value!r}"
    assert config["rms_norm_eps"] == pytest.approx(1e-5, rel=1e-6)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
    assert json.loads((out / MARKER).read_text()) == {"format": 99}, "the marker is the caller's"


def test_tokenizer_round_trips_and_keeps_specials_whole(converted) -> None:
    out = converted[0]
    tok = get_tokenizer(out)
    assert isinstance(tok, HFTokenizer), "a directory with tokenizer.json needs HFTokenizer"
    hell, ll, o = TOKENS.index("hell"), TOKENS.index("ll"), TOKENS.index("o")
    assert tok.encode("hello") == [hell, o], "merges h e, l l, he ll must make 'hell' + 'o'"
    assert tok.encode("llo") == [ll, o]
    text = "<|im_start|>user\nhello wörld<|im_end|>"
    ids = tok.encode(text)
    assert ids[0] == BOS and ids[-1] == EOS, f"special tokens were split: {ids}"
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == "user\nhello wörld", "decode must drop special tokens by default"
    assert tok.eos_token_id == EOS and tok.vocab_size == VOCAB
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (out / "chat_template.jinja").read_text() == CHAT_TEMPLATE


def test_add_bos_token_in_the_gguf_makes_encode_prepend_bos(tmp_path: Path) -> None:
    write_gguf(tmp_path / "bos.gguf", add_bos=True)
    out = convert_gguf(tmp_path / "bos.gguf", tmp_path / "models" / "bos")
    tok = HFTokenizer(out)
    assert tok.encode("hello") == [BOS, TOKENS.index("hell"), TOKENS.index("o")], (
        "tokenizer.ggml.add_bos_token is set: BOS must come first, as llama.cpp adds it"
    )
    assert tok.decode(tok.encode("hello")) == "hello"


def test_transformers_reads_the_gguf_the_same_way(converted) -> None:
    """transformers' own GGUF loader, on the same file, must give the same model and ids."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers needs it to read a GGUF
    out, _, _ = converted
    source = out.parent.parent / "tiny.gguf"
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    ).state_dict()
    ours = load_file(str(out / "model.safetensors"))
    for name, value in ours.items():
        np.testing.assert_array_equal(value, ref[name].numpy(), err_msg=f"{name} differs")
    ref_tok = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tok = HFTokenizer(out)
    for text in ["hello", " hello world", "<|im_start|>hi<|im_end|>", "naïve 42"]:
        assert tok.encode(text) == ref_tok(text).input_ids, f"ids of {text!r} differ"


# --- bad input: one ValueError naming the file and what is wrong, and nothing left behind ---


def _not_gguf(path: Path) -> None:
    path.write_text("this is not a GGUF file\n")


def _truncated(path: Path) -> None:
    write_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_not_gguf, "not a readable GGUF file"),
        (_truncated, "truncated or corrupt at tensor '"),
        (lambda p: write_gguf(p, drop_tensor="blk.1.ffn_up.weight"), "'blk.1.ffn_up.weight'"),
        (lambda p: write_gguf(p, drop_key="llama.context_length"), "'llama.context_length'"),
        (lambda p: write_gguf(p, arch="gpt2"), "'general.architecture' is 'gpt2'"),
        (lambda p: write_gguf(p, drop_key="tokenizer.ggml.model"), "'tokenizer.ggml.model'"),
    ],
    ids=["not-gguf", "truncated", "missing-tensor", "missing-key", "unknown-arch", "no-tokenizer"],
)
def test_bad_input_is_one_value_error_and_leaves_nothing(tmp_path: Path, make, expected) -> None:
    source = tmp_path / "in" / "bad.gguf"
    source.parent.mkdir()
    make(source)
    cache = tmp_path / "models"
    with pytest.raises(ValueError) as info:
        convert_gguf(source, cache / "bad")
    message = str(info.value)
    assert str(source) in message, f"the error must name the file: {message}"
    assert expected in message, f"the error must say {expected!r}: {message}"
    leftovers = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert leftovers == [], f"a failed conversion left {leftovers} in the cache"
