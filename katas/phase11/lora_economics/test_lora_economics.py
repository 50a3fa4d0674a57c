"""Kata 11-03: the multi-tenant LoRA arithmetic. Every number is the course's (a 7B Llama,
hidden 4096, 32 layers, rank 16, q/k/v/o targeted, fp16) or follows from it exactly."""

from __future__ import annotations

import pytest

from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

GIB, MIB = 1 << 30, 1 << 20
HIDDEN, LAYERS, RANK = 4096, 32, 16  # the course's 7B Llama and its rank-16 adapter
BASE_PARAMS = 7_000_000_000
BASE_BYTES = 2 * BASE_PARAMS  # fp16
KV_BYTES_PER_TOKEN = 2 * 32 * 32 * 128 * 2  # Llama-2-7B, fp16: K and V, 32 layers x 32 heads x 128


def test_per_layer_params(impl) -> None:
    got = impl.lora_params_per_layer(4096, 4096, 16)
    assert got == 131_072, (
        f"a 4096 x 4096 projection at rank 16: A is 16 x 4096 and B is 4096 x 16, "
        f"16 x (4096 + 4096) = 131,072 parameters, got {got}")
    assert 4096 * 4096 // got == 128, "the factorization is 128x smaller than the 16.8M matrix"
    narrow = impl.lora_params_per_layer(4096, 1024, 16)
    assert narrow == 81_920, (
        f"a GQA k/v projection (in 4096, out 1024) at rank 16 is 16 x (4096 + 1024) = 81,920: "
        f"rank x (in + out), not twice rank x in; got {narrow}")
    mlp = impl.lora_params_per_layer(11_008, 4096, 16)
    assert mlp == 241_664, f"down_proj (in 11,008, out 4096): 16 x 15,104 = 241,664, got {mlp}"


def test_adapter_size_matches_the_lab02_capture(impl) -> None:
    params = impl.adapter_params(HIDDEN, LAYERS, RANK)
    assert params == 16_777_216, (
        f"131,072 per target x 4 targets (q/k/v/o) x 32 layers = 16,777,216 parameters, got "
        f"{params}")
    got = impl.adapter_bytes(HIDDEN, LAYERS, RANK)
    assert got == 32 * MIB == 33_554_432, (
        f"16,777,216 parameters x 2 bytes (fp16) = 33,554,432 bytes = 32 MiB, got {got}")
    assert round(got / GIB, 2) == 0.03, (
        f"vLLM's log line said 'loaded: 0.03 GiB'; your {got} bytes is {got / GIB:.5f} GiB")


def test_targets_and_dtype_are_linear_in_the_bill(impl) -> None:
    two_targets = impl.adapter_bytes(HIDDEN, LAYERS, RANK, num_targets=2)
    assert two_targets == 16 * MIB, f"q and v only: half of 32 MiB, got {two_targets}"
    fp32 = impl.adapter_bytes(HIDDEN, LAYERS, RANK, dtype_bytes=4)
    assert fp32 == 64 * MIB, f"the same adapter in fp32 is 64 MiB, got {fp32}"


def test_hundreds_of_adapters_per_gib(impl) -> None:
    got = impl.adapters_per_gib(impl.adapter_bytes(HIDDEN, LAYERS, RANK))
    assert got == 32, f"1 GiB / 32 MiB = 32 adapters (a GiB is 2**30 bytes), got {got}"
    rank64 = impl.adapters_per_gib(impl.adapter_bytes(HIDDEN, LAYERS, 64))
    assert rank64 == 8, f"rank 64 is 128 MiB per adapter: 8 per GiB, got {rank64}"


def test_only_whole_adapters_fit(impl) -> None:
    got = impl.adapters_per_gib(impl.adapter_bytes(HIDDEN, LAYERS, 20))
    assert got == 25, (
        f"rank 20 is 40 MiB per adapter: 1024 / 40 = 25.6, and only 25 whole adapters fit in "
        f"a GiB (not 26), got {got}")


