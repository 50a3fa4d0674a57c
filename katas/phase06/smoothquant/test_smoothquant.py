"""Spec for kata 06-04: the activation-outlier cliff of W8A8, and SmoothQuant's exact migration.

The contract the tests hold you to: symmetric int8 on ``[-127, 127]``; in ``w8a8_matmul`` the
activation ``x [tokens, in]`` gets ONE scale (per tensor) and the weight ``w [out, in]`` one scale
per output channel (per row). Errors are ``||approx - exact|| / ||exact||`` (the scaffold's
``relative_error``).

The outlier setup: 64 tokens x 256 channels, every channel scaled so its loudest value is exactly
1, then channels 17 and 200 made 80x louder, so the loudest-to-median channel ratio is exactly
80. The last tests run the same functions on real activations of SmolLM2-135M (skipped until
``katas models fetch`` has fetched it).
"""

from __future__ import annotations

import numpy as np
import pytest

from katas.phase06.smoothquant.scaffold import (
    capture_linear_inputs,
    load_llama_prefix,
    relative_error,
)
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

pytestmark = pytest.mark.cpu_ok

LOUD = [17, 200]
QUIET = [j for j in range(256) if j not in LOUD]
# The course pins the migration's exactness at 1e-10 (stricter than the policy's
# float64-reordered 1e-9); float64 reaches ~1e-15 here, so either bound only sees a real bug.
EXACT = 1e-10


def make_activations(loudness: float, seed: int = 0) -> np.ndarray:
    """64 x 256; every channel's max |x| is exactly 1, the LOUD channels' exactly ``loudness``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 256))
    x /= np.abs(x).max(axis=0)
    x[:, LOUD] *= loudness
    return x


X_LOUD = make_activations(80.0)  # two channels 80x the rest
X_TAME = make_activations(1.0)  # the same numbers without the outliers
W = np.random.default_rng(1).standard_normal((128, 256)) * 0.05  # [out, in]


def oracle_w8a8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-tensor int8 activation, per-output-row int8 weight, exact integer sums."""
    sx = np.abs(x).max() / 127
    sw = np.abs(w).max(axis=1) / 127
    qx, qw = np.round(x / sx), np.round(w / sw[:, None])
    return (qx @ qw.T) * sx * sw[None, :]


def smoothed(impl, x: np.ndarray, w: np.ndarray, alpha: float = 0.5):
    out = impl.smooth(x, w, alpha)
    assert isinstance(out, tuple) and len(out) == 3, (
        f"smooth returns the tuple (x_hat, w_hat, s), got {type(out).__name__} "
        f"of length {len(out) if isinstance(out, tuple) else '-'}"
    )
    x_hat, w_hat, s = (np.asarray(a) for a in out)
    assert x_hat.shape == x.shape and w_hat.shape == w.shape and s.shape == (x.shape[1],), (
        f"x_hat must be {x.shape} like x, w_hat {w.shape} like w, and s one factor per input "
        f"channel {(x.shape[1],)}; got {x_hat.shape}, {w_hat.shape}, {s.shape}"
    )
    return x_hat, w_hat, s


# -- the int8 quantizers ------------------------------------------------------------------------


def test_quantize_per_tensor_maps_the_largest_magnitude_to_127(impl) -> None:
    t = np.array([[0.5, -2.54], [1.0, 0.0]])
    q, scale = impl.quantize_per_tensor(t)
    q = np.asarray(q)
    assert q.dtype == np.int8 and q.shape == (2, 2), (
        f"q is int8 with the tensor's shape (2, 2), got {q.dtype} {q.shape}"
    )
    assert_close(scale, 2.54 / 127, cause="arithmetic", what="per-tensor scale max|t| / 127")
    assert q.tolist() == [[25, -127], [50, 0]], (
        f"with scale 2.54 / 127 = 0.02, [[0.5, -2.54], [1.0, 0.0]] rounds to "
        f"[[25, -127], [50, 0]]; got {q.tolist()}"
    )


