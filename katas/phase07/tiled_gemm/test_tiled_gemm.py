"""Spec for kata 07-03: tiling changes no number, only the traffic; decode cannot be tiled out of
the memory wall.

Traffic is counted in elements loaded from slow memory unless a name says bytes. The exactness
tests use integer matrices, so every summation order gives the same answer and any difference is
a wrong index, never rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

H200_RIDGE = 989e12 / 4.3e12  # 230 FLOP/byte
DECODE_N = DECODE_K = 4096


def int_operands(M: int, N: int, K: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-9, 10, size=(M, K)), rng.integers(-9, 10, size=(K, N))


def loads(M: int, N: int, K: int, tm: int, tn: int) -> int:
    """The test's own oracle: A once per column of tiles, B once per row of tiles."""
    return M * K * math.ceil(N / tn) + K * N * math.ceil(M / tm)


def check_product(got, A, B, what: str) -> None:
    expected = A @ B
    assert isinstance(got, np.ndarray) and got.shape == expected.shape, (
        f"{what}: expected an array of shape {expected.shape}, got "
        f"{getattr(got, 'shape', type(got))}"
    )
    wrong = np.argwhere(got != expected)
    assert wrong.size == 0, (
        f"{what}: {len(wrong)} of {expected.size} entries differ from A @ B (integer inputs, so "
        f"this is an index error, not rounding); first at {tuple(wrong[0])}: got "
        f"{got[tuple(wrong[0])]}, expected {expected[tuple(wrong[0])]} (the last row / column of "
        "tiles is where ragged edges go wrong)"
    )


# -- the tiled product ------------------------------------------------------------------------


@pytest.mark.parametrize(("tile_m", "tile_n"), [(16, 16), (8, 12), (64, 48), (4, 16)])
def test_tiled_equals_matmul_divisible(impl, tile_m: int, tile_n: int) -> None:
    A, B = int_operands(64, 48, 32, seed=1)
    check_product(impl.tiled_gemm(A, B, tile_m, tile_n), A, B,
                  f"tiled_gemm 64x48x32 with {tile_m}x{tile_n} tiles")


@pytest.mark.parametrize(
    ("tile_m", "tile_n", "tile_k"),
    [(8, 8, None), (16, 5, 7), (6, 4, 3), (40, 30, None), (1, 23, 19), (37, 1, 2)],
)
def test_tiled_equals_matmul_ragged(impl, tile_m: int, tile_n: int, tile_k) -> None:
    # The course's 37x23x19: no tile size divides any dimension, so every edge tile is partial.
    A, B = int_operands(37, 23, 19, seed=2)
    check_product(impl.tiled_gemm(A, B, tile_m, tile_n, tile_k), A, B,
                  f"tiled_gemm 37x23x19 with tiles {tile_m}x{tile_n}, tile_k={tile_k}")


def test_split_k_accumulates_every_slice(impl) -> None:
    A, B = int_operands(20, 12, 19, seed=3)
    for tile_k in (1, 4, 7, 18, 19, 25):
        check_product(impl.tiled_gemm(A, B, 8, 8, tile_k), A, B,
                      f"tiled_gemm 20x12x19 with tile_k={tile_k} (every K slice must be added "
                      "into the tile's accumulator, the last short one included)")


def test_float_inputs_match_matmul_to_rounding(impl) -> None:
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((37, 19)), rng.standard_normal((19, 23))
    got = impl.tiled_gemm(A, B, 16, 8, 5)
    assert_close(got, A @ B, cause="float64-reordered",
                 what="tiled_gemm on float64 (tiling only reorders the sums)")
    assert got.dtype == np.float64, f"float64 inputs must give a float64 result, got {got.dtype}"


def test_mismatched_shapes_are_refused(impl) -> None:
    A, B = int_operands(4, 5, 6, seed=5)
    with expect_raises(ValueError, "A is 4x6 and B is 5x5: no inner dimension to sum over",
                       match="inner"):
        impl.tiled_gemm(A, B[:5], 2, 2)
    with expect_raises(ValueError, "a tile with 0 rows covers nothing", match="tile_m"):
        impl.tiled_gemm(A, B, 0, 2)


# -- the traffic model ------------------------------------------------------------------------