def test_shrink_ratio_is_the_headline(impl) -> None:
    got = impl.shrink_ratio(BASE_PARAMS, impl.adapter_params(HIDDEN, LAYERS, RANK))
    assert_close(got, 7e9 / 16_777_216, cause="arithmetic",
                 what="7,000,000,000 base parameters / 16,777,216 adapter parameters")
    assert 400 <= got <= 450 and round(got) == 417, f"the ratio is about 417x, got {got}"
    by_bytes = impl.shrink_ratio(BASE_BYTES, impl.adapter_bytes(HIDDEN, LAYERS, RANK))
    assert_close(by_bytes, got, cause="arithmetic",
                 what="the same ratio in bytes (both fp16): the dtype cancels")


def test_the_430x_comes_from_the_rounded_log_line(impl) -> None:
    exact = impl.shrink_ratio(BASE_BYTES, impl.adapter_bytes(HIDDEN, LAYERS, RANK))
    rounded = impl.shrink_ratio(13 * GIB, 0.03 * GIB)  # the prose's "13 GiB" and "0.03 GiB"
    assert_close(rounded, 13 / 0.03, cause="arithmetic",
                 what="13 GiB of base over the log's rounded 0.03 GiB")
    assert round(rounded) == 433 and round(exact) == 417, (
        f"dividing by the rounded 0.03 GiB gives {rounded:.1f}x (the course's '~430x'); "
        f"by the exact 0.03125 GiB, {exact:.1f}x")


def test_rank_is_a_linear_dial(impl) -> None:
    r16 = impl.adapter_bytes(HIDDEN, LAYERS, 16)
    r64 = impl.adapter_bytes(HIDDEN, LAYERS, 64)
    assert r64 == 4 * r16 == 128 * MIB, f"rank 64 costs exactly 4 x rank 16: {r64} vs {r16}"
    r1 = impl.adapter_bytes(HIDDEN, LAYERS, 1)
    assert r1 * 16 == r16, f"rank 1 is a sixteenth of rank 16: {r1} vs {r16}"


def test_real_shapes_refit_the_bill(impl) -> None:
    # Llama-3-8B: GQA (k/v out 1024), MLP 14,336; all seven linear layers adapted at rank 16.
    llama3 = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096),
              (4096, 14_336), (4096, 14_336), (14_336, 4096)]
    got = impl.adapter_bytes_for_shapes(llama3, 32, 16)
    assert got == 80 * MIB, (
        f"Llama-3-8B, all linear layers at rank 16: 1,310,720 params a layer x 32 x 2 B = "
        f"80 MiB exactly, got {got} ({got / MIB:.2f} MiB)")
    square = impl.adapter_bytes_for_shapes([(4096, 4096)] * 4, LAYERS, RANK)
    assert square == impl.adapter_bytes(HIDDEN, LAYERS, RANK) == 32 * MIB, (
        f"four square targets are the course's 32 MiB adapter, got {square}")


def test_compute_side_has_the_same_shape(impl) -> None:
    delta = impl.delta_flops_per_token(4096, 4096, 16)
    assert delta == 262_144, (
        f"shrink + expand at rank 16 on 4096 x 4096: 2 x 16 x (4096 + 4096) = 262,144 FLOPs "
        f"per token, got {delta}")
    assert 2 * 4096 * 4096 // delta == 128, "the base matmul's 2 x in x out is 128x that"


def test_gpus_saved(impl) -> None:
    assert impl.engines_needed(100, 8) == 13, (
        f"100 tenants at max_loras=8: 12 full engines and one with 4 = 13, got "
        f"{impl.engines_needed(100, 8)}")
    got = impl.gpus_saved(100, 8)
    assert got == 87, f"100 dedicated GPUs minus 13 engines = 87 saved, got {got}"


@pytest.mark.parametrize(("tenants", "max_loras", "engines"),
                         [(0, 8, 0), (1, 8, 1), (8, 8, 1), (9, 8, 2), (16, 8, 2), (5, 1, 5)])
def test_a_partly_filled_engine_is_still_an_engine(impl, tenants: int, max_loras: int,
                                                   engines: int) -> None:
    got = impl.engines_needed(tenants, max_loras)
    assert got == engines, (
        f"{tenants} tenants with {max_loras} adapter slots per engine need {engines} engine(s), "
        f"got {got}")
    saved = impl.gpus_saved(tenants, max_loras)
    assert saved == tenants - engines, (
        f"saved = tenants - engines = {tenants - engines}, got {saved}")