def test_quantize_per_channel_gives_each_output_row_its_own_scale(impl) -> None:
    w = np.array([[0.1, -0.2, 0.05, 0.0], [3.0, 1.5, -1.0, 0.3], [0.0, 0.01, 0.02, -0.04]])
    q, scales = impl.quantize_per_channel(w)
    q, scales = np.asarray(q), np.asarray(scales)
    assert q.dtype == np.int8 and q.shape == (3, 4) and scales.shape == (3,), (
        f"w is [out=3, in=4]: q int8 (3, 4) and one scale per output row, shape (3,); got "
        f"q {q.dtype} {q.shape}, scales {scales.shape}"
    )
    assert_close(scales, [0.2 / 127, 3.0 / 127, 0.04 / 127], cause="arithmetic",
                 what="per-row scales max|w[i, :]| / 127")
    assert np.abs(q).max(axis=1).tolist() == [127, 127, 127], (
        f"every row's largest weight lands on +-127, got row maxima "
        f"{np.abs(q).max(axis=1).tolist()}"
    )


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_fake_quant_error_is_at_most_half_a_step(impl, per_channel: bool) -> None:
    t = np.random.default_rng(2).standard_normal((16, 32)) * np.linspace(0.1, 3.0, 16)[:, None]
    got = np.asarray(impl.fake_quant(t, per_channel))
    assert got.shape == t.shape and got.dtype == np.float64, (
        f"fake_quant returns float64 of the input's shape {t.shape}, got {got.dtype} {got.shape}"
    )
    step = np.abs(t).max(axis=1, keepdims=True) / 127 if per_channel else np.abs(t).max() / 127
    worst = float((np.abs(got - t) / step).max())
    assert worst <= 0.5 + 1e-9, (
        f"round to the nearest level: no value may move more than half a step "
        f"({'per row' if per_channel else 'per tensor'} step = max|t| / 127); the worst moved "
        f"{worst:.2f} steps"
    )


def test_an_all_zero_tensor_quantizes_to_zero(impl) -> None:
    zeros = np.zeros((4, 8))
    q, scale = impl.quantize_per_tensor(zeros)
    assert np.isfinite(scale) and scale > 0 and not np.asarray(q).any(), (
        f"an all-zero tensor: q all 0 and a finite positive scale (0 / 0 is no scale); got "
        f"scale {scale}, q {np.asarray(q).ravel()[:4].tolist()}..."
    )
    w = np.ones((3, 8))
    w[1] = 0.0  # a pruned output row
    got = np.asarray(impl.fake_quant(w, True))
    assert np.isfinite(got).all() and not got[1].any(), (
        f"a weight row of zeros fake-quantizes to zeros, without NaN; got row 1 = "
        f"{got[1].tolist()}"
    )
    assert_close(got[[0, 2]], w[[0, 2]], cause="float64-reordered",
                 what="rows of ones next to the zero row: 127 levels of 1 / 127")


def test_w8a8_matches_the_int8_kernel(impl) -> None:
    x = np.random.default_rng(3).standard_normal((12, 40)) * np.linspace(0.5, 4.0, 40)
    w = np.random.default_rng(4).standard_normal((24, 40)) * np.linspace(0.1, 2.0, 24)[:, None]
    got = np.asarray(impl.w8a8_matmul(x, w))
    assert got.shape == (12, 24), (
        f"x [12, 40] times w [24, 40] transposed is (12, 24), got {got.shape}"
    )
    assert_close(got, oracle_w8a8(x, w), cause="float64-reordered",
                 what="w8a8_matmul vs int8 x with ONE scale, int8 w with one scale per output row")


def test_w8a8_refuses_mismatched_shapes(impl) -> None:
    with expect_raises(ValueError, "x is [tokens, 40] but w is [out, 39]: no matmul exists"):
        impl.w8a8_matmul(np.ones((2, 40)), np.ones((3, 39)))


# -- the migration ------------------------------------------------------------------------------


def test_smoothing_is_mathematically_exact(impl) -> None:
    x_hat, w_hat, _ = smoothed(impl, X_LOUD, W)
    diff = float(np.abs(x_hat @ w_hat.T - X_LOUD @ W.T).max())
    assert diff <= EXACT, (
        f"X_hat W_hat^T must equal X W^T (x divided by s, w multiplied by s, column by column); "
        f"max difference {diff:.3g} > {EXACT:g}"
    )


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_smoothing_factors_follow_eq4(impl, alpha: float) -> None:
    x_hat, w_hat, s = smoothed(impl, X_LOUD, W, alpha)
    expected = np.abs(X_LOUD).max(axis=0) ** alpha / np.abs(W).max(axis=0) ** (1 - alpha)
    assert_close(s, expected, cause="float64-reordered",
                 what=f"s_j = max|X[:, j]|^alpha / max|W[:, j]|^(1 - alpha), alpha = {alpha}")
    assert_close(x_hat, X_LOUD / expected, cause="float64-reordered", what="x_hat = x / s")
    assert_close(w_hat, W * expected, cause="float64-reordered", what="w_hat = w * s")


