"""Spec for kata 00-02: the KV-cache bytes per token and per sequence, and how many users fit."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cpu_ok

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# (num_layers, num_kv_heads, head_dim, dtype_bytes)
LLAMA3_8B_FP16 = (32, 8, 128, 2)
LLAMA3_8B_FP8 = (32, 8, 128, 1)
LLAMA3_8B_AS_MHA = (32, 32, 128, 2)  # the same model if every query head kept its own KV head


def _count(got: object, what: str) -> int:
    """``got`` must be an exact integer (bytes, or whole sequences) before any arithmetic on it."""
    assert isinstance(got, int) and not isinstance(got, bool), (
        f"{what} is a whole number: return an int (integer arithmetic, // not /); "
        f"got {type(got).__name__} {got!r:.60}"
    )
    return got


def per_token(impl, config: tuple[int, int, int, int]) -> int:
    return _count(impl.kv_bytes_per_token(*config), f"kv_bytes_per_token{config}")


def per_seq(impl, config: tuple[int, int, int, int], seq_len: int) -> int:
    return _count(impl.kv_bytes_per_seq(*config, seq_len), f"kv_bytes_per_seq{config + (seq_len,)}")


def capacity(impl, gpu_bytes: int, weight_bytes: int, seq_bytes: int) -> int:
    return _count(impl.max_concurrent_seqs(gpu_bytes, weight_bytes, seq_bytes),
                  f"max_concurrent_seqs({gpu_bytes}, {weight_bytes}, {seq_bytes})")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(LLAMA3_8B_FP16, 131_072, id="llama3_8b-fp16-128_KiB"),
        pytest.param((80, 8, 128, 2), 327_680, id="llama3_70b-fp16-320_KiB"),
        pytest.param((12, 12, 64, 2), 36_864, id="opt_125m-fp16-36_KiB"),
    ],
)
def test_per_token_bytes_match_the_formula(impl, config: tuple, expected: int) -> None:
    got = per_token(impl, config)
    assert got == expected, (
        f"(layers, kv_heads, head_dim, dtype_bytes) = {config}: a key and a value per KV head "
        f"at every layer, head_dim numbers of dtype_bytes each, is {expected:,} bytes per "
        f"token; got {got:,}"
    )


def test_llama3_8b_per_token(impl) -> None:
    got = per_token(impl, LLAMA3_8B_FP16)
    assert got == 131_072 == 128 * KiB, (
        f"Llama-3-8B in fp16 (32 layers, 8 KV heads, head_dim 128, 2 bytes) stores "
        f"131,072 bytes (128 KiB) of K/V per token; got {got:,}"
    )


def test_llama3_8b_sequence_of_2048_tokens_is_256_mib(impl) -> None:
    got = per_seq(impl, LLAMA3_8B_FP16, 2048)
    assert got == 268_435_456 == 256 * MiB, (
        f"a 2,048-token Llama-3-8B fp16 sequence holds 128 KiB x 2,048 = 256 MiB "
        f"(268,435,456 bytes) of K/V; got {got:,}"
    )


def test_llama3_8b_concurrency(impl) -> None:
    seq_bytes = per_seq(impl, LLAMA3_8B_FP16, 2048)
    got = capacity(impl, 24 * GiB, 16 * GiB, seq_bytes)
    assert got == 32, (
        f"24 GiB minus 16 GiB of weights leaves 8 GiB; 8 GiB / 256 MiB = 32 sequences; got {got}"
    )


def test_decimal_gigabytes_floor_to_29(impl) -> None:
    got = capacity(impl, 24_000_000_000, 16_000_000_000, 256 * MiB)
    assert got == 29, (
        f"in decimal gigabytes 8e9 bytes are free, and 8e9 / 268,435,456 = 29.8 sequences: "
        f"29 whole ones fit (not 30, and not the binary-unit 32); got {got}"
    )


def test_fp8_kv_doubles_concurrency(impl) -> None:
    fp16 = capacity(impl, 24 * GiB, 16 * GiB, per_seq(impl, LLAMA3_8B_FP16, 2048))
    fp8 = capacity(impl, 24 * GiB, 16 * GiB, per_seq(impl, LLAMA3_8B_FP8, 2048))
    assert (fp16, fp8) == (32, 64), (
        f"halving dtype_bytes (fp16 -> fp8 KV) halves every sequence, so 32 users become 64; "
        f"got {fp16} -> {fp8}"
    )


def test_gqa_saves_vs_mha(impl) -> None:
    gqa = per_token(impl, LLAMA3_8B_FP16)
    mha = per_token(impl, LLAMA3_8B_AS_MHA)
    assert mha == 4 * gqa, (
        f"32 KV heads (MHA) against 8 (GQA) should be exactly 4x the bytes per token; "
        f"got {mha:,} vs {gqa:,}"
    )
    gqa_seq = per_seq(impl, LLAMA3_8B_FP16, 2048)
    mha_seq = per_seq(impl, LLAMA3_8B_AS_MHA, 2048)
    assert mha_seq == 4 * gqa_seq, (
        f"the 4x saving must carry through to the per-sequence bytes; got {mha_seq:,} vs "
        f"{gqa_seq:,}"
    )


@pytest.mark.parametrize(
    ("gpu_bytes", "weight_bytes"),
    [
        pytest.param(16 * GiB, 16 * GiB, id="weights_fill_the_gpu"),
        pytest.param(24 * GiB, 40 * GiB, id="weights_exceed_the_gpu"),
        pytest.param(16 * GiB + 100 * MiB, 16 * GiB, id="free_memory_smaller_than_one_sequence"),
    ],
)
def test_no_room_returns_zero(impl, gpu_bytes: int, weight_bytes: int) -> None:
    got = capacity(impl, gpu_bytes, weight_bytes, 256 * MiB)
    assert got == 0, (
        f"with {(gpu_bytes - weight_bytes) / MiB:,.0f} MiB free and 256 MiB per sequence no "
        f"sequence fits: the answer is 0, never negative; got {got}"
    )


def test_partial_sequences_are_floored(impl) -> None:
    got = capacity(impl, 10 * GiB + 700 * MiB, 0, GiB)
    assert got == 10, f"10.7 sequences' worth of memory serves 10 whole sequences; got {got}"


def test_two_hundred_users_at_4k_need_100_gib(impl) -> None:
    got = 200 * per_seq(impl, LLAMA3_8B_FP16, 4096)
    assert got == 100 * GiB, (
        f"200 users x 4,096 tokens x 128 KiB = 100 GiB of K/V for Llama-3-8B fp16; "
        f"got {got / GiB:g} GiB"
    )
