"""Spec for kata 06-01: symmetric int8 fake-quant, per output channel and per tensor.

The course's numbers are pinned exactly: 10,000 + 400 bytes against 40,000 for a 100 x 100
float32 matrix, under 1% round-trip error on Gaussian weights, one row scaled 100x for the
outlier showdown. Then the same functions on real weights: two layers of SmolLM2-135M (the
error stays inside the bound the analysis predicts) and the whole model in mini_vllm (it still
answers the France question). The SmolLM2 tests skip until ``katas models fetch`` has run.

Error metric (the course names none): the relative Frobenius error
``||W - W_hat|| / ||W||`` for a matrix, ``||Y - Y_hat|| / ||Y||`` for a layer's outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.models import (
    FRANCE_QUESTION,
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)

pytestmark = pytest.mark.cpu_ok

# One rounding step in float32 arithmetic moves a value by about 127 * 2**-24 of its scale
# (W / s and s * q are each rounded once), so "within half a step" allows 1e-4 of a step more.
HALF_STEP_SLACK = 0.5 + 1e-4


def gaussian(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``||approx - exact|| / ||exact||`` (Frobenius), in float64."""
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


def fake_quant(impl, W: np.ndarray, per: str = "channel") -> np.ndarray:
    quantize = impl.quantize_per_channel if per == "channel" else impl.quantize_per_tensor
    q, s = quantize(W)
    return np.asarray(impl.dequantize(q, s))


