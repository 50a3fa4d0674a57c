"""Spec for kata 15-03: the disaggregation trade. The course's numbers, pinned exactly: an 8B
Llama (128 KiB of K and V per token) and a 2048-token prompt ship 256 MiB; 10.7 ms over a
200 Gb/s fabric, 214.7 ms over 10 GbE; a 10 ms decode step beside a 25 ms chunk is a 35 ms
worst ITL; the prefill of those 2048 tokens takes about 205 ms."""

from __future__ import annotations

import pytest

from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

KIB, MIB = 1 << 10, 1 << 20
KV_8B = 2 * 32 * 8 * 128 * 2  # Llama-3-8B, fp16: K and V x 32 layers x 8 KV heads x 128
KV_70B = 2 * 80 * 8 * 128 * 2  # Llama-3-70B, fp16: 80 layers, the same 8 KV heads of 128
PROMPT = 2048
PAYLOAD = 268_435_456  # 256 MiB
PREFILL_S = 0.205  # the course's prefill time for 2048 tokens on the 8B
STEP_S, CHUNK_S = 0.010, 0.025  # phase 3 lab-05's decode step and prefill chunk


def test_payload_is_real_freight(impl) -> None:
    got = impl.kv_payload_bytes(PROMPT, KV_8B)
    assert got == PAYLOAD == 256 * MIB, (
        f"2048 tokens x 128 KiB of KV per token = 268,435,456 bytes (256 MiB), got {got!r}")
    assert isinstance(got, int), f"a byte count is an int, got {type(got).__name__}"
    assert impl.kv_payload_bytes(1, KV_8B) == 128 * KIB, (
        "one token ships its own 128 KiB: the payload is tokens x bytes per token")
    assert impl.kv_payload_bytes(0, KV_8B) == 0, "a request with no computed tokens ships nothing"
    assert impl.kv_payload_bytes(4096, KV_8B) == 2 * PAYLOAD, (
        "twice the prompt is twice the freight: the bill is per token, every request")


def test_link_speed_is_the_whole_story(impl) -> None:
    fast = impl.transfer_seconds(PAYLOAD, 200)
    slow = impl.transfer_seconds(PAYLOAD, 10)
    assert_close(fast, PAYLOAD * 8 / 200e9, cause="arithmetic",
                 what="256 MiB over 200 Gb/s (2,147,483,648 bits / 200e9 bit/s, in seconds)")
    assert_close(slow, PAYLOAD * 8 / 10e9, cause="arithmetic",
                 what="256 MiB over 10 Gb/s (2,147,483,648 bits / 10e9 bit/s, in seconds)")
    assert round(fast * 1e3, 1) == 10.7, (
        f"the course's ~11 ms on an InfiniBand-class link is 10.7 ms; got {fast * 1e3:.3f} ms "
        "(1.3 ms means the bytes were not turned into bits; 10.0 ms means a gigabit was taken "
        "as 2**30 bits: links are decimal)")
    assert round(slow * 1e3, 1) == 214.7, (
        f"the course's ~215 ms on 10 GbE is 214.7 ms; got {slow * 1e3:.3f} ms")
    assert_close(slow / fast, 20.0, cause="arithmetic",
                 what="the same payload on a 20x slower link takes 20x as long")


def test_interference_math_is_phase3_lab05(impl) -> None:
    got = impl.colocated_itl_worst(STEP_S, CHUNK_S)
    assert_close(got, 0.035, cause="arithmetic",
                 what="worst colocated ITL: the 10 ms decode step plus the 25 ms chunk it shares "
                      "a batch with")
    assert_close(got / STEP_S, 3.5, cause="arithmetic",
                 what="the p99 gain of a clean 10 ms step over the colocated 35 ms spike")
    clean = impl.colocated_itl_worst(STEP_S, 0.0)
    assert_close(clean, STEP_S, cause="arithmetic",
                 what="with no prefill chunk in the batch the decode step is clean")
    small = impl.colocated_itl_worst(0.030, 0.005)
    assert_close(small, 0.035, cause="arithmetic",
                 what="a 30 ms step beside a 5 ms chunk: both are paid, the step is the larger")


def test_ttft_penalty_fractions(impl) -> None:
    fast = impl.disagg_ttft_penalty(PAYLOAD * 8 / 200e9, PREFILL_S)
    slow = impl.disagg_ttft_penalty(PAYLOAD * 8 / 10e9, PREFILL_S)
    assert_close(fast, PAYLOAD * 8 / 200e9 / PREFILL_S, cause="arithmetic",
                 what="TTFT penalty on 200 Gb/s: transfer time / prefill time")
    assert fast < 0.06, f"10.7 ms on a 205 ms prefill is ~5.2% (< 6%), got {fast:.3%}"
    assert slow > 1.0, (
        f"214.7 ms on a 205 ms prefill is ~105% (> 100%: TTFT doubles), got {slow:.3%}")
    assert impl.disagg_ttft_penalty(0.0, PREFILL_S) == 0.0, "no transfer, no penalty"


