"""Spec for kata 00-04: prefill and decode sit on opposite sides of the roofline's ridge."""

from __future__ import annotations

import numbers

import numpy as np
import pytest

from pytest_vllm_katas import assert_close

pytestmark = pytest.mark.cpu_ok

# Decimal SI units, as on the spec sheets.
A100_FLOPS = 312e12  # fp16/bf16 dense FLOP/s, A100-80GB SXM
A100_BANDWIDTH = 2.0e12  # HBM bytes/s
H100_FLOPS = 990e12  # fp16 dense FLOP/s, H100 SXM (approximate)
H100_BANDWIDTH = 3.35e12
A10_FLOPS = 125e12  # fp16 dense tensor FLOP/s, A10 (24 GB)
A10_BANDWIDTH = 600e9
A100_RIDGE = 156.0
FP16 = 2
FP8 = 1
INT4 = 0.5
PARAMS_8B = 8e9
PARAMS_70B = 70e9


def _number(got: object, what: str) -> float:
    """``got`` must be a real number (int or float) before any comparison or formatting."""
    assert isinstance(got, numbers.Real) and not isinstance(got, bool), (
        f"{what} must be a number; got {type(got).__name__} {got!r:.60}"
    )
    return float(got)


def _whole(got: object, what: str) -> int:
    """``got`` must be an int: a count of tokens."""
    assert isinstance(got, int) and not isinstance(got, bool), (
        f"{what} is a whole number of tokens: return an int; got {type(got).__name__} "
        f"{got!r:.60}"
    )
    return got


def _bound(got: object, what: str) -> bool:
    """``got`` must be a bool (numpy's bool is accepted too)."""
    assert isinstance(got, bool | np.bool_), (
        f"{what} must return True or False; got {type(got).__name__} {got!r:.60}"
    )
    return bool(got)


def intensity(impl, n_params: float, num_tokens: int, dtype_bytes: float) -> float:
    return _number(impl.arithmetic_intensity(n_params, num_tokens, dtype_bytes),
                   f"arithmetic_intensity({n_params:g}, {num_tokens}, {dtype_bytes})")


def compute_bound(impl, value: float, ridge: float) -> bool:
    return _bound(impl.is_compute_bound(value, ridge), f"is_compute_bound({value:g}, {ridge:g})")


def test_a100_ridge_point(impl) -> None:
    got = _number(impl.ridge_point(A100_FLOPS, A100_BANDWIDTH), "ridge_point")
    assert_close(got, 156.0, cause="arithmetic", what="A100 ridge point (312e12 / 2.0e12)")


def test_h100_ridge_point_is_higher(impl) -> None:
    got = _number(impl.ridge_point(H100_FLOPS, H100_BANDWIDTH), "ridge_point")
    assert 295 < got < 296, (
        f"H100: 990e12 / 3.35e12 is about 295.5 FLOP/byte (FLOPs grow faster than bandwidth "
        f"across GPU generations); got {got}"
    )


@pytest.mark.parametrize(
    ("num_tokens", "dtype_bytes", "expected"),
    [
        pytest.param(1, FP16, 1.0, id="decode_one_token-fp16"),
        pytest.param(64, FP16, 64.0, id="decode_batch_64-fp16"),
        pytest.param(2048, FP16, 2048.0, id="prefill_2048_tokens-fp16"),
        pytest.param(1, FP8, 2.0, id="decode_one_token-fp8"),
        pytest.param(1, INT4, 4.0, id="decode_one_token-int4"),
    ],
)
@pytest.mark.parametrize(
    "n_params",
    [
        pytest.param(125e6, id="125M_params"),
        pytest.param(PARAMS_8B, id="8B_params"),
        pytest.param(PARAMS_70B, id="70B_params"),
    ],
)
def test_intensity_is_just_tokens_over_dtype(
    impl, n_params: float, num_tokens: int, dtype_bytes: float, expected: float
) -> None:
    got = intensity(impl, n_params, num_tokens, dtype_bytes)
    assert_close(
        got,
        expected,
        cause="arithmetic",
        what=f"intensity of {num_tokens} tokens at {dtype_bytes} bytes/param (2 x tokens / dtype)",
    )


def test_model_size_cancels_out_of_intensity(impl) -> None:
    small = intensity(impl, PARAMS_8B, 2048, FP16)
    large = intensity(impl, PARAMS_70B, 2048, FP16)
    assert_close(small, large, cause="arithmetic", what="8B vs 70B intensity at 2048 tokens")


def test_single_decode_is_hopelessly_bandwidth_bound(impl) -> None:
    decode = intensity(impl, PARAMS_8B, 1, FP16)
    assert_close(decode, 1.0, cause="arithmetic", what="single-stream fp16 decode intensity")
    assert compute_bound(impl, decode, A100_RIDGE) is False, (
        "intensity 1 against a ridge of 156 is memory-bound: is_compute_bound must be False"
    )


