"""Spec for kata 07-05 (07-03 in Triton): a tiled fp16 GEMM whose counted loads equal the model.

On a GPU the kernel runs on CUDA with realistic sizes; without one the plugin turns the Triton
interpreter on and the sizes shrink, so the whole kata runs in seconds on a CPU. torch and the
scaffold are imported inside the tests: this module must import without torch, so that the
plugin can skip it with an install hint instead of failing collection.

Every operand is a view into a larger NaN-filled buffer (``scaffold.make_operands``): a load
past a ragged edge turns the result into NaN instead of a plausible number.
"""

from __future__ import annotations

import math

import pytest

from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.triton_fallback import interpreter_enabled

pytestmark = pytest.mark.gpu_req

INTERPRETED = interpreter_enabled()
GATE = "fp16-accumulated-in-fp32"  # entries of order 1: max |Δ| <= 1e-2

if INTERPRETED:
    TILES = [(16, 16, 16), (32, 16, 32), (16, 32, 16)]
    # (M, N, K): the course's ragged 37x23x19, two decode shapes, one that every tile divides.
    SHAPES = [(37, 23, 19), (1, 40, 48), (8, 33, 40), (64, 48, 32)]
    STRIDED = (37, 23, 40)
else:
    TILES = [(64, 64, 32), (128, 128, 32), (128, 256, 64)]
    # Decode at 4096, a SmolLM2 MLP shape (576 -> 1536) at batch 8, ragged, prefill-like.
    SHAPES = [(1, 4096, 4096), (8, 1536, 576), (300, 1000, 777), (2048, 512, 256)]
    STRIDED = (300, 1000, 777)

PARAMS = [
    pytest.param(shape, tile, id="x".join(map(str, shape)) + "-tile" + "x".join(map(str, tile)))
    for shape in SHAPES
    for tile in TILES
]


@pytest.fixture
def lab():
    """The lab's scaffold module (imported here: it needs torch)."""
    from katas.phase07.triton_tiled_gemm import scaffold

    return scaffold


def model_bytes(M: int, N: int, K: int, bm: int, bn: int) -> int:
    """The test's own oracle (fp16): A once per column of tiles, B once per row of tiles."""
    return 2 * (M * K * math.ceil(N / bn) + K * N * math.ceil(M / bm))


def check_product(got, lab, a, b, what: str) -> None:
    import torch

    M, N = a.shape[0], b.shape[1]
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == (M, N), (
        f"{what}: expected a ({M}, {N}) tensor, got {getattr(got, 'shape', type(got))}"
    )
    assert got.dtype == torch.float16 and got.device == a.device, (
        f"{what}: the result must be float16 on the inputs' device, got {got.dtype} on "
        f"{got.device}"
    )
    assert_close(got, lab.matmul_reference(a, b), cause=GATE, what=what)


# -- the model --------------------------------------------------------------------------------


def test_modelled_load_bytes(impl) -> None:
    cases = [
        ((1024, 1024, 1024, 128, 128), 33_554_432),  # kata tiled_gemm's 16,777,216 loads
        ((37, 23, 19, 16, 16), 5434),
        ((37, 23, 19, 32, 16), 4560),
        ((1, 4096, 4096, 128, 256), 33_685_504),  # decode: B read once, A 16 times
    ]
    for args, want in cases:
        assert want == model_bytes(*args)
        got = impl.modelled_load_bytes(*args)
        assert got == want, (
            f"modelled_load_bytes{args} in fp16: 2 * (M*K*ceil(N/block_n) + "
            f"K*N*ceil(M/block_m)) = {want:,}, got {got!r}"
        )
    fp32 = impl.modelled_load_bytes(37, 23, 19, 16, 16, dtype_bytes=4)
    assert fp32 == 2 * 5434, f"with dtype_bytes=4 the count doubles to 10868, got {fp32!r}"


# -- the kernel -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "tile"), PARAMS)
def test_matches_torch_matmul(impl, lab, shape, tile) -> None:
    M, N, K = shape
    a, b = lab.make_operands(M, N, K, seed=1)
    got = impl.tiled_matmul(a, b, *tile)
    check_product(got, lab, a, b, f"tiled_matmul {M}x{N}x{K} with tile {tile}")


@pytest.mark.parametrize(("shape", "tile"), PARAMS)
def test_counted_bytes_equal_the_model(impl, lab, shape, tile) -> None:
    M, N, K = shape
    bm, bn, bk = tile
    a, b = lab.make_operands(M, N, K, seed=2)
    result = impl.counted_matmul(a, b, bm, bn, bk)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"counted_matmul must return (c, loaded_bytes), got {type(result)}"
    )
    c, counted = result
    check_product(c, lab, a, b, f"counted_matmul {M}x{N}x{K} with tile {tile}")
    want = model_bytes(M, N, K, bm, bn)
    model = impl.modelled_load_bytes(M, N, K, bm, bn)
    tiles = math.ceil(M / bm) * math.ceil(N / bn)
    full = 2 * tiles * math.ceil(K / bk) * (bm * bk + bk * bn)
    hint = ""
    if counted == full:
        hint = ": every load was charged as a full tile; masked-off elements load nothing"
    elif counted == want + 2 * M * N:
        hint = ": the store of C was counted as a load"
    elif counted < want:
        hint = ": some K steps were not counted (every step of every program adds its loads)"
    assert counted == want == model, (
        f"{M}x{N}x{K} with tile {tile}: the kernel counted {counted:,} bytes loaded, your "
        f"modelled_load_bytes says {model:,}, the model is {want:,}{hint}"
    )


