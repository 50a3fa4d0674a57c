"""Spec for kata 06-03: group-wise int4, nibble packing, GGUF's Q4_1 and AWQ's layout.

Core tests are numpy only. The Q4_1 reader is checked against the ``gguf`` package on
synthetic blocks and, when it is cached, on SmolLM2's own GGUF. The ``live`` tests write a real
AWQ checkpoint of SmolLM2 with your packer and load it into vLLM (CPU build); they skip without
vLLM or the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from katas.phase06.int4_groups_and_packing.scaffold import AWQ_PACK_ORDER
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

# vLLM's inverse of AWQ's field order (auto_awq.py: _REVERSE_AWQ_PACK_ORDER)
REVERSE_AWQ_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


# -- oracles and fixtures (independent of the code under test) -------------------------------


def oracle_unpack_awq(words: np.ndarray) -> np.ndarray:
    """vLLM's reading of an AWQ-packed int32 array ``(rows, cols/8)``: unsigned nibbles
    ``(rows, cols)`` in column order (shift, mask, undo the interleave)."""
    w = np.asarray(words).astype(np.int64) & 0xFFFFFFFF
    fields = (w[..., None] >> (4 * np.arange(8))) & 0xF  # field p of each word
    return fields[..., REVERSE_AWQ_ORDER].reshape(w.shape[0], -1)


def oracle_quantize(W: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    out, inn = W.shape
    groups = W.astype(np.float32).reshape(out, inn // g, g)
    amax = np.abs(groups).max(axis=-1)
    s = np.where(amax > 0, amax / np.float32(7), np.float32(1)).astype(np.float16)
    q = np.clip(np.round(groups / s.astype(np.float32)[..., None]), -7, 7)
    return q.reshape(out, inn).astype(np.int8), s


def oracle_dequantize(q: np.ndarray, s: np.ndarray, g: int) -> np.ndarray:
    return q.astype(np.float32) * np.repeat(s.astype(np.float32), g, axis=1)


def banded(out: int = 32, inn: int = 1024, band: int = 16, seed: int = 1) -> np.ndarray:
    """Gaussian weights whose magnitude changes every ``band`` input columns (0.01x to 1x,
    log-uniform): the local structure that real weight matrices have along the input dim."""
    rng = np.random.default_rng(seed)
    magnitude = np.exp(rng.uniform(np.log(0.01), 0.0, inn // band))
    return (rng.standard_normal((out, inn)) * np.repeat(magnitude, band)).astype(np.float32)


def rel_error(impl: Any, W: np.ndarray, g: int) -> float:
    q, s = impl.quantize_grouped(W, g)
    D = np.asarray(impl.dequantize_grouped(q, s, g), dtype=np.float64)
    assert D.shape == W.shape, f"dequantize_grouped returned {D.shape}, expected {W.shape}"
    return float(np.linalg.norm(D - W) / np.linalg.norm(W))


# -- packing -----------------------------------------------------------------------------------


def test_pack_unpack_roundtrip_is_exact(impl) -> None:
    q = np.random.default_rng(0).integers(-8, 8, (16, 64)).astype(np.int8)
    packed = impl.pack_int4(q)
    assert packed.shape == (16, 32) and packed.dtype == np.uint8, (
        f"(16, 64) int4 values pack into (16, 32) uint8, got {packed.shape} {packed.dtype}")
    back = impl.unpack_int4(packed)
    assert back.shape == q.shape, f"unpack_int4 returned {back.shape}, expected {q.shape}"
    assert np.array_equal(back, q), "pack then unpack must give back every value exactly"
    assert np.issubdtype(back.dtype, np.signedinteger), f"values are signed, got {back.dtype}"


def test_even_index_goes_to_the_low_nibble(impl) -> None:
    got = impl.pack_int4(np.array([[-8, 7, 0, 1]], dtype=np.int8))
    assert got.shape == (1, 2), f"4 values are 2 bytes, got shape {got.shape}"
    assert [int(b) for b in got[0]] == [0xF0, 0x98], (
        "[-8, 7, 0, 1] stores nibbles 0, 15, 8, 9; index 0 goes to byte 0's low nibble and "
        f"index 1 to its high nibble: [0xF0, 0x98], got {[hex(int(b)) for b in got[0]]}")


def test_unpack_restores_the_sign(impl) -> None:
    got = impl.unpack_int4(np.array([[0x0F, 0x87, 0x79]], dtype=np.uint8))
    want = [7, -8, -1, 0, 1, -1]
    assert got.shape == (1, 6), f"3 bytes hold 6 values, got shape {got.shape}"
    assert [int(v) for v in got[0]] == want, (
        f"nibble n stands for n - 8, low nibble first: {want}, got {got[0].tolist()}")


def test_odd_column_count_pads_with_a_zero(impl) -> None:
    q = np.array([[1, -2, 3, -4, 5], [-7, 7, 0, 6, -6], [0, 0, 0, 0, -8]], dtype=np.int8)
    packed = impl.pack_int4(q)
    assert packed.shape == (3, 3), f"5 values per row need 3 bytes, got shape {packed.shape}"
    assert all(int(b) >> 4 == 8 for b in packed[:, -1]), (
        f"the padding is a zero weight, nibble 8, in the last high nibble: "
        f"{[hex(int(b)) for b in packed[:, -1]]}")
    back = impl.unpack_int4(packed, 5)
    assert back.shape == (3, 5) and np.array_equal(back, q), (
        f"unpack_int4(packed, 5) must give the 5 values back, got {back.tolist()}")
    full = impl.unpack_int4(packed)
    assert full.shape == (3, 6) and not full[:, -1].any(), (
        f"without n the padding reads as a 0 weight, got {full.tolist()}")


@pytest.mark.parametrize("bad", [8, -9, 15], ids=["8", "-9", "15"])
def test_pack_refuses_values_outside_int4(impl, bad: int) -> None:
    q = np.array([[0, bad]], dtype=np.int16)
    with expect_raises(ValueError, f"{bad} is not an int4 value", match=r"\[-8, 7\]"):
        impl.pack_int4(q)


def test_unpack_refuses_a_count_the_bytes_cannot_hold(impl) -> None:
    packed = np.zeros((2, 3), dtype=np.uint8)
    for n in (4, 7):
        with expect_raises(ValueError, f"3 bytes per row hold 5 or 6 values, not {n}"):
            impl.unpack_int4(packed, n)
    with expect_raises(ValueError, "packed bytes are uint8; an int32 array is another format"):
        impl.unpack_int4(np.zeros((2, 3), dtype=np.int32))


# -- grouped quantization ----------------------------------------------------------------------


def test_scale_is_the_group_max_over_7(impl) -> None:
    W = np.array([[7, -3.4, 2.6, 0.2, 0.7, -0.35, 0.1, 0.0]], dtype=np.float32)
    q, s = impl.quantize_grouped(W, 4)
    assert s.shape == (1, 2), f"8 weights in groups of 4: scales (1, 2), got {s.shape}"
    assert s.dtype == np.float16, f"scales are stored as float16, got {s.dtype}"
    assert [float(x) for x in s[0]] == [1.0, float(np.float16(0.1))], (
        f"scale = max|group| / 7 in float16: [1.0, 0.0999755859375], got {s[0].tolist()}")
    assert q.tolist() == [[7, -3, 3, 0, 7, -4, 1, 0]], (
        "rounded against the stored scales: [7, -3, 3, 0, 7, -4, 1, 0] (-0.35 / 0.09998 is "
        f"-3.5009, so -4), got {np.asarray(q).tolist()}")


def test_grouped_roundtrip_error_bounded(impl) -> None:
    W = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    q, s = impl.quantize_grouped(W, 32)
    assert q.shape == W.shape and q.dtype == np.int8, f"q: {q.shape} {q.dtype}, want int8"
    assert s.shape == (64, 8), f"scales (64, 256 // 32) = (64, 8), got {s.shape}"
    assert int(np.abs(q).max()) <= 7, f"symmetric int4 stays in [-7, 7], got {np.abs(q).max()}"
    err = rel_error(impl, W, 32)
    assert err < 0.15, f"group 32 on Gaussian weights: relative error < 15%, got {err:.1%}"
    D = impl.dequantize_grouped(q, s, 32)
    half = np.repeat(s.astype(np.float32), 32, axis=1) / 2
    assert np.all(np.abs(D - W) <= half * (1 + 1e-3)), (
        "round to nearest: no weight may move by more than half its group's scale")


def test_rounding_uses_the_stored_float16_scale(impl) -> None:
    # 32,768 weights: a dozen of them sit close enough to a rounding boundary that the float32
    # scale and the stored float16 scale round them differently
    W = np.random.default_rng(3).standard_normal((64, 512)).astype(np.float32) * 0.037
    q, s = impl.quantize_grouped(W, 32)
    want_q, want_s = oracle_quantize(W, 32)
    assert s.dtype == np.float16 and np.array_equal(s, want_s), (
        "scales must be float16(max|group| / 7) exactly")
    assert np.array_equal(q, want_q), (
        f"q must be round(w / scale) with the float16 scale that is stored; "
        f"{int((q != want_q).sum())} of {q.size} values differ")
    D = impl.dequantize_grouped(q, s, 32)
    assert D.dtype == np.float32, f"dequantize_grouped returns float32, got {D.dtype}"
    want = want_q.astype(np.float32) * np.repeat(want_s.astype(np.float32), 32, axis=1)
    assert_close(D, want, cause="float32", what="q times its group's stored scale")


def test_groups_run_along_the_input_dim(impl) -> None:
    W = np.ones((8, 8), dtype=np.float32)
    W[:, 4:] = 70.0  # input columns 4..7 are loud, for every output row
    W[4:, :4] = 0.7  # output rows 4..7 are quiet on the first four inputs
    q, s = impl.quantize_grouped(W, 4)
    assert s.shape == (8, 2), f"(8, 8) in groups of 4 along the input dim: (8, 2), got {s.shape}"
    want = np.array([[1 / 7, 10]] * 4 + [[0.1, 10]] * 4, dtype=np.float16)
    assert np.array_equal(s, want), (
        "scales[o, g] covers row o, input columns 4g .. 4g + 3: expected rows [1/7, 10] "
        f"then [0.1, 10], got {s.astype(np.float32).round(4).tolist()}")


def test_smaller_groups_capture_local_magnitude(impl) -> None:
    W = banded()
    e16, e256 = rel_error(impl, W, 16), rel_error(impl, W, 256)
    assert e16 < 0.6 * e256, (
        f"banded magnitudes: group 16 follows each band, group 256 lets the loudest band set "
        f"the scale: expected e16 < 0.6 x e256, got {e16:.1%} vs {e256:.1%}")


def test_zero_group_gets_scale_one(impl) -> None:
    W = np.zeros((2, 8), dtype=np.float32)
    W[1, 4:] = [0.5, -0.25, 0.0, 0.125]
    q, s = impl.quantize_grouped(W, 4)
    assert [float(x) for x in s[0]] == [1.0, 1.0] and float(s[1, 0]) == 1.0, (
        f"an all-zero group gets scale 1.0 (no division by zero), got {s.tolist()}")
    D = impl.dequantize_grouped(q, s, 4)
    assert np.isfinite(D).all() and not D[0].any() and not D[1, :4].any(), (
        f"all-zero groups come back as exact zeros, got {D.tolist()}")


@pytest.mark.parametrize(("shape", "g"), [((4, 576), 128), ((3, 10), 4)])
def test_in_dim_not_divisible_is_refused(impl, shape: tuple[int, int], g: int) -> None:
    W = np.ones(shape, dtype=np.float32)
    with expect_raises(ValueError, f"{shape[1]} input columns do not split into groups of {g}",
                       match=str(shape[1])):
        impl.quantize_grouped(W, g)


def test_bad_arguments_are_refused(impl) -> None:
    with expect_raises(ValueError, "group_size must be an int >= 1", match="group_size"):
        impl.quantize_grouped(np.ones((2, 8), dtype=np.float32), 0)
    with expect_raises(ValueError, "W is a 2-D (out, in) matrix, not a vector"):
        impl.quantize_grouped(np.ones(8, dtype=np.float32), 4)
    q = np.zeros((2, 8), dtype=np.int8)
    with expect_raises(ValueError, "scales must be (2, 2) for (2, 8) in groups of 4"):
        impl.dequantize_grouped(q, np.ones((2, 4), dtype=np.float16), 4)


@pytest.mark.parametrize("value", [1e6, 1e-9], ids=["overflow", "underflow"])
def test_a_scale_float16_cannot_hold_is_refused(impl, value: float) -> None:
    W = np.full((1, 4), value, dtype=np.float32)
    with expect_raises(ValueError, f"max|w| = {value:g} gives a scale of {value / 7:.3g}, "
                       "outside what float16 stores", match="float16"):
        impl.quantize_grouped(W, 4)


# -- the bill ----------------------------------------------------------------------------------


def test_group_scale_overhead_is_the_tradeoff(impl) -> None:
    W = banded(out=8)
    _, s16 = impl.quantize_grouped(W, 16)
    _, s128 = impl.quantize_grouped(W, 128)
    assert (s16.size, s128.size) == (512, 64), (
        f"8 rows of 1024: group 16 keeps 512 scales, group 128 keeps 64; got {s16.size}, "
        f"{s128.size}")
    b16, b128 = impl.memory_bytes_grouped(8, 1024, 16), impl.memory_bytes_grouped(8, 1024, 128)
    assert b16 - b128 == (512 - 64) * 2, (
        f"the extra 448 scales cost 2 bytes each (float16): {448 * 2} bytes, got {b16 - b128}")


def test_memory_about_8x_smaller_than_fp32(impl) -> None:
    got = impl.memory_bytes_grouped(4096, 4096, 128)
    assert got == 8_650_752, (
        f"4096 x 4096 at group 128: 8,388,608 packed bytes + 131,072 float16 scales x 2 = "
        f"8,650,752 bytes (0.515625 per weight), got {got}")
    ratio = 4096 * 4096 * 4 / got
    assert ratio > 7, f"> 7x smaller than fp32 (7.76x), got {ratio:.2f}x"
    odd = impl.memory_bytes_grouped(3, 10, 5)
    assert odd == 3 * 5 + 3 * 2 * 2, f"3 x 10 in groups of 5: 15 packed + 12 scale bytes, got {odd}"
    odd = impl.memory_bytes_grouped(2, 9, 3)
    assert odd == 2 * 5 + 2 * 3 * 2, f"a row of 9 packs into 5 bytes: 10 + 12 = 22, got {odd}"


def test_scale_overhead_is_3_percent_at_g128_and_25_percent_at_g16(impl) -> None:
    got = {g: impl.scale_overhead(g) for g in (16, 128, 32)}
    assert_close(got[128], 0.03125, cause="arithmetic",
                 what="group 128: 16 scale bits / 128 = 0.125 bit per weight = 3.125% of 4 bits")
    assert_close(got[16], 0.25, cause="arithmetic",
                 what="group 16: 1 bit per weight = 25% of the 4-bit payload")
    assert_close(got[32], 0.125, cause="arithmetic", what="group 32: 0.5 bit per weight")


# -- GGUF Q4_1 ---------------------------------------------------------------------------------


def q4_1_block(d: float, m: float, nibbles: list[int]) -> np.ndarray:
    head = np.array([d, m], dtype="<f2").view(np.uint8)
    n = np.asarray(nibbles, dtype=np.uint8)
    return np.concatenate([head, n[:16] | (n[16:] << 4)])


def test_q4_1_block_layout(impl) -> None:
    nibbles = list(range(16)) + [15 - i for i in range(16)]
    raw = np.stack([q4_1_block(0.5, -2.0, nibbles), q4_1_block(0.25, 1.0, [3] * 32)])
    got = impl.dequantize_q4_1(raw.reshape(1, 40))
    assert got.shape == (1, 64) and got.dtype == np.float32, (
        f"two 20-byte blocks hold 64 float32 weights, got {got.shape} {got.dtype}")
    want = np.array([0.5 * n - 2.0 for n in nibbles] + [1.75] * 32, dtype=np.float32)
    assert np.array_equal(got[0], want), (
        "weight j of a block is byte j's low nibble, weight j + 16 its high nibble, value "
        f"d * nibble + m: expected {want[:4].tolist()}...{want[16:20].tolist()}, got "
        f"{got[0, :4].tolist()}...{got[0, 16:20].tolist()}")


def test_q4_1_matches_gguf_on_random_blocks(impl) -> None:
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    W = np.random.default_rng(5).standard_normal((6, 128)).astype(np.float32) * 0.05 + 0.01
    raw = quants.quantize(W, GGMLQuantizationType.Q4_1)
    want = quants.dequantize(raw, GGMLQuantizationType.Q4_1)
    got = impl.dequantize_q4_1(raw)
    assert got.shape == want.shape, f"shape {got.shape}, gguf gives {want.shape}"
    assert np.array_equal(got, want), (
        f"must equal gguf's dequantization bit for bit; {int((got != want).sum())} values differ")


def test_q4_1_refuses_a_partial_block(impl) -> None:
    with expect_raises(ValueError, "30 bytes are not a whole number of 20-byte blocks"):
        impl.dequantize_q4_1(np.zeros((2, 30), dtype=np.uint8))


@pytest.mark.parametrize(("name", "shape"), [("blk.0.attn_v.weight", (192, 576)),
                                             ("blk.0.ffn_down.weight", (576, 1536))])
def test_q4_1_reads_smollm2s_own_gguf(impl, name: str, shape: tuple[int, int]) -> None:
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    from pytest_vllm_katas.live import quant_checkpoints as qc

    sample = qc.smollm2_q4_1_sample()  # the raw bytes of two of its Q4_1 tensors
    if sample is None:
        pytest.skip(qc.smollm2_gguf_missing_reason())
    raw = sample[name]
    got = impl.dequantize_q4_1(raw)
    want = quants.dequantize(raw, GGMLQuantizationType.Q4_1)
    assert got.shape == shape, f"SmolLM2's {name} is {shape}, got {got.shape}"
    assert np.array_equal(got, want), (
        f"SmolLM2's own Q4_1 blocks ({name}): {int((got != want).sum())} of {want.size} "
        "weights differ from gguf's dequantization")


# -- AWQ ---------------------------------------------------------------------------------------


def test_awq_pack_shapes_and_dtypes(impl) -> None:
    q, s = oracle_quantize(banded(out=64, inn=128), 32)
    got = impl.awq_pack(q, s)
    shapes = (got.qweight.shape, got.qzeros.shape, got.scales.shape)
    assert shapes == ((128, 8), (4, 8), (4, 64)), (
        f"(64 out, 128 in) in groups of 32: qweight (128, 8), qzeros (4, 8), scales (4, 64); "
        f"got {shapes}")
    dtypes = (got.qweight.dtype, got.qzeros.dtype, got.scales.dtype)
    assert dtypes == (np.int32, np.int32, np.float16), f"int32, int32, float16; got {dtypes}"


def test_awq_word_uses_awq_field_order(impl) -> None:
    column = np.arange(-7, 1, dtype=np.int8)  # output columns 0..7 hold -7 .. 0
    q = np.stack([column, column[::-1]], axis=1)  # (8 out, 2 in)
    got = impl.awq_pack(q, np.full((8, 1), 0.5, dtype=np.float16))
    words = [int(w) & 0xFFFFFFFF for w in np.asarray(got.qweight).ravel()]
    assert words == [0x86427531, 0x13572468], (
        f"nibbles 1..8 in AWQ's field order {list(AWQ_PACK_ORDER)}: input row 0 is "
        f"0x86427531 (in-order would be 0x87654321), row 1 0x13572468; got "
        f"{[hex(w) for w in words]}")


def test_vllm_reads_back_every_value(impl) -> None:
    W = banded(out=96, inn=256, seed=7)
    q, s = oracle_quantize(W, 64)
    got = impl.awq_pack(q, s)
    nibbles = oracle_unpack_awq(got.qweight)  # (in, out)
    assert nibbles.shape == (256, 96), f"qweight unpacks to (256, 96), got {nibbles.shape}"
    assert np.array_equal(nibbles, q.T.astype(np.int64) + 8), (
        "vLLM unpacks qweight with AWQ's order and gets q.T + 8 back only if the fields are "
        "in AWQ's order and the rows are input features")
    zeros = oracle_unpack_awq(got.qzeros)
    assert np.array_equal(zeros, np.full((4, 96), 8)), "symmetric: every zero point is 8"
    assert np.array_equal(got.scales, s.T), "scales go in as (groups, out): the transpose"
    deq = (nibbles - zeros.repeat(64, axis=0)) * got.scales.astype(np.float32).repeat(64, axis=0)
    want = q.astype(np.float32) * np.repeat(s.astype(np.float32), 64, axis=1)
    assert np.array_equal(deq.T.astype(np.float32), want), (
        "(nibble - zero) x scale, as vLLM computes it, must be your dequantized weights")


def test_awq_pack_refuses_out_features_not_multiple_of_8(impl) -> None:
    q = np.zeros((12, 32), dtype=np.int8)
    with expect_raises(ValueError, "AWQ packs 8 output columns per int32; 12 is not a multiple",
                       match="12"):
        impl.awq_pack(q, np.ones((12, 1), dtype=np.float16))


# -- live: a real AWQ checkpoint of SmolLM2 in vLLM ------------------------------------------

RATIO_LIMIT = 1.02  # the ENV note: an AWQ checkpoint equals its dequantized bf16 twin within ~2%
GARBAGE = 5.0  # a scrambled layout multiplies perplexity by far more than this


@pytest.fixture(scope="module")
def smollm2_weights() -> dict[str, np.ndarray]:
    from pytest_vllm_katas.live import models
    from pytest_vllm_katas.live import quant_checkpoints as qc

    if not models.smollm2_available():
        pytest.skip(models.smollm2_missing_reason())
    return qc.load_weights(models.smollm2_path())


def _ppl(live_engines: Any, path: Path) -> float:
    from pytest_vllm_katas.live import quant_checkpoints as qc

    live_engines.close()  # one engine at a time: the session's shared engine goes first
    with qc.quant_engine(path) as llm:
        return qc.perplexity(llm)


@pytest.fixture(scope="module")
def live_ppl(live_engines: Any, smollm2_weights: dict, tmp_path_factory: Any) -> dict[str, Any]:
    """Perplexity of the bf16 twin (this file's oracle quantizer, dequantized), computed once."""
    from pytest_vllm_katas.live import models
    from pytest_vllm_katas.live import quant_checkpoints as qc

    src, root = models.smollm2_path(), tmp_path_factory.mktemp("int4_live")
    twin = qc.dequantized_tensors(smollm2_weights, oracle_quantize, oracle_dequantize)
    path = qc.write_checkpoint(src, root / "bf16_twin", twin)
    del twin
    return {"twin": _ppl(live_engines, path), "root": root, "src": src}


# The live tests pack with your code before asking for ``live_ppl``, whose set-up starts an
# engine: a stub reports todo without paying for one.


@pytest.mark.live
def test_vllm_loads_your_awq_checkpoint(impl, live_engines: Any, smollm2_weights: dict,
                                        request: pytest.FixtureRequest) -> None:
    from pytest_vllm_katas.live import quant_checkpoints as qc

    tensors = qc.awq_tensors(smollm2_weights, impl.quantize_grouped, impl.awq_pack)
    live_ppl = request.getfixturevalue("live_ppl")
    path = qc.write_checkpoint(live_ppl["src"], live_ppl["root"] / "awq", tensors,
                               qc.awq_config())
    del tensors
    got = _ppl(live_engines, path)
    twin = live_ppl["twin"]
    print(f"perplexity: AWQ (yours) {got:.2f}, bf16 twin {twin:.2f}")
    assert got / twin < RATIO_LIMIT and twin / got < RATIO_LIMIT, (
        f"vLLM's AWQ kernel on your checkpoint gives perplexity {got:.2f}; a bf16 checkpoint "
        f"of the same dequantized weights gives {twin:.2f}: they must agree within 2%")


@pytest.mark.live
def test_a_plain_nibble_order_loads_as_garbage(impl, live_engines: Any, smollm2_weights: dict,
                                               request: pytest.FixtureRequest) -> None:
    """The same values with fields in plain order (what a packer that forgets AWQ's
    interleave writes): vLLM loads it without complaint, and the model is broken."""
    from pytest_vllm_katas.live import quant_checkpoints as qc

    def plain_order(q: np.ndarray, s: np.ndarray) -> Any:
        layer = impl.awq_pack(q, s)
        w = np.asarray(layer.qweight).astype(np.int64) & 0xFFFFFFFF
        fields = (w[..., None] >> (4 * np.arange(8))) & 0xF
        logical = fields[..., REVERSE_AWQ_ORDER]  # column order
        plain = (logical << (4 * np.arange(8))).sum(axis=-1).astype(np.uint32).view(np.int32)
        return type(layer)(qweight=plain, qzeros=layer.qzeros, scales=layer.scales)

    tensors = qc.awq_tensors(smollm2_weights, impl.quantize_grouped, plain_order)
    live_ppl = request.getfixturevalue("live_ppl")
    path = qc.write_checkpoint(live_ppl["src"], live_ppl["root"] / "awq_plain", tensors,
                               qc.awq_config())
    del tensors
    got = _ppl(live_engines, path)
    print(f"perplexity: plain nibble order {got:.1f}, bf16 twin {live_ppl['twin']:.2f}")
    assert got > GARBAGE * live_ppl["twin"], (
        f"in-order fields put column p where vLLM reads column AWQ_PACK_ORDER[p]: perplexity "
        f"should explode past {GARBAGE}x the twin's {live_ppl['twin']:.2f}, got {got:.2f}")
