"""Kata 17-02: a real vLLM on the CPU platform, its decisions read back, its speed set against
the roofline.

The whole kata needs vLLM (``requires = ["vllm"]``): without it the plugin skips every test with
the install command. The engine tests use SmolLM2-135M-Instruct in a separate engine process (the
way ``vllm serve`` runs it, with its threads bound); without the model they skip with
``katas models fetch``.
"""

from __future__ import annotations

import pytest

from katas.phase17.run_cpu_vllm.scaffold import (
    GiB,
    checkpoint_params,
    measure_decode_tokens_per_second,
    measure_read_bandwidth,
)
from pytest_vllm_katas import assert_close
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.cpu_ok

# VLLM_CPU_KVCACHE_SPACE=1, and the engine core in its own process: vLLM's default, and what
# `vllm serve` runs (the worker binds its OpenMP threads itself).
SMOLLM2 = EngineConfig(model="smollm2", kv_cache_gib=1, max_model_len=1024, inprocess=False)
SMOLLM2_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2  # 30 layers x 3 KV heads x 64, bf16: 23,040


def test_the_course_8b_decode_ceiling_is_125_tokens_per_second(impl) -> None:
    got = impl.decode_tokens_per_second(8e9, 2, 2.0e12)
    assert_close(got, 125.0, cause="arithmetic", what="8B bf16 weights at 2 TB/s")


def test_a_batch_rides_the_same_weight_stream(impl) -> None:
    got = impl.decode_tokens_per_second(8e9, 2, 2.0e12, batch=64)
    assert_close(got, 8000.0, cause="arithmetic", what="batch 64: 64 tokens per weight read")


def test_a_1gb_model_on_50gbs_of_dram_tops_out_at_50_tokens_per_second(impl) -> None:
    got = impl.decode_tokens_per_second(0.5e9, 2, 50e9)
    assert_close(got, 50.0, cause="arithmetic", what="1 GB of weights at 50 GB/s (not 9 tok/s)")


@pytest.mark.parametrize(("value", "expected"), [("4", 4 * GiB), ("1", GiB), ("", None),
                                                 (None, None)],
                         ids=["4_GiB", "1_GiB", "empty-sets_nothing", "unset-sets_nothing"])
def test_the_cpu_knob_is_whole_gib(impl, value: str | None, expected: int | None) -> None:
    got = impl.kv_cache_space_bytes(value)
    assert got == expected, f"VLLM_CPU_KVCACHE_SPACE={value!r} means {expected} bytes, got {got}"


def test_a_fractional_knob_is_refused(impl) -> None:
    with pytest.raises(ValueError):
        impl.kv_cache_space_bytes("1.5")


def test_smollm2_fits_364_blocks_in_1_gib(impl) -> None:
    got = impl.kv_blocks_for(GiB, SMOLLM2_BYTES_PER_TOKEN, 128)
    assert got == 364, f"1 GiB / (23,040 B x 128) = 364.09 -> 364 whole blocks, got {got}"


# ---------------------------------------------------------------------------------------- live


@pytest.mark.live
def test_the_platform_is_the_cpu_floor_with_cpu_attention(impl, live_engines: LiveEngines) -> None:
    impl.kv_blocks_for(GiB, 1, 1)  # your code first: no engine start for a stub
    decisions = impl.read_platform_decisions(live_engines.get(SMOLLM2).llm)
    assert (decisions.platform, decisions.device_type) == ("CpuPlatform", "cpu"), (
        f"no GPU here: the resolver must land on the CPU platform; read {decisions}"
    )
    assert decisions.attention_backend == "CPU_ATTN", (
        f"the CPU platform answers CPU_ATTN for a Llama; read {decisions.attention_backend}"
    )


@pytest.mark.live
def test_the_engine_runs_eagerly_in_bfloat16(impl, live_engines: LiveEngines) -> None:
    impl.kv_blocks_for(GiB, 1, 1)
    decisions = impl.read_platform_decisions(live_engines.get(SMOLLM2).llm)
    assert decisions.execution == "eager", "a CPU captures no CUDA graphs: the engine runs eagerly"
    assert decisions.dtype == "bfloat16", f"the checkpoint is bf16 and stays so; read {decisions}"


@pytest.mark.live
def test_the_kv_cache_is_sized_from_the_knob(impl, live_engines: LiveEngines) -> None:
    budget = impl.kv_cache_space_bytes(str(SMOLLM2.kv_cache_gib))
    decisions = impl.read_platform_decisions(live_engines.get(SMOLLM2).llm)
    assert decisions.kv_cache_bytes == budget, (
        f"VLLM_CPU_KVCACHE_SPACE=1 is {budget} bytes; the engine sized {decisions.kv_cache_bytes}"
    )
    predicted = impl.kv_blocks_for(budget, SMOLLM2_BYTES_PER_TOKEN, decisions.block_size)
    assert decisions.num_blocks == predicted, (
        f"the engine carved {decisions.num_blocks} blocks of {decisions.block_size}; "
        f"you predict {predicted}"
    )


@pytest.mark.live
def test_measured_decode_stays_under_the_bandwidth_roofline(
    impl, live_engines: LiveEngines, record_property: pytest.RecordProperty,
    capsys: pytest.CaptureFixture[str],
) -> None:
    impl.decode_tokens_per_second(1.0, 1.0, 1.0)
    handle = live_engines.get(SMOLLM2)
    n_params = checkpoint_params(handle.model_path)
    bandwidth = measure_read_bandwidth()
    ceiling = impl.decode_tokens_per_second(n_params, 2, bandwidth)
    measured = measure_decode_tokens_per_second(handle.llm, "The CPU backend exists because")
    for name, value in [("params", n_params), ("read_bandwidth_gb_s", bandwidth / 1e9),
                        ("roofline_tok_s", ceiling), ("measured_tok_s", measured)]:
        record_property(name, round(value, 2))
    with capsys.disabled():
        print(f"\nSmolLM2 decode: {measured:.1f} tok/s measured, roofline {ceiling:.1f} tok/s "
              f"({n_params / 1e6:.1f}M bf16 params at {bandwidth / 1e9:.1f} GB/s read), "
              f"{measured / ceiling:.0%} of the ceiling")
    assert 0 < measured <= ceiling, (
        f"measured {measured:.1f} tok/s against a ceiling of {ceiling:.1f}: a decode faster than "
        "the weights can be read means the roofline arithmetic is off"
    )