def test_prefill_is_compute_bound(impl) -> None:
    prefill = intensity(impl, PARAMS_8B, 2048, FP16)
    assert_close(prefill, 2048.0, cause="arithmetic", what="2048-token fp16 prefill intensity")
    assert compute_bound(impl, prefill, A100_RIDGE) is True, (
        "intensity 2048 against a ridge of 156 is compute-bound: is_compute_bound must be True"
    )


def test_critical_batch_size_is_the_ridge(impl) -> None:
    critical = _whole(impl.critical_batch_size(A100_RIDGE, FP16), "critical_batch_size")
    assert critical == 156, (
        f"in fp16 intensity equals tokens, so the crossover is 156 tokens; got {critical}"
    )
    below = compute_bound(impl, intensity(impl, PARAMS_8B, 155, FP16), A100_RIDGE)
    at = compute_bound(impl, intensity(impl, PARAMS_8B, 156, FP16), A100_RIDGE)
    assert (below, at) == (False, True), (
        f"155 tokens per weight read must be memory-bound and 156 compute-bound (the ridge "
        f"itself counts as compute-bound: use >=); got {below} and {at}"
    )


@pytest.mark.parametrize(
    ("peak_flops", "bandwidth", "dtype_bytes", "expected"),
    [
        pytest.param(A100_FLOPS, A100_BANDWIDTH, FP8, 78, id="a100-fp8_halves_it"),
        pytest.param(A100_FLOPS, A100_BANDWIDTH, 4, 312, id="a100-fp32_doubles_it"),
        pytest.param(H100_FLOPS, H100_BANDWIDTH, FP16, 296, id="h100-fp16_rounds_up_from_295.5"),
        pytest.param(A10_FLOPS, A10_BANDWIDTH, FP16, 209, id="a10-fp16_rounds_up_from_208.3"),
    ],
)
def test_critical_batch_size_moves_with_dtype_and_hardware(
    impl, peak_flops: float, bandwidth: float, dtype_bytes: float, expected: int
) -> None:
    ridge = _number(impl.ridge_point(peak_flops, bandwidth), "ridge_point")
    critical = _whole(impl.critical_batch_size(ridge, dtype_bytes), "critical_batch_size")
    assert critical == expected, (
        f"ridge {ridge:.2f} FLOP/byte at {dtype_bytes} bytes per weight: the fewest whole "
        f"tokens per weight read whose intensity reaches the ridge is {expected}; got {critical}"
    )
    at = intensity(impl, PARAMS_8B, critical, dtype_bytes)
    just_below = intensity(impl, PARAMS_8B, critical - 1, dtype_bytes)
    assert compute_bound(impl, at, ridge) and not compute_bound(impl, just_below, ridge), (
        f"{critical} tokens must be the first compute-bound count, and {critical - 1} the last "
        f"memory-bound one"
    )


def test_decode_speed_limit_8b_fp16(impl) -> None:
    got = _number(impl.decode_tokens_per_second(PARAMS_8B, FP16, A100_BANDWIDTH),
                  "decode_tokens_per_second")
    assert_close(got, 125.0, cause="arithmetic", what="8B fp16 decode ceiling on an A100 (tok/s)")


def test_batching_multiplies_decode_throughput_for_free(impl) -> None:
    got = _number(impl.decode_tokens_per_second(PARAMS_8B, FP16, A100_BANDWIDTH, batch=64),
                  "decode_tokens_per_second")
    assert_close(got, 8000.0, cause="arithmetic", what="8B fp16 decode at batch 64 (tok/s)")


def test_int4_weights_quadruple_the_decode_ceiling(impl) -> None:
    got = _number(impl.decode_tokens_per_second(PARAMS_8B, INT4, A100_BANDWIDTH),
                  "decode_tokens_per_second")
    assert_close(got, 500.0, cause="arithmetic", what="8B int4 decode ceiling (4 GB of weights)")


def test_h100_decode_ceiling_is_about_209(impl) -> None:
    got = _number(impl.decode_tokens_per_second(PARAMS_8B, FP16, H100_BANDWIDTH),
                  "decode_tokens_per_second")
    assert 209 < got < 210, f"3.35e12 B/s over 16e9 B is about 209.4 tok/s; got {got}"


def test_single_stream_decode_uses_0_6_percent_of_compute(impl) -> None:
    decode = intensity(impl, PARAMS_8B, 1, FP16)
    got = _number(impl.compute_utilization(decode, A100_RIDGE), "compute_utilization")
    assert_close(got, 1 / 156, cause="arithmetic", what="single-stream decode utilization")
    assert round(100 * got, 1) == 0.6, f"1/156 is about 0.6% of peak, got {100 * got:.2f}%"


def test_compute_bound_work_uses_all_of_compute(impl) -> None:
    got = _number(impl.compute_utilization(2048.0, A100_RIDGE), "compute_utilization")
    assert_close(got, 1.0, cause="arithmetic", what="utilization of a 2048-token prefill")
    batch_64 = _number(impl.compute_utilization(64.0, A100_RIDGE), "compute_utilization")
    assert_close(batch_64, 64 / 156, cause="arithmetic", what="utilization of a batch-64 decode")