def per_channel(impl, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_per_channel(W)`` with its shapes and dtypes checked, so a wrong one is a
    message rather than an IndexError later."""
    got = impl.quantize_per_channel(W)
    assert isinstance(got, tuple) and len(got) == 2, (
        f"quantize_per_channel returns (q, scales), got {type(got).__name__}"
    )
    q, s = np.asarray(got[0]), np.asarray(got[1])
    assert q.shape == W.shape and q.dtype == np.int8, (
        f"q must be int8 with W's shape {W.shape}, got {q.dtype} {q.shape}"
    )
    assert s.shape == (W.shape[0],), (
        f"per-channel means one scale per output row: shape ({W.shape[0]},) for W of shape "
        f"{W.shape}, got {s.shape} (scales over the input columns?)"
    )
    return q, s


# -- the quantizer --------------------------------------------------------------------------


def test_per_channel_scale_is_row_absmax_over_127(impl) -> None:
    W = gaussian((48, 32))  # not square: a scale per input column has the wrong shape
    q, s = per_channel(impl, W)
    assert s.dtype == np.float32, f"scales are stored as float32, got {s.dtype}"
    assert_close(s, np.abs(W).max(axis=1) / 127, cause="float32",
                 what="scale[o] = max|W[o]| / 127")
    loudest = np.abs(W).argmax(axis=1)
    rows = np.arange(W.shape[0])
    expected = np.where(W[rows, loudest] > 0, 127, -127)
    assert np.array_equal(q[rows, loudest], expected), (
        f"each row's largest-magnitude weight lands exactly on +-127 (the grid's end); got "
        f"{q[rows, loudest][:8].tolist()} for the first rows"
    )


def test_roundtrip_error_small(impl) -> None:
    W = gaussian((100, 100))
    q, s = per_channel(impl, W)
    err = rel_error(impl.dequantize(q, s), W)
    assert err < 0.01, f"int8 per-channel on Gaussian weights loses < 1% (Frobenius), got {err:.3%}"
    # Rounding to the nearest step leaves an error uniform on [-s/2, s/2]: RMS s / sqrt(12).
    predicted = np.sqrt(np.mean(s.astype(np.float64) ** 2) / 12) / np.sqrt(np.mean(W ** 2.0))
    assert 0.9 * predicted < err < 1.1 * predicted, (
        f"round to nearest predicts a relative error of {predicted:.3%} (RMS step / sqrt(12)), "
        f"got {err:.3%}: twice that is truncation or floor, not rounding"
    )


def test_every_value_within_half_a_step(impl) -> None:
    W = gaussian((64, 200), seed=1)
    q, s = per_channel(impl, W)
    err = np.abs(np.asarray(impl.dequantize(q, s), np.float64) - W)
    bound = HALF_STEP_SLACK * s.astype(np.float64)[:, None]
    worst = np.unravel_index(int(np.argmax(err / bound)), W.shape)
    assert np.all(err <= bound), (
        f"every value is off by at most half its step (scale / 2); W{tuple(map(int, worst))} = "
        f"{W[worst]:.5f} came back {err[worst] / s[worst[0]]:.2f} steps away"
    )


def test_ties_round_to_even(impl) -> None:
    W = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]], np.float32)
    q = np.asarray(impl.quantize_with_scales(W, np.float32(1.0)))
    expected = [[0, 2, 2, 0, -2, -2, 126]]
    assert q.tolist() == expected, (
        f"exact halves round to the even neighbour (numpy's np.round, torch.round and vLLM's "
        f"int8 kernels all do): expected {expected}, got {q.tolist()}"
    )


def test_all_zero_row_gets_scale_one(impl) -> None:
    W = gaussian((4, 16))
    W[2] = 0.0
    q, s = per_channel(impl, W)
    assert s[2] == 1.0, f"an all-zero row gets scale 1 (no division by zero), got {s[2]!r}"
    assert np.all(q[2] == 0), f"an all-zero row quantizes to zeros, got {q[2].tolist()}"
    back = np.asarray(impl.dequantize(q, s))
    assert np.all(np.isfinite(back)) and np.all(back[2] == 0), (
        f"the zero row comes back as zeros and nothing is NaN; got row 2 = {back[2][:4]}..."
    )
    q0, s0 = impl.quantize_per_tensor(np.zeros((3, 5), np.float32))
    assert float(s0) == 1.0 and np.all(np.asarray(q0) == 0), (
        f"an all-zero matrix gets the per-tensor scale 1 and zeros, got scale {s0!r}"
    )


def test_values_past_the_grid_clip_to_127(impl) -> None:
    # A caller-given (calibrated, clipped) scale can put values past the grid's ends.
    W = np.array([[127.4, 127.6, 300.0, -127.6, -1000.0, 0.0]], np.float32)
    q = np.asarray(impl.quantize_with_scales(W, np.array([1.0], np.float32)))
    assert q.dtype == np.int8, f"q is int8, got {q.dtype}"
    expected = [[127, 127, 127, -127, -127, 0]]
    assert q.tolist() == expected, (
        f"values past the grid saturate at +-127 (symmetric: -128 is never used, and 128 must "
        f"not wrap around to -128 in the int8 cast): expected {expected}, got {q.tolist()}"
    )


def test_per_tensor_scale_is_one_scalar(impl) -> None:
    W = gaussian((30, 20), seed=2)
    q, s = impl.quantize_per_tensor(W)
    assert np.ndim(s) == 0, f"per-tensor means one scale for the matrix, got shape {np.shape(s)}"
    assert_close(s, np.abs(W).max() / 127, cause="float32", what="per-tensor scale max|W| / 127")
    assert np.asarray(q).dtype == np.int8 and np.asarray(q).shape == W.shape, (
        f"q is int8 of W's shape {W.shape}, got {np.asarray(q).dtype} {np.asarray(q).shape}"
    )
    err = np.abs(np.asarray(impl.dequantize(q, s), np.float64) - W)
    assert np.all(err <= HALF_STEP_SLACK * float(s)), (
        f"per tensor, too, every value is within half a step: worst {err.max() / float(s):.2f} "
        f"steps"
    )


def test_dequantize_broadcasts_rows_and_a_scalar(impl) -> None:
    q = np.array([[1, -2, 3], [127, 0, -127]], np.int8)
    rows = np.asarray(impl.dequantize(q, np.array([0.5, 2.0], np.float32)))
    assert rows.shape == (2, 3), f"dequantize keeps q's shape (2, 3), got {rows.shape}"
    assert rows.tolist() == [[0.5, -1.0, 1.5], [254.0, 0.0, -254.0]], (
        f"row o is multiplied by scale[o]; got {rows.tolist()}"
    )
    scalar = np.asarray(impl.dequantize(q, np.float32(0.25)))
    assert scalar.tolist() == [[0.25, -0.5, 0.75], [31.75, 0.0, -31.75]], (
        f"a per-tensor scale multiplies every value; got {scalar.tolist()}"
    )


def test_bad_input_is_refused(impl) -> None:
    with expect_raises(ValueError, "W must be a 2-D [out, in] matrix", match="2-D"):
        impl.quantize_per_channel(np.ones(5, np.float32))
    with expect_raises(ValueError, "one scale per output row: 3 rows, 2 scales", match="scale"):
        impl.dequantize(np.zeros((3, 4), np.int8), np.ones(2, np.float32))
    with expect_raises(ValueError, "a zero scale would divide by zero", match="scale"):
        impl.quantize_with_scales(np.ones((2, 2), np.float32), np.array([1.0, 0.0], np.float32))


# -- the ledger -----------------------------------------------------------------------------


def test_memory_saving_about_4x(impl) -> None:
    W = gaussian((100, 100))
    full = impl.memory_bytes(W)
    quant = impl.memory_bytes_quant(*impl.quantize_per_channel(W))
    assert full == 40_000, f"100 x 100 float32 is 40,000 bytes, got {full}"
    assert quant == 10_400, (
        f"int8 per channel: 10,000 bytes of weights + 100 float32 scales (400) = 10,400, got "
        f"{quant} (10,800 means the scales are float64)"
    )
    assert impl.memory_bytes_quant(*impl.quantize_per_tensor(W)) == 10_004, (
        "per tensor: 10,000 bytes + one float32 scale"
    )
    ratio = full / quant
    assert round(ratio, 2) == 3.85, f"40,000 / 10,400 = 3.85, got {ratio:.3f}"
    # A 4096 x 4096 layer: the scales are 0.1% of the int8 weights, so the ratio is all but 4.
    big = impl.memory_bytes_quant(np.zeros((4096, 4096), np.int8), np.ones(4096, np.float32))
    assert big == 4096 * 4096 + 4 * 4096, f"4096 x 4096 int8 + 4096 float32 scales, got {big}"
    assert 3.99 < 4 * 4096 * 4096 / big < 4, "scales amortize: the ratio approaches 4 from below"
    assert impl.memory_bytes(np.zeros((100, 100))) == 80_000, (
        "memory_bytes counts the bytes of W as stored: float64 is 8 per value"
    )


# -- granularity and the matmul -------------------------------------------------------------


def test_per_channel_beats_per_tensor_on_outlier(impl) -> None:
    W = gaussian((100, 100), seed=3)
    loud = 7
    W[loud] *= 100.0
    quiet = np.arange(100) != loud
    channel, tensor = fake_quant(impl, W, "channel"), fake_quant(impl, W, "tensor")
    ch_quiet, te_quiet = rel_error(channel[quiet], W[quiet]), rel_error(tensor[quiet], W[quiet])
    assert ch_quiet < 0.01, (
        f"per channel, the quiet rows keep their own steps: < 1% error, got {ch_quiet:.2%}"
    )
    assert te_quiet > 0.30, (
        f"per tensor, the loud row sets one step for everyone and the quiet rows collapse to a "
        f"few levels: expected > 30% error on them, got {te_quiet:.2%}"
    )
    ch_all, te_all = rel_error(channel, W), rel_error(tensor, W)
    assert te_all > 5 * ch_all, (
        f"over the whole matrix per tensor should be > 5x worse, got {te_all:.3%} vs {ch_all:.3%}"
    )


def test_quant_linear_matches_fp_matmul(impl) -> None:
    W = gaussian((64, 100), seed=4)  # out 64, in 100
    x = gaussian((8, 100), seed=5)
    q, s = per_channel(impl, W)
    y = np.asarray(impl.quant_linear(x, q, s))
    assert y.shape == (8, 64), f"x [8, 100] through W [64, 100] gives [8, 64], got {y.shape}"
    assert_close(y, x @ np.asarray(impl.dequantize(q, s)).T, cause="float32",
                 what="quant_linear = x @ dequantize(q, s).T")
    out_err, w_err = rel_error(y, x.astype(np.float64) @ W.T.astype(np.float64)), rel_error(
        impl.dequantize(q, s), W)
    assert out_err < 0.01, f"the layer's output stays within 1% of x @ W.T, got {out_err:.3%}"
    assert 0.5 * w_err < out_err < 2 * w_err, (
        f"rounding noise passes through the matmul in proportion: output error {out_err:.3%} "
        f"against weight error {w_err:.3%}"
    )


# -- a real layer: SmolLM2-135M -------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
SENTENCE = "The capital of France is Paris, and the largest planet in the solar system is Jupiter."
LAYER0 = "model.layers.0."


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


@pytest.fixture(scope="module")
def layer0() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Layer 0's ``q_proj`` and ``down_proj`` of SmolLM2 with inputs from a real sentence:
    ``{name: (W [out, in] float32, x [tokens, in] float64)}``.

    ``q_proj`` sees exactly what the model feeds it: the sentence's embeddings through the
    input RMSNorm. ``down_proj`` sees the MLP's SwiGLU activations of the embeddings through
    the post-attention RMSNorm (the attention's contribution to the residual is left out).
    """
    import json

    from safetensors import safe_open

    from mini_vllm.models.llama import silu_and_mul
    from mini_vllm.tokenizer import get_tokenizer

    path = smollm2_path()
    eps = json.loads((path / "config.json").read_text())["rms_norm_eps"]
    names = [LAYER0 + n for n in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")]
    ids = get_tokenizer(path).encode(SENTENCE)
    with safe_open(str(path / "model.safetensors"), framework="np") as f:
        t = {n.removeprefix(LAYER0): f.get_tensor(n) for n in names}
        rows = f.get_slice("model.embed_tokens.weight")  # only the sentence's rows
        emb = np.concatenate([rows[i:i + 1] for i in ids]).astype(np.float64)
    x_q = rms_norm(emb, t["input_layernorm.weight"], eps)
    h = rms_norm(emb, t["post_attention_layernorm.weight"], eps)
    x_down = silu_and_mul(h @ np.concatenate([t["mlp.gate_proj.weight"],
                                              t["mlp.up_proj.weight"]]).T.astype(np.float64))
    return {"q_proj": (t["self_attn.q_proj.weight"], x_q),
            "down_proj": (t["mlp.down_proj.weight"], x_down)}


@needs_smollm2
@pytest.mark.parametrize("name", ["q_proj", "down_proj"])
def test_real_smollm2_layer_stays_within_the_predicted_error(impl, layer0, name: str) -> None:
    W, x = layer0[name]
    q, s = per_channel(impl, W)
    y = x @ W.T.astype(np.float64)
    y_channel = np.asarray(impl.quant_linear(x.astype(np.float32), q, s), np.float64)
    assert y_channel.shape == y.shape, (
        f"{name}: x {x.shape} through W {W.shape} gives {y.shape}, got {y_channel.shape}"
    )
    s64 = s.astype(np.float64)
    # Each weight is off by e with |e| <= s_o / 2, so output o moves by sum_i x_i e_oi:
    # at most (s_o / 2) * ||x||_1 (hard bound); about s_o * ||x||_2 / sqrt(12) typically
    # (independent errors, uniform on a step).
    err = np.abs(y_channel - y)
    hard = HALF_STEP_SLACK * s64[None, :] * np.abs(x).sum(axis=1)[:, None]
    assert np.all(err <= hard), (
        f"{name}: an output moved by {(err / hard).max():.2f}x the bound (s/2) * ||x||_1: some "
        f"weight is more than half a step off"
    )
    typical = np.sqrt(np.mean(s64[None, :] ** 2 / 12 * (x * x).sum(axis=1)[:, None]))
    measured = np.sqrt(np.mean((y_channel - y) ** 2))
    assert 0.8 < measured / typical < 1.25, (
        f"{name}: RMS output error {measured:.3g}, the rounding model predicts {typical:.3g} "
        f"(s * ||x|| / sqrt(12)); a ratio of {measured / typical:.2f} is not rounding to nearest"
    )
    ch = rel_error(y_channel, y)
    assert ch < 0.01, f"{name}: per-channel int8 moves the layer's outputs by {ch:.3%} (< 1%)"
    q_t, s_t = impl.quantize_per_tensor(W)
    te = rel_error(np.asarray(impl.quant_linear(x.astype(np.float32), q_t, s_t)), y)
    assert te > 3 * ch, (
        f"{name}: per tensor should be measurably worse on real weights (> 3x); got "
        f"{te:.3%} per tensor vs {ch:.3%} per channel"
    )


# -- the whole model in mini_vllm -----------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "Water boils at",
    "The largest planet in the solar system is",
    "Machine learning is",
    "To make a cup of tea, first",
]
NEW_TOKENS = 8
MIN_IDENTICAL = 6  # of the 9 continuations (measured: 7 per channel, 2 per tensor)


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2 in mini_vllm, loaded once, and its float greedy continuations: ``(llm, prompts,
    float_tokens)`` with the France chat prompt first. Prefix caching is off: cached K/V from
    the float weights would leak into the fake-quant run."""
    from mini_vllm import LLM, SamplingParams

    llm = LLM(smollm2_path(), max_model_len=128, enable_caching=False)
    chat = llm.tokenizer.apply_chat_template([{"role": "user", "content": FRANCE_QUESTION}],
                                             add_generation_prompt=True)
    prompts = [chat] + [llm.tokenizer.encode(p) for p in PROMPTS]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    float_tokens = [o.output_token_ids for o in llm.generate(prompts, params)]
    return llm, prompts, params, float_tokens


@needs_smollm2
def test_your_int8_weights_still_answer_paris(impl, request) -> None:
    from mini_vllm.quantization import fake_quantized

    def int8_per_channel(W: np.ndarray) -> np.ndarray:
        q, s = impl.quantize_per_channel(W)
        return impl.dequantize(q, s)

    int8_per_channel(gaussian((4, 8)))  # your code first: no model load for a stub
    llm, prompts, params, float_tokens = request.getfixturevalue("smollm2")
    with fake_quantized(llm.model, int8_per_channel):
        outs = llm.generate(prompts, params)
    answer = outs[0].text
    assert "Paris" in answer, (
        f"with your int8 per-channel weights SmolLM2 answered {answer!r} to {FRANCE_QUESTION!r}"
    )
    identical = sum(o.output_token_ids == f for o, f in zip(outs, float_tokens, strict=True))
    assert identical >= MIN_IDENTICAL, (
        f"int8 per channel should leave most greedy continuations unchanged: "
        f"{identical} of {len(prompts)} equal the float model's {NEW_TOKENS} tokens, expected "
        f">= {MIN_IDENTICAL}"
    )