def test_tile_size_one_is_the_naive_algorithm(impl) -> None:
    for M, N, K in ((1024, 1024, 1024), (37, 23, 19), (1, 4096, 4096)):
        naive = impl.naive_traffic(M, N, K)
        assert naive == 2 * M * N * K, (
            f"naive_traffic({M}, {N}, {K}): every C[i, j] loads a row of A and a column of B, "
            f"2K elements, so {2 * M * N * K}; got {naive}"
        )
        tiled = impl.tiled_traffic(M, N, K, 1, 1)
        assert tiled == naive, (
            f"tiled_traffic({M}, {N}, {K}) with 1x1 tiles is the naive loop: {naive} loads, "
            f"got {tiled}"
        )


def test_traffic_formulas(impl) -> None:
    # The course's numbers: 1024^3 with 128x128 tiles moves 16 Mi element loads, not 2 Gi.
    naive = impl.naive_traffic(1024, 1024, 1024)
    tiled = impl.tiled_traffic(1024, 1024, 1024, 128, 128)
    assert (naive, tiled) == (2_147_483_648, 16_777_216), (
        "1024^3 GEMM: naive 2,147,483,648 element loads, tiled with 128x128 tiles 16,777,216 "
        f"(each of the 8 x 8 tiles reads a 128x1024 strip of A and a 1024x128 strip of B); "
        f"got naive {naive:,}, tiled {tiled:,}"
    )
    skewed = impl.tiled_traffic(2048, 4096, 4096, 128, 256)
    assert skewed == 402_653_184, (
        "2048x4096x4096 with 128x256 tiles: A read 4096/256 = 16 times (134,217,728) plus B "
        f"read 2048/128 = 16 times (268,435,456) = 402,653,184; got {skewed:,}"
    )