def test_the_decision_both_ways(impl) -> None:
    fast = PAYLOAD * 8 / 200e9
    slow = PAYLOAD * 8 / 10e9
    split = impl.disagg_wins(STEP_S, CHUNK_S, fast, PREFILL_S)
    assert tuple(split) == (True, "split"), (
        f"heavy interference (35 ms vs 10 ms) and a 5% toll: split, expected (True, 'split'), "
        f"got {split!r}")
    slow_link = impl.disagg_wins(STEP_S, CHUNK_S, slow, PREFILL_S)
    assert tuple(slow_link) == (False, "slow_link"), (
        f"heavy interference but a 105% toll on 10 GbE: the cure costs more than the disease, "
        f"expected (False, 'slow_link'), got {slow_link!r}")
    calm = impl.disagg_wins(STEP_S, 0.002, fast, PREFILL_S)
    assert tuple(calm) == (False, "no_interference"), (
        f"a 2 ms chunk beside a 10 ms step (1.2x) is no disease to cure, even on a fast link: "
        f"expected (False, 'no_interference'), got {calm!r}")
    both = impl.disagg_wins(STEP_S, 0.002, slow, PREFILL_S)
    assert tuple(both) == (False, "no_interference"), (
        f"no interference and a slow link: the first reason is that there is nothing to cure, "
        f"expected (False, 'no_interference'), got {both!r}")


def test_the_thresholds_are_inclusive_and_adjustable(impl) -> None:
    # A chunk half as long as the step is exactly the default 1.5x gain; a transfer a quarter of
    # the prefill is exactly the default 25% toll (times are powers of two: no rounding).
    edge = impl.disagg_wins(2.0**-6, 2.0**-7, 2.0**-4, 2.0**-2)
    assert tuple(edge) == (True, "split"), (
        f"a gain of exactly min_itl_gain (1.5x) and a toll of exactly max_ttft_penalty (25%) "
        f"still split: the limits are inclusive, got {edge!r}")
    strict = impl.disagg_wins(STEP_S, CHUNK_S, PAYLOAD * 8 / 200e9, PREFILL_S,
                              max_ttft_penalty=0.05)
    assert tuple(strict) == (False, "slow_link"), (
        f"a product that tolerates only a 5% TTFT toll cannot take the 5.2% of 200 Gb/s: "
        f"expected (False, 'slow_link'), got {strict!r}")
    picky = impl.disagg_wins(STEP_S, CHUNK_S, PAYLOAD * 8 / 200e9, PREFILL_S, min_itl_gain=4.0)
    assert tuple(picky) == (False, "no_interference"), (
        f"asking for a 4x ITL gain, the 3.5x on offer is not enough: expected "
        f"(False, 'no_interference'), got {picky!r}")


def test_payload_scales_with_model_not_just_prompt(impl) -> None:
    big = impl.kv_payload_bytes(PROMPT, KV_70B)
    small = impl.kv_payload_bytes(PROMPT, KV_8B)
    assert big == 671_088_640 == 640 * MIB, (
        f"a 70B (320 KiB per token) ships 640 MiB for the same 2048 tokens, got {big!r}")
    assert_close(big / small, 2.5, cause="arithmetic",
                 what="70B freight over 8B freight for the same prompt")
    fast = impl.transfer_seconds(big, 200)
    assert round(fast * 1e3, 1) == 26.8, (
        f"640 MiB over 200 Gb/s takes 26.8 ms, 2.5x the 8B's 10.7 ms; got {fast * 1e3:.3f} ms")


def test_bad_input_is_refused(impl) -> None:
    with expect_raises(ValueError, "a link of 0 Gb/s moves nothing: refuse it", match="link"):
        impl.transfer_seconds(PAYLOAD, 0)
    with expect_raises(ValueError, "a negative prompt length is a bug upstream",
                       match="prompt_tokens"):
        impl.kv_payload_bytes(-1, KV_8B)
    with expect_raises(ValueError, "a penalty over a zero prefill time is undefined",
                       match="prefill"):
        impl.disagg_ttft_penalty(0.01, 0.0)
    with expect_raises(ValueError, "a decode step takes time", match="decode_step"):
        impl.colocated_itl_worst(0.0, CHUNK_S)
    with expect_raises(ValueError, "a negative chunk time is a bug upstream", match="chunk"):
        impl.colocated_itl_worst(STEP_S, -0.001)