def test_alpha_decides_who_carries_the_loudness(impl) -> None:
    x_one, _, _ = smoothed(impl, X_LOUD, W, 1.0)
    _, w_zero, _ = smoothed(impl, X_LOUD, W, 0.0)
    x_half, w_half, _ = smoothed(impl, X_LOUD, W, 0.5)
    x_cols, w_cols = np.abs(x_one).max(axis=0), np.abs(w_zero).max(axis=0)
    assert np.allclose(x_cols, 1.0), (
        f"alpha = 1 migrates ALL of x's loudness into w: every channel of x_hat peaks at 1; got "
        f"channel maxima from {x_cols.min():.3g} to {x_cols.max():.3g}"
    )
    assert np.allclose(w_cols, 1.0), (
        f"alpha = 0 moves w's column loudness into x: every column of w_hat peaks at 1; got "
        f"column maxima from {w_cols.min():.3g} to {w_cols.max():.3g}"
    )
    assert_close(np.abs(x_half).max(axis=0), np.abs(w_half).max(axis=0), cause="float64-reordered",
                 what="alpha = 0.5 balances: channel j of x_hat and column j of w_hat share a max")


def test_default_alpha_is_one_half(impl) -> None:
    default = impl.smooth(X_LOUD, W)
    half = smoothed(impl, X_LOUD, W, 0.5)
    assert_close(default[2], half[2], cause="float64-same-order",
                 what="smooth(x, w) must use the paper's default alpha = 0.5")


@pytest.mark.parametrize("dead", ["weight_column", "activation_channel"])
def test_a_dead_channel_is_left_alone(impl, dead: str) -> None:
    x, w = X_LOUD.copy(), W.copy()
    if dead == "weight_column":
        w[:, 5] = 0.0  # a pruned input channel: 0 ** (1 - alpha) in the denominator
    else:
        x[:, 5] = 0.0  # a channel no token uses: 0 ** alpha in the numerator
    x_hat, w_hat, s = smoothed(impl, x, w)
    assert np.isfinite(x_hat).all() and np.isfinite(w_hat).all(), (
        f"an all-zero {dead.replace('_', ' ')} must not turn into inf / NaN; guard the zero max"
    )
    assert s[5] == 1.0 and np.array_equal(x_hat[:, 5], x[:, 5]), (
        f"channel 5 carries nothing through the matmul ({dead.replace('_', ' ')} is all zero): "
        f"its factor is 1 and the channel is left as it was; got s[5] = {s[5]}"
    )
    diff = float(np.abs(x_hat @ w_hat.T - x @ w.T).max())
    assert diff <= EXACT, f"still exact with a dead channel; max difference {diff:.3g}"


def test_smooth_leaves_its_inputs_alone(impl) -> None:
    x, w = X_LOUD.copy(), W.copy()
    smoothed(impl, x, w)
    assert np.array_equal(x, X_LOUD) and np.array_equal(w, W), (
        "smooth returns new arrays; it must not divide the caller's x or scale the caller's w "
        "in place"
    )


@pytest.mark.parametrize(
    ("x", "w", "alpha", "why"),
    [
        pytest.param(np.ones((4, 8)), np.ones((3, 7)), 0.5, "x has 8 channels, w 7", id="shapes"),
        pytest.param(np.ones((4, 8)), np.ones((3, 8)), 1.5, "alpha 1.5 is outside [0, 1]",
                     id="alpha_above_one"),
        pytest.param(np.ones((4, 8)), np.ones((3, 8)), -0.1, "alpha -0.1 is outside [0, 1]",
                     id="alpha_below_zero"),
    ],
)
def test_smooth_refuses_bad_input(impl, x, w, alpha: float, why: str) -> None:
    with expect_raises(ValueError, why):
        impl.smooth(x, w, alpha)


# -- the outlier ratio --------------------------------------------------------------------------


def test_channel_outlier_ratio_is_loudest_over_median_channel_max(impl) -> None:
    # Channel maxima 1, 2, 4, 10 (each reached once, other values small or of the other sign):
    # the median of four is (2 + 4) / 2 = 3, so the ratio is 10 / 3.
    x = np.array([[1.0, -2.0, 0.5, 0.1], [-0.2, 0.3, -4.0, -10.0], [0.4, 1.9, 3.9, 9.0]])
    assert_close(impl.channel_outlier_ratio(x), 10 / 3, cause="arithmetic",
                 what="max over channels of max|x| / median over channels of max|x|")
    assert_close(impl.channel_outlier_ratio(X_LOUD), 80.0, cause="arithmetic",
                 what="the outlier setup: channels peak at 1 except two at 80")
    assert_close(impl.channel_outlier_ratio(X_TAME), 1.0, cause="arithmetic",
                 what="the tame setup: every channel peaks at 1")


# -- the cliff and the rescue (the course's five) ------------------------------------------------