def test_fleet_memory_counts_every_engines_base(impl) -> None:
    shared, dedicated = impl.fleet_bytes(100, 8, BASE_BYTES, 32 * MIB)
    assert dedicated == 100 * BASE_BYTES == 1_400_000_000_000, (
        f"100 full fine-tunes are 100 copies of a 14 GB model: 1.4 TB, got {dedicated}")
    assert shared == 13 * BASE_BYTES + 100 * 32 * MIB == 185_355_443_200, (
        f"multi-LoRA: 13 engines each hold the base (13 x 14 GB) plus 100 adapters of 32 MiB: "
        f"185,355,443,200 bytes, got {shared}")
    one, one_dedicated = impl.fleet_bytes(1, 8, BASE_BYTES, 32 * MIB)
    assert (one, one_dedicated) == (BASE_BYTES + 32 * MIB, BASE_BYTES), (
        f"a single tenant: base + adapter vs one full copy, got {(one, one_dedicated)}")


def test_slot_reservation_is_max_loras_times_max_rank(impl) -> None:
    lab02 = impl.slot_reservation_bytes(2, 16, HIDDEN, LAYERS)
    assert lab02 == 64 * MIB, f"lab 11-02's max_loras=2, max_lora_rank=16: 2 x 32 MiB, got {lab02}"
    big = impl.slot_reservation_bytes(32, 64, HIDDEN, LAYERS)
    assert big == 4 * GIB, (
        f"max_loras=32 at max_lora_rank=64: 32 slots of 128 MiB = 4 GiB reserved before any "
        f"adapter loads, got {big}")


def test_slots_cost_kv_blocks_and_concurrency(impl) -> None:
    before = impl.kv_blocks_left(10 * GIB, KV_BYTES_PER_TOKEN, 16)
    assert before == 1280, (
        f"10 GiB of KV at 512 KiB a token, blocks of 16 (8 MiB): 1,280 blocks, got {before}")
    reserve = impl.slot_reservation_bytes(32, 64, HIDDEN, LAYERS)
    after = impl.kv_blocks_left(10 * GIB, KV_BYTES_PER_TOKEN, 16, reservation_bytes=reserve)
    assert after == 768, f"4 GiB of slots leave 6 GiB: 768 blocks, got {after}"
    seqs = (impl.concurrent_sequences(before, 16, 4096), impl.concurrent_sequences(after, 16, 4096))
    assert seqs == (5, 3), (
        f"4,096-token sequences (256 blocks each): 5 fit without the slots, 3 with them, "
        f"got {seqs}")


def test_a_reservation_that_splits_a_block_loses_the_whole_block(impl) -> None:
    # vLLM's CPU block is 128 tokens: 64 MiB a block for this model.
    got = impl.kv_blocks_left(10 * GIB, KV_BYTES_PER_TOKEN, 128, reservation_bytes=32 * MIB)
    assert got == 159, (
        f"10 GiB minus 32 MiB of slots, in 64 MiB blocks: 159 whole blocks (half a block of "
        f"slots still breaks one), got {got}")


def test_a_partial_last_block_is_a_whole_block(impl) -> None:
    got = impl.concurrent_sequences(768, 16, 4100)
    assert got == 2, (
        f"4,100 tokens need 257 blocks of 16 (the last one partly filled): 768 // 257 = 2 "
        f"sequences, got {got}")
    assert impl.concurrent_sequences(0, 16, 4096) == 0, "no blocks, no sequences"


@pytest.mark.parametrize(("call", "field"), [
    (lambda m: m.lora_params_per_layer(4096, 4096, 0), "rank"),
    (lambda m: m.adapter_bytes(4096, 0, 16), "num_layers"),
    (lambda m: m.adapters_per_gib(0), "adapter_size_bytes"),
    (lambda m: m.engines_needed(-1, 8), "tenants"),
    (lambda m: m.gpus_saved(100, 0), "max_loras"),
    (lambda m: m.shrink_ratio(0, 16), "base_size"),
    (lambda m: m.kv_blocks_left(GIB, 1024, 16, reservation_bytes=2 * GIB), "reservation_bytes"),
], ids=["rank_0", "no_layers", "empty_adapter", "negative_tenants", "no_slots", "no_base",
        "slots_bigger_than_the_budget"])
def test_bad_inputs_are_refused(impl, call, field: str) -> None:
    with expect_raises(ValueError, f"the contract refuses this {field}", match=field):
        call(impl)