@pytest.mark.parametrize(("tile_m", "tile_n"), [(8, 8), (16, 4), (4, 16), (5, 7), (40, 30)])
def test_ragged_edges_read_only_what_exists(impl, tile_m: int, tile_n: int) -> None:
    M, N, K = 37, 23, 19
    got = impl.tiled_traffic(M, N, K, tile_m, tile_n)
    want = loads(M, N, K, tile_m, tile_n)
    hints = []
    if got == M * K * (N // tile_n) + K * N * (M // tile_m):
        hints.append("the partial last tiles were dropped (floor, not ceil)")
    if got == M * K * math.ceil(N / tile_m) + K * N * math.ceil(M / tile_n):
        hints.append("tile_m and tile_n are swapped: A is re-read once per column of tiles "
                     "(N / tile_n), B once per row of tiles (M / tile_m)")
    if got == K * tile_m * math.ceil(M / tile_m) * math.ceil(N / tile_n) + K * tile_n * math.ceil(
            N / tile_n) * math.ceil(M / tile_m):
        hints.append("edge tiles were counted as full tiles: they read only the rows and "
                     "columns that exist")
    assert got == want, (
        f"tiled_traffic(37, 23, 19, {tile_m}, {tile_n}) should be M*K*ceil(N/tile_n) + "
        f"K*N*ceil(M/tile_m) = {want}, got {got}" + (f": {'; '.join(hints)}" if hints else "")
    )


def test_bigger_tiles_mean_less_traffic(impl) -> None:
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    traffic = [impl.tiled_traffic(1024, 1024, 1024, t, t) for t in sizes]
    assert all(a > b for a, b in zip(traffic, traffic[1:], strict=False)), (
        f"traffic must fall as square tiles grow {sizes}: got {traffic}"
    )
    assert traffic[-1] == 2 * 1024 * 1024, (
        "one tile covering the whole 1024x1024 output reads each operand exactly once: "
        f"2 * 1024 * 1024 = 2,097,152 loads, got {traffic[-1]:,}"
    )


def test_tile_k_changes_no_traffic(impl) -> None:
    base = impl.tiled_traffic(37, 23, 19, 8, 8)
    assert base == 4294, f"tiled_traffic(37, 23, 19, 8, 8) should be 4294, got {base}"
    for tile_k in (1, 4, 7, 16, 19, 32):
        got = impl.tiled_traffic(37, 23, 19, 8, 8, tile_k=tile_k)
        assert got == base, (
            f"tile_k={tile_k} cuts each strip into K pieces that still add up to the strip: "
            f"traffic stays {base}, got {got} (a short last K piece is not a full one)"
        )


def test_reuse_factor_is_the_harmonic_tile_size(impl) -> None:
    square = impl.reuse_factor(128, 128)
    skewed = impl.reuse_factor(256, 16)
    assert_close(square, 128.0, cause="arithmetic",
                 what="reuse_factor(128, 128): square tiles reuse each element 128 times")
    assert_close(skewed, 512 / 17, cause="arithmetic",
                 what="reuse_factor(256, 16): 2 / (1/256 + 1/16) = 30.12 (the harmonic mean: "
                 "the thin side rules, not the area and not the average 136)")
    for tm, tn in ((128, 128), (256, 16), (64, 32), (16, 256)):
        ratio = impl.naive_traffic(1024, 1024, 1024) / impl.tiled_traffic(1024, 1024, 1024, tm,
                                                                           tn)
        assert_close(impl.reuse_factor(tm, tn), ratio, cause="arithmetic",
                     what=f"reuse_factor({tm}, {tn}) must equal naive / tiled traffic on "
                     "1024^3, where the tiles divide the matrix")


def test_decode_shape_has_no_reuse_to_harvest(impl) -> None:
    for tile in (16, 64, 128, 256):
        reuse = impl.reuse_factor(tile, tile, M=1)
        assert reuse < 2, (
            f"reuse_factor({tile}, {tile}, M=1) = {reuse}: with one token a tile has one row "
            "(tile_m clamps to M), so reuse is 2 / (1 + 1/tile_n) < 2 whatever the tile"
        )
        ratio = impl.naive_traffic(1, 4096, 4096) / impl.tiled_traffic(1, 4096, 4096, tile, tile)
        assert ratio < 2, f"decode 1x4096x4096: naive / tiled traffic must stay < 2, got {ratio}"
        assert_close(reuse, ratio, cause="arithmetic",
                     what=f"reuse_factor({tile}, {tile}, M=1) against the traffic ratio")
    assert_close(impl.reuse_factor(128, 128, M=8), 256 / 17, cause="arithmetic",
                 what="reuse_factor(128, 128, M=8): tile_m clamps to 8, 2 / (1/8 + 1/128)")
    assert_close(impl.reuse_factor(128, 128, M=4096, N=16), 2 / (1 / 128 + 1 / 16),
                 cause="arithmetic", what="reuse_factor(128, 128, N=16): tile_n clamps to N")


def test_traffic_bytes_counts_each_output_once(impl) -> None:
    cases = [
        # (M, N, K, tile, bytes): loads * 2 + M * N * 2
        (1, DECODE_N, DECODE_K, 128, 33_824_768),
        (8, DECODE_N, DECODE_K, 128, 35_717_120),
        (2048, DECODE_N, DECODE_K, 128, 1_090_519_040),
    ]
    for M, N, K, tile, want in cases:
        got = impl.traffic_bytes(M, N, K, tile, tile)
        assert got == want, (
            f"traffic_bytes({M}, {N}, {K}, {tile}, {tile}) in fp16: loads * 2 + one write of "
            f"C (M * N * 2) = {want:,}, got {got:,}"
            + (" (C written once per K step?)" if got > want + M * N * 2 else "")
        )
    fp32_out = impl.traffic_bytes(37, 23, 19, 8, 8, dtype_bytes=2, out_bytes=4)
    assert fp32_out == 4294 * 2 + 37 * 23 * 4, (
        "traffic_bytes(37, 23, 19, 8, 8, dtype_bytes=2, out_bytes=4): 4294 fp16 loads and an "
        f"fp32 C, {4294 * 2 + 37 * 23 * 4}; got {fp32_out}"
    )


def test_arithmetic_intensity_numbers(impl) -> None:
    cases = [
        (1, 128, 128, 33_554_432 / 33_824_768, "decode, one token"),
        (8, 128, 128, 268_435_456 / 35_717_120, "decode, 8 tokens"),
        (2048, 128, 128, 68_719_476_736 / 1_090_519_040, "prefill, 128x128 tiles"),
        (2048, 2048, 4096, 1024.0, "prefill, one tile = each operand read once"),
    ]
    for M, tm, tn, want, label in cases:
        got = impl.arithmetic_intensity(M, DECODE_N, DECODE_K, tm, tn)
        assert_close(got, want, cause="arithmetic",
                     what=f"arithmetic_intensity({M}, 4096, 4096, {tm}, {tn}) ({label}): "
                     "2*M*N*K FLOPs over traffic_bytes")


def test_decode_and_prefill_sides_of_the_h200_roofline(impl) -> None:
    for M in (1, 2, 4, 8):
        for tm, tn in ((128, 128), (M, 4096)):
            ai = impl.arithmetic_intensity(M, DECODE_N, DECODE_K, tm, tn)
            side = impl.roofline_side(ai)
            assert side == "memory", (
                f"decode M={M} with {tm}x{tn} tiles: intensity {ai:.2f} FLOP/B is far below the "
                f"H200 ridge ({H200_RIDGE:.0f}), so 'memory'; got {side!r}"
            )
    ideal = impl.roofline_side(impl.arithmetic_intensity(2048, 4096, 4096, 2048, 4096))
    assert ideal == "compute", (
        f"prefill 2048x4096x4096 reading each operand once (1024 FLOP/B) is above the ridge "
        f"{H200_RIDGE:.0f}: 'compute'; got {ideal!r}"
    )
    tiled = impl.roofline_side(impl.arithmetic_intensity(2048, 4096, 4096, 128, 128))
    assert tiled == "memory", (
        "prefill with 128x128 tiles whose every strip comes from HBM: 63 FLOP/B, below the "
        f"ridge: 'memory' (real kernels get the rest from L2); got {tiled!r}"
    )
    at, below = impl.roofline_side(230.0), impl.roofline_side(229.9)
    assert (at, below) == ("compute", "memory"), (
        "the H200 ridge is 989e12 / 4.3e12 = 230 FLOP/B; exactly at the ridge counts as "
        f"'compute', just below as 'memory'; got {at!r} at 230 and {below!r} at 229.9"
    )
    a100 = impl.roofline_side(100.0, peak_flops=312e12, bandwidth=2.0e12)
    assert a100 == "memory", (
        "roofline_side(100, peak_flops=312e12, bandwidth=2.0e12): the ridge is 156 FLOP/B, so "
        f"100 is 'memory'; got {a100!r} (are the arguments used, and ridge = peak / bandwidth?)"
    )


def test_fast_memory_bytes(impl) -> None:
    got = impl.fast_memory_bytes(128, 128, 32)
    assert got == 81_920, (
        "fast_memory_bytes(128, 128, 32): a 128x32 piece of A and a 32x128 piece of B in fp16 "
        f"(16,384 B) plus a 128x128 fp32 accumulator (65,536 B) = 81,920; got {got:,}"
    )
    deeper = impl.fast_memory_bytes(128, 128, 64)
    assert deeper == 98_304, (
        "fast_memory_bytes(128, 128, 64): tile_k changes what must sit on chip (98,304 B) even "
        f"though it changes no traffic; got {deeper:,}"
    )
    fp32 = impl.fast_memory_bytes(64, 32, 16, dtype_bytes=4, acc_bytes=4)
    assert fp32 == (64 * 16 + 16 * 32) * 4 + 64 * 32 * 4, (
        f"fast_memory_bytes(64, 32, 16, dtype_bytes=4, acc_bytes=4) should be 14,336, got {fp32}"
    )


def test_bad_sizes_are_refused(impl) -> None:
    with expect_raises(ValueError, "a tile with 0 columns covers nothing", match="tile_n"):
        impl.tiled_traffic(8, 8, 8, 4, 0)
    with expect_raises(ValueError, "a GEMM with M=0 rows has no traffic to model", match="M"):
        impl.naive_traffic(0, 8, 8)
    with expect_raises(ValueError, "tile_k=0 never advances through K", match="tile_k"):
        impl.tiled_traffic(8, 8, 8, 4, 4, tile_k=0)
    with expect_raises(ValueError, "a tile with 0 rows reuses nothing", match="tile_m"):
        impl.reuse_factor(0, 16)