def test_outliers_wreck_naive_w8a8(impl) -> None:
    err = relative_error(impl.w8a8_matmul(X_LOUD, W), X_LOUD @ W.T)
    assert err > 0.05, (
        f"two channels 80x louder set the ONE activation scale: the other 254 channels get "
        f"127 / 80 = 1.6 levels each side, and the matmul error passes 5%; got {err:.2%}. "
        f"(Per-channel activation scales would hide the cliff, but no int8 kernel can use them.)"
    )
    q, _ = impl.quantize_per_tensor(X_LOUD)
    levels = int(np.abs(np.asarray(q)[:, QUIET]).max())
    assert levels == 2, (
        f"with scale 80 / 127 the quiet channels' values (|x| <= 1) round to at most "
        f"round(127 / 80) = 2; got {levels}"
    )


def test_smoothing_rescues_w8a8(impl) -> None:
    exact = X_LOUD @ W.T
    before = relative_error(impl.w8a8_matmul(X_LOUD, W), exact)
    x_hat, w_hat, _ = smoothed(impl, X_LOUD, W)
    after = relative_error(impl.w8a8_matmul(x_hat, w_hat), exact)
    assert after * 3 < before, (
        f"after the migration at alpha = 0.5 the W8A8 error must drop more than 3x: "
        f"{before:.2%} -> {after:.2%} ({before / after:.1f}x)"
    )


def test_no_outliers_means_little_to_gain(impl) -> None:
    exact = X_TAME @ W.T
    before = relative_error(impl.w8a8_matmul(X_TAME, W), exact)
    x_hat, w_hat, _ = smoothed(impl, X_TAME, W)
    after = relative_error(impl.w8a8_matmul(x_hat, w_hat), exact)
    assert before < 0.02 and after < 0.02, (
        f"tame activations quantize fine: W8A8 error under 2% with or without smoothing; got "
        f"{before:.2%} raw, {after:.2%} smoothed"
    )
    assert 0.8 < after / before < 1.25, (
        f"the control arm: on healthy tensors smoothing changes little (within 25%, nothing "
        f"like the 3x rescue); got {before:.2%} -> {after:.2%}"
    )


def test_migration_actually_moved_the_magnitude(impl) -> None:
    x_hat, w_hat, _ = smoothed(impl, X_LOUD, W)
    before, after = impl.channel_outlier_ratio(X_LOUD), impl.channel_outlier_ratio(x_hat)
    assert before / after > 5, (
        f"x's loudest-to-median channel ratio must collapse more than 5x: {before:.1f} -> "
        f"{after:.1f}"
    )
    assert np.abs(w_hat).max() > np.abs(W).max(), (
        f"the loudness went into the weights: max|w_hat| must exceed max|w|; got "
        f"{np.abs(w_hat).max():.3g} vs {np.abs(W).max():.3g}"
    )


# -- real activations: SmolLM2-135M through mini_vllm -------------------------------------------

LAYERS = (0, 1, 2)


@pytest.fixture(scope="module")
def smollm2_pairs():
    """qkv_proj and down_proj of decoder layers 0-2 on the scaffold's 4 prompts (24 tokens)."""
    if not smollm2_available():
        pytest.skip(smollm2_missing_reason())
    pairs = capture_linear_inputs(load_llama_prefix(smollm2_path(), max(LAYERS) + 1), LAYERS)
    # gate_up_proj (the README's table has it) would double the time for no new property.
    return [pair for pair in pairs if not pair.name.endswith("gate_up_proj")]


def test_real_smoothing_preserves_every_layer_output(impl, smollm2_pairs) -> None:
    for pair in smollm2_pairs:
        x_hat, w_hat, _ = smoothed(impl, pair.x, pair.w)
        assert_close(x_hat @ w_hat.T, pair.x @ pair.w.T, cause="float64-reordered",
                     what=f"SmolLM2 {pair.name}: the smoothed layer's output")


def test_real_outlier_ratio_matches_a_direct_computation(impl, smollm2_pairs) -> None:
    for pair in smollm2_pairs:
        loudness = np.abs(pair.x).max(axis=0)
        assert_close(impl.channel_outlier_ratio(pair.x), loudness.max() / np.median(loudness),
                     cause="arithmetic", what=f"SmolLM2 {pair.name}: loudest / median channel")


def test_real_smoothing_lowers_w8a8_error_on_every_captured_linear(impl, smollm2_pairs) -> None:
    # Measured with the reference: each of the 6 drops at least 2x (down_proj of layers 1 and 2,
    # whose loudest input channel is 176x and 323x the median, 3.5x and 3.2x). Asserted: it drops.
    for pair in smollm2_pairs:
        exact = pair.x @ pair.w.T
        before = relative_error(impl.w8a8_matmul(pair.x, pair.w), exact)
        x_hat, w_hat, _ = smoothed(impl, pair.x, pair.w)
        after = relative_error(impl.w8a8_matmul(x_hat, w_hat), exact)
        assert after < before, (
            f"SmolLM2 {pair.name}: smoothing at alpha = 0.5 should lower the W8A8 error, got "
            f"{before:.2%} -> {after:.2%}"
        )