def test_count_is_per_call(impl, lab) -> None:
    M, N, K = SHAPES[0]
    bm, bn, bk = TILES[0]
    a, b = lab.make_operands(M, N, K, seed=3)
    first = impl.counted_matmul(a, b, bm, bn, bk)[1]
    second = impl.counted_matmul(a, b, bm, bn, bk)[1]
    want = model_bytes(M, N, K, bm, bn)
    assert (first, second) == (want, want), (
        f"two identical calls must each report {want:,} bytes; got {first:,} then {second:,} "
        "(a counter kept between calls must start at zero every time)"
    )


def test_accumulates_in_fp32(impl, lab) -> None:
    import torch

    # Whole numbers 0..7 over K = 512: the exact sums reach ~12,000, where fp16 keeps only
    # multiples of 8. In fp32 every partial sum is exact, so the one rounding is the final cast,
    # and the result equals the reference bit for bit. An fp16 accumulator rounds at every step.
    bm, bn, bk = TILES[0]
    a, b = lab.make_operands(bm, bn, 512, seed=4, integers=True)
    got = impl.tiled_matmul(a, b, bm, bn, bk)
    expected = lab.matmul_reference(a, b)
    assert tuple(got.shape) == tuple(expected.shape), (
        f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    )
    wrong = int((got != expected).sum())
    assert wrong == 0, (
        f"integer inputs over K = 512: {wrong} of {expected.numel()} entries differ from the "
        "fp32 sum rounded once to fp16 (largest difference "
        f"{(got.float() - expected.float()).abs().max().item():g}): accumulate in fp32 "
        "(tl.zeros(..., dtype=tl.float32)) and cast to fp16 only when storing"
    )
    assert got.dtype == torch.float16, f"the result must be float16, got {got.dtype}"


def test_strided_inputs(impl, lab) -> None:
    M, N, K = STRIDED
    bm, bn, bk = TILES[1]
    a_t = lab.make_operands(K, N, M, seed=5)[0]  # (K, M)
    a = a_t.t()  # (M, K) with stride_am = 1 and stride_ak = the buffer's row length
    b_cols = lab.make_operands(M, 2 * N, K, seed=6)[1][:, ::2]  # (K, N), column stride 2
    assert a.stride(0) == 1 and b_cols.stride(1) == 2
    got = impl.tiled_matmul(a, b_cols, bm, bn, bk)
    check_product(got, lab, a, b_cols,
                  f"tiled_matmul on a transposed A (strides {a.stride()}) and every other column "
                  f"of a B (strides {b_cols.stride()}): step along K by BLOCK_K * stride_ak and "
                  "BLOCK_K * stride_bk, and read every stride from the tensors")


def test_ragged_edges_never_read_poison(impl, lab) -> None:
    import torch

    # 37 rows, 23 columns, K = 19 in the interpreter: no tile divides anything, and every
    # element just past an edge is NaN.
    M, N, K = SHAPES[0] if INTERPRETED else (129, 257, 77)
    for tile in TILES:
        a, b = lab.make_operands(M, N, K, seed=7)
        got = impl.tiled_matmul(a, b, *tile)
        assert tuple(got.shape) == (M, N), f"expected shape ({M}, {N}), got {tuple(got.shape)}"
        nans = int(torch.isnan(got).sum())
        assert nans == 0, (
            f"{M}x{N}x{K} with tile {tile}: {nans} NaN entries, so some load read past an "
            "edge (rows >= M, columns >= N, or k >= K in the last K step): mask all three"
        )
        check_product(got, lab, a, b, f"tiled_matmul {M}x{N}x{K} with tile {tile}")


def test_bad_inputs_are_refused(impl, lab) -> None:
    a, b = lab.make_operands(16, 16, 32, seed=8)
    with expect_raises(ValueError, "A is 16x32 and B is 16x16: no inner dimension to sum over",
                       match="inner"):
        impl.tiled_matmul(a, b[:16])
    with expect_raises(ValueError, "the kernel is fp16 in, fp32 accumulate", match="float16"):
        impl.tiled_matmul(a.float(), b.float())
    with expect_raises(ValueError, "tl.dot needs tiles of at least 16 and tl.arange a power of "
                       "two", match="block_m"):
        impl.tiled_matmul(a, b, 24, 16, 16)
    with expect_raises(ValueError, "tl.dot needs tiles of at least 16", match="block_k"):
        impl.counted_matmul(a, b, 16, 16, 8)
