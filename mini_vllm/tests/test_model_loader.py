"""Checkpoint loading (mini_vllm.models.loader) and the architecture registry: float32, float16
and bfloat16 safetensors, sharded checkpoints, and one ValueError naming the file or tensor for
every way a checkpoint can be wrong. The loader must never write into the model directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mini_vllm.models import loader, registry
from mini_vllm.models.llama import LlamaForCausalLM
from mini_vllm.models.loader import iterate_weights, load_config, load_model
from mini_vllm.models.tiny_llama import TinyLlamaSpec, tiny_llama_config, tiny_llama_weights

SPEC = TinyLlamaSpec(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=48, vocab_size=64, seed=7)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return tiny_llama_weights(SPEC)


def write_checkpoint(model_dir: Path, tensors: dict[str, np.ndarray], config: dict | None = None,
                     shards: int = 1) -> Path:
    """``config.json`` + ``tensors`` split over ``shards`` safetensors files."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config or tiny_llama_config(SPEC)))
    names = sorted(tensors)
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, str(model_dir / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"))
    return model_dir


def write_bf16_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file storing float32 ``tensors`` as BF16 (their top 16 bits), written by
    hand since numpy has no bfloat16."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        bits = (np.ascontiguousarray(t, np.float32).view(np.uint32) >> 16).astype("<u2")
        header[name] = {"dtype": "BF16", "shape": list(t.shape),
                        "data_offsets": [offset, offset + bits.nbytes]}
        blobs.append(bits.tobytes())
        offset += bits.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def bf16_round(t: np.ndarray) -> np.ndarray:
    """What a BF16 checkpoint of ``t`` holds, as float32 (the low 16 bits cleared)."""
    return (t.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def assert_parameters_hold(model: LlamaForCausalLM, tensors: dict[str, np.ndarray]) -> None:
    """Every parameter equals its checkpoint tensors (fused ones stacked, projections [in, out])."""
    params = dict(model.named_parameters())
    for i in range(SPEC.num_hidden_layers):
        p = f"model.layers.{i}."
        qkv = np.concatenate([tensors[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        gate_up = np.concatenate([tensors[p + f"mlp.{x}_proj.weight"] for x in ("gate", "up")])
        np.testing.assert_array_equal(params[p + "self_attn.qkv_proj.weight"], qkv.T)
        np.testing.assert_array_equal(params[p + "mlp.gate_up_proj.weight"], gate_up.T)
        np.testing.assert_array_equal(params[p + "mlp.down_proj.weight"],
                                      tensors[p + "mlp.down_proj.weight"].T)
    np.testing.assert_array_equal(params["model.embed_tokens.weight"],
                                  tensors["model.embed_tokens.weight"])
    np.testing.assert_array_equal(model.lm_head.T, tensors["lm_head.weight"])


def test_load_config_reads_json(tmp_path, weights) -> None:
    write_checkpoint(tmp_path, weights)
    assert load_config(tmp_path) == tiny_llama_config(SPEC)


def test_float32_checkpoint_fills_every_parameter(tmp_path, weights) -> None:
    model = load_model(write_checkpoint(tmp_path, weights))
    assert isinstance(model, LlamaForCausalLM) and model.dtype == np.float32
    assert_parameters_hold(model, weights)


def test_float64_model_from_float32_checkpoint(tmp_path, weights) -> None:
    model = load_model(write_checkpoint(tmp_path, weights), dtype="float64")
    wrong = [n for n, p in model.named_parameters() if p.dtype != np.float64]
    assert not wrong, f"parameters not in float64: {wrong}"
    assert_parameters_hold(model, weights)


def test_sharded_checkpoint_loads_from_every_file(tmp_path, weights) -> None:
    model_dir = write_checkpoint(tmp_path, weights, shards=3)
    assert len(list(model_dir.glob("*.safetensors"))) == 3
    assert sorted(name for name, _ in iterate_weights(model_dir)) == sorted(weights)
    assert_parameters_hold(load_model(model_dir), weights)


def test_float16_checkpoint(tmp_path, weights) -> None:
    half = {n: t.astype(np.float16) for n, t in weights.items()}
    model = load_model(write_checkpoint(tmp_path, half))
    assert_parameters_hold(model, {n: t.astype(np.float32) for n, t in half.items()})


def test_bf16_tensors_widen_exactly(tmp_path, weights) -> None:
    """Projections in BF16 beside float32 norms in another file, as a mixed checkpoint."""
    bf16 = {n: t for n, t in weights.items() if t.ndim == 2}
    rest = {n: t for n, t in weights.items() if t.ndim == 1}
    write_checkpoint(tmp_path, rest)
    write_bf16_safetensors(tmp_path / "model-bf16.safetensors", bf16)
    read = dict(iterate_weights(tmp_path))
    for name, t in bf16.items():
        assert read[name].dtype == np.float32, f"{name}: BF16 read as {read[name].dtype}"
        np.testing.assert_array_equal(read[name], bf16_round(t), err_msg=name)
    assert_parameters_hold(load_model(tmp_path), {**rest, **{n: bf16_round(t)
                                                             for n, t in bf16.items()}})


def test_tied_checkpoint_ignores_a_stored_head(tmp_path) -> None:
    spec = TinyLlamaSpec(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=48, vocab_size=64, tie_word_embeddings=True)
    tensors = tiny_llama_weights(spec)
    stored_head = {**tensors, "lm_head.weight": np.zeros((64, 32), np.float32)}
    model = load_model(write_checkpoint(tmp_path, stored_head, tiny_llama_config(spec)))
    np.testing.assert_array_equal(model.lm_head.T, tensors["model.embed_tokens.weight"])


def test_config_without_architectures_falls_back_on_model_type(tmp_path, weights) -> None:
    config = tiny_llama_config(SPEC)
    del config["architectures"]
    assert isinstance(load_model(write_checkpoint(tmp_path, weights, config)), LlamaForCausalLM)


def test_loader_writes_nothing(tmp_path, weights) -> None:
    model_dir = write_checkpoint(tmp_path / "ckpt", weights, shards=2)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(tmp_path)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in tmp_path.rglob("*")}

    before = snapshot()
    load_model(model_dir)
    assert snapshot() == before, "loading changed the model directory"


# -- errors: one ValueError naming the file or tensor ------------------------------------------

def test_shape_mismatch_names_tensor_shapes_and_file(tmp_path, weights) -> None:
    config = {**tiny_llama_config(SPEC), "intermediate_size": 40}
    write_checkpoint(tmp_path, weights, config)
    with pytest.raises(ValueError) as err:
        load_model(tmp_path)
    msg = str(err.value)
    # Whichever MLP tensor the file holds first: expected per the config, got from the file.
    shapes = r"expected shape \((40, 32|32, 40)\), got \((48, 32|32, 48)\)"
    assert re.search(r"mlp\.(gate|up|down)_proj\.weight: " + shapes, msg), msg
    assert "model-00001-of-00001.safetensors" in msg and "config.json" in msg, msg


def test_load_weights_names_expected_and_got_shapes(weights) -> None:
    model = LlamaForCausalLM(tiny_llama_config(SPEC))
    bad = np.zeros((SPEC.hidden_size, 7), np.float32)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.o_proj\.weight.*"
                                         r"expected shape \(32, 32\), got \(32, 7\)"):
        model.load_weights([("model.layers.1.self_attn.o_proj.weight", bad)])


def test_missing_tensor_is_named(tmp_path, weights) -> None:
    gone = "model.layers.1.self_attn.k_proj.weight"
    write_checkpoint(tmp_path, {n: t for n, t in weights.items() if n != gone})
    with pytest.raises(ValueError, match=rf"lacks 1 tensor.*{gone}"):
        load_model(tmp_path)


def test_unknown_tensor_is_named_with_its_file(tmp_path, weights) -> None:
    extra = "model.layers.0.self_attn.q_norm.weight"
    write_checkpoint(tmp_path, {**weights, extra: np.ones(8, np.float32)})
    with pytest.raises(ValueError, match=rf"model-00001-of-00001\.safetensors.*{extra}"):
        load_model(tmp_path)


def test_rotary_inv_freq_in_a_checkpoint_is_ignored(tmp_path, weights) -> None:
    inv_freq = "model.layers.0.self_attn.rotary_emb.inv_freq"
    write_checkpoint(tmp_path, {**weights, inv_freq: np.ones(4, np.float32)})
    assert_parameters_hold(load_model(tmp_path), weights)


def test_unknown_architecture_lists_the_supported(tmp_path, weights) -> None:
    config = {**tiny_llama_config(SPEC), "architectures": ["MambaForCausalLM"]}
    write_checkpoint(tmp_path, weights, config)
    with pytest.raises(ValueError, match=r"config\.json.*MambaForCausalLM.*LlamaForCausalLM"):
        load_model(tmp_path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""], ids=["corrupt", "list", "empty"])
def test_bad_config_is_named(tmp_path, weights, text: str) -> None:
    write_checkpoint(tmp_path, weights)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"config\.json"):
        load_model(tmp_path)


def test_missing_config_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        load_config(tmp_path)


def test_no_safetensors_is_named(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(tiny_llama_config(SPEC)))
    with pytest.raises(ValueError, match=r"no \*\.safetensors"):
        load_model(tmp_path)


@pytest.mark.parametrize("cut", ["half", "last-byte", "header"])
def test_truncated_safetensors_is_named(tmp_path, weights, cut: str) -> None:
    write_checkpoint(tmp_path, weights)
    path = tmp_path / "model-00001-of-00001.safetensors"
    data = path.read_bytes()
    keep = {"half": len(data) // 2, "last-byte": len(data) - 1, "header": 4}[cut]
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors"):
        list(iterate_weights(tmp_path))


def test_truncated_bf16_file_is_named(tmp_path, weights) -> None:
    path = tmp_path / "w.safetensors"
    embed = "model.embed_tokens.weight"
    write_bf16_safetensors(path, {embed: weights[embed]})
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"w\.safetensors"):
        list(loader.safetensors_weights(path))


def test_integer_tensor_is_refused(weights) -> None:
    model = LlamaForCausalLM(tiny_llama_config(SPEC))
    with pytest.raises(ValueError, match=r"model\.norm\.weight.*floating"):
        model.load_weights([("model.norm.weight", np.ones(32, np.int32))])


# -- registry -----------------------------------------------------------------------------------

def test_registry_resolves_llama_and_refuses_unknown() -> None:
    assert registry.resolve_model_cls(["Foo", "LlamaForCausalLM"]) is LlamaForCausalLM
    with pytest.raises(ValueError, match=r"\['Foo'\].*LlamaForCausalLM"):
        registry.resolve_model_cls(["Foo"])
    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        registry.resolve_model_cls([])


def test_register_model_adds_an_architecture(tmp_path, weights, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    class MyLlama(LlamaForCausalLM):
        pass

    registry.register_model("MyLlamaForCausalLM", MyLlama)
    assert "MyLlamaForCausalLM" in registry.supported_architectures()
    config = {**tiny_llama_config(SPEC), "architectures": ["MyLlamaForCausalLM"]}
    assert type(load_model(write_checkpoint(tmp_path, weights, config))) is MyLlama
