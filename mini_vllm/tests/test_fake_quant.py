"""Fake-quant of a loaded model (``mini_vllm.quantization``): each checkpoint tensor goes through
the caller's function in ``[out, in]`` layout, lands in the fused parameters, and comes back out.

On a fresh float64 copy of the seeded tiny Llama (never the session's ``tiny_llama`` fixture,
which these tests would change).
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, ToyModel
from mini_vllm.models.loader import load_model
from mini_vllm.models.tiny_llama import TinyLlamaSpec, build_tiny_llama, tiny_llama_weights
from mini_vllm.quantization import (
    fake_quantize_weights,
    fake_quantized,
    linear_weights,
    restore_weights,
)
from mini_vllm.tests.builders import greedy, output_ids

PROMPTS = ["The capital of France is", "hello world", "S" * 20]
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture
def model():  # type: ignore[no-untyped-def]
    return load_model(build_tiny_llama(), dtype=np.float64)


def snapshot(model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {name: p.copy() for name, p in model.named_parameters()} | {
        "lm_head": model.lm_head.copy()}


def assert_unchanged(model, before: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    now = snapshot(model)
    changed = [name for name in before if not np.array_equal(before[name], now[name])]
    assert not changed, f"parameters changed: {changed[:5]}"


def grid(step: float):  # type: ignore[no-untyped-def]
    """A stand-in format: every weight rounded to a multiple of ``step``."""
    return lambda W: np.round(W / step) * step


def test_linear_weights_are_the_checkpoint_tensors(model) -> None:
    checkpoint = tiny_llama_weights(TinyLlamaSpec())
    views = dict(linear_weights(model))
    expected = [f"model.layers.{i}.{p}.weight" for i in range(2) for p in PROJECTIONS]
    assert list(views) == expected
    for name, view in views.items():
        assert view.shape == checkpoint[name].shape, name
        assert np.array_equal(view, checkpoint[name].astype(np.float64)), name
    with_head = dict(linear_weights(model, include_lm_head=True))
    assert np.array_equal(with_head["lm_head.weight"], checkpoint["lm_head.weight"])


def test_the_function_sees_each_tensor_once_as_a_private_copy(model) -> None:
    before = snapshot(model)
    seen: list[tuple[int, ...]] = []

    def scribble(W: np.ndarray) -> np.ndarray:
        seen.append(W.shape)
        W[...] = 7.0  # its own copy: the model must not see this
        return np.zeros_like(W) + 1.0

    with pytest.raises(RuntimeError, match="stop"), fake_quantized(model, scribble):
        assert len(seen) == 14
        assert seen[:7] == [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64),
                            (64, 128)]
        assert np.all(model.model.layers[1].self_attn.qkv_proj == 1.0)
        assert np.array_equal(model.lm_head, before["lm_head"]), "the head stays float"
        raise RuntimeError("stop")
    assert_unchanged(model, before)  # restored on the way out, even after an error


def test_identity_changes_nothing(model) -> None:
    expected = output_ids(LLMEngine(model=model, block_size=4), PROMPTS, greedy(12))
    before = snapshot(model)
    with fake_quantized(model, lambda W: W):
        assert_unchanged(model, before)
        got = output_ids(LLMEngine(model=model, block_size=4), PROMPTS, greedy(12))
    assert got == expected


def test_a_coarse_grid_changes_the_tokens_and_restoring_brings_them_back(model) -> None:
    engine = LLMEngine(model=model, block_size=4, enable_caching=False)
    expected = output_ids(engine, PROMPTS, greedy(12))
    before = snapshot(model)
    originals = fake_quantize_weights(model, grid(0.1))
    layer = model.model.layers[0]
    assert np.allclose(layer.self_attn.qkv_proj / 0.1, np.round(layer.self_attn.qkv_proj / 0.1))
    assert output_ids(engine, PROMPTS, greedy(12)) != expected, "a 0.1 grid on std-0.1 weights"
    restore_weights(model, originals)
    assert_unchanged(model, before)
    assert output_ids(engine, PROMPTS, greedy(12)) == expected


def test_a_prefix_cache_keeps_old_kv_until_reset(model) -> None:
    fresh = LLMEngine(model=model, block_size=4, enable_caching=False)
    with fake_quantized(model, grid(0.05)):
        expected = output_ids(fresh, PROMPTS, greedy(8))
    cached = LLMEngine(model=model, block_size=4)
    output_ids(cached, PROMPTS, greedy(8))  # fills the prefix cache with float K/V
    with fake_quantized(model, grid(0.05)):
        stale = output_ids(cached, PROMPTS, greedy(8))
        assert cached.kv_cache_manager.reset_prefix_cache()
        assert output_ids(cached, PROMPTS, greedy(8)) == expected
    assert stale != expected, "prefix hits reuse K/V the float weights computed"


def test_lm_head_only_when_asked(model) -> None:
    embed = model.model.embed_tokens.copy()
    with fake_quantized(model, grid(0.1), include_lm_head=True) as originals:
        assert "lm_head.weight" in originals
        assert np.allclose(model.lm_head / 0.1, np.round(model.lm_head / 0.1))
        assert np.array_equal(model.model.embed_tokens, embed), "the embedding is a lookup"


@pytest.mark.parametrize(("result", "match"), [
    (lambda W: W[:, :-1], r"mlp.gate_proj.weight\) returned shape"),
    (lambda W: W * np.nan, r"mlp.gate_proj.weight\) returned NaN or inf"),
], ids=["wrong-shape", "nan"])
def test_a_bad_result_is_refused_and_nothing_changes(model, result, match: str) -> None:
    before = snapshot(model)
    calls = [0]

    def fails_on_the_fifth_tensor(W: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return W * 1.5 if calls[0] < 5 else result(W)

    with pytest.raises(ValueError, match=match):
        fake_quantize_weights(model, fails_on_the_fifth_tensor)
    assert_unchanged(model, before)  # the four tensors already replaced are put back


def test_a_model_without_projections_is_refused() -> None:
    with pytest.raises(ValueError, match="no decoder layers"):
        fake_quantize_weights(ToyModel(), lambda W: W)


def test_restore_refuses_foreign_names(model) -> None:
    with pytest.raises(ValueError, match="not linear weights"):
        restore_weights(model, {"model.layers.9.mlp.up_proj.weight": np.zeros((1, 1))})
