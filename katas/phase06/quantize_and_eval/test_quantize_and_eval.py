"""Spec for kata 06-02: three meters per quantized engine, read and explained.

Core tests grade the functions on numbers that do not need vLLM: closed forms, and two
recordings next to this file (the course's L4 run, and a vLLM-CPU run of this kata). The
``live`` tests start four real vLLM-CPU engines on SmolLM2 (bf16, ``fp8_per_channel``, and AWQ
and GPTQ checkpoints written with numpy) and check your functions against what they report.
Throughput is printed, never asserted.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from katas.phase06.quantize_and_eval.scaffold import RunRecord, recorded
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.gpu_opt

SMOLLM2_KV = dict(num_layers=30, num_kv_heads=3, head_dim=64)
QWEN05_KV = dict(num_layers=24, num_kv_heads=2, head_dim=64)  # Qwen2.5-0.5B, the course's model


# -- perplexity --------------------------------------------------------------------------------


def test_perplexity_is_exp_of_mean_negative_logprob(impl) -> None:
    got = impl.perplexity([-1.0, -2.0, -3.0])
    assert_close(got, math.e**2, cause="arithmetic", what="[-1, -2, -3]: exp(mean 2) = e^2")
    uniform = impl.perplexity([-math.log(49152)] * 7)
    assert_close(uniform, 49152, cause="arithmetic",
                 what="an even bet over SmolLM2's 49,152 tokens scores 49,152")
    assert impl.perplexity([0.0, 0.0]) == 1.0, "a model certain of every token scores 1"


def test_perplexity_refuses_what_is_not_a_logprob(impl) -> None:
    with expect_raises(ValueError, "no tokens, no perplexity"):
        impl.perplexity([])
    with expect_raises(ValueError, "a log-probability above 0 is a probability above 1"):
        impl.perplexity([-1.0, 0.5])
    with expect_raises(ValueError, "-inf (a token the model ruled out) has no finite mean"):
        impl.perplexity([-1.0, -math.inf])


# -- KV capacity -------------------------------------------------------------------------------


def test_kv_bytes_per_block(impl) -> None:
    smol = impl.kv_bytes_per_block(**SMOLLM2_KV, dtype_bytes=2, block_size=128)
    assert smol == 2_949_120, (
        f"SmolLM2, bf16, 128-token blocks: 2 (K and V) x 30 x 3 x 64 x 2 bytes x 128 = "
        f"2,949,120, got {smol}")
    qwen = impl.kv_bytes_per_block(**QWEN05_KV, dtype_bytes=2, block_size=16)
    assert qwen == 196_608, f"Qwen2.5-0.5B, fp16, 16-token blocks: 196,608, got {qwen}"
    fp8 = impl.kv_bytes_per_block(**QWEN05_KV, dtype_bytes=1, block_size=16)
    assert fp8 == qwen // 2, f"an fp8 KV cache halves the block: {qwen // 2}, got {fp8}"
    with expect_raises(ValueError, "block_size must be an int >= 1", match="block_size"):
        impl.kv_bytes_per_block(**QWEN05_KV, dtype_bytes=2, block_size=0)


def test_cpu_blocks_come_from_a_gib_budget(impl) -> None:
    got = impl.cpu_kv_blocks(1, 2_949_120)
    assert got == 364, (
        f"VLLM_CPU_KVCACHE_SPACE=1 is 2**30 bytes: 364 whole SmolLM2 blocks (1e9 bytes would "
        f"give 339), got {got}")
    assert impl.cpu_kv_blocks(4, 2_949_120) == 1456, "4 GiB: 1,456 blocks"
    with expect_raises(ValueError, "the CPU budget is whole GiB: 0 is no cache",
                       match="kv_cache_gib"):
        impl.cpu_kv_blocks(0, 2_949_120)


def test_gpu_blocks_are_what_the_weights_leave(impl) -> None:
    total, block = 24 * 2**30, 196_608
    fp16 = impl.gpu_kv_blocks(total, 0.5, 988_000_000, 500_000_000, block)
    want = (12 * 2**30 - 988_000_000 - 500_000_000) // block
    assert fp16 == want, f"(12 GiB - weights - activations) // block = {want}, got {fp16}"
    int4 = impl.gpu_kv_blocks(total, 0.5, 988_000_000 // 4, 500_000_000, block)
    want4 = (12 * 2**30 - 247_000_000 - 500_000_000) // block
    assert int4 == want4, (
        f"4x smaller weights free 741 MB for the cache: {want4} blocks ({want4 - want} more "
        f"than fp16), got {int4}")
    with expect_raises(ValueError, "weights larger than the budget leave no KV block"):
        impl.gpu_kv_blocks(total, 0.05, 988_000_000, 500_000_000, block)
    with expect_raises(ValueError, "utilization is a fraction in (0, 1]", match="utilization"):
        impl.gpu_kv_blocks(total, 1.5, 0, 0, block)


# -- analysis: the course's recording ----------------------------------------------------------


def test_recorded_l4_orderings(impl) -> None:
    runs, baseline, _ = recorded("l4")
    got = impl.analyze(runs, baseline)
    assert got.throughput_order == ["fp8", "awq4", "fp16"], (
        f"L4 throughput 14,200 > 12,600 > 9,800 tok/s: fp8, awq4, fp16; got "
        f"{got.throughput_order}")
    assert got.capacity_order == ["awq4", "fp8", "fp16"], (
        f"L4 KV blocks 21,300 > 18,900 > 12,140: awq4, fp8, fp16; got {got.capacity_order}")
    assert got.quality_order is None, "the course measured no perplexity: quality_order is None"


def test_recorded_l4_ratios(impl) -> None:
    runs, baseline, _ = recorded("l4")
    got = impl.analyze(runs, baseline)
    assert set(got.speedup) == {"fp16", "fp8", "awq4"}, f"one speedup per run: {got.speedup}"
    assert_close(got.speedup["fp8"], 14200 / 9800, cause="arithmetic",
                 what="fp8's speedup over fp16 (the course's +45%)")
    assert_close(got.speedup["fp16"], 1.0, cause="arithmetic", what="the baseline's own speedup")
    assert_close(got.capacity_gain["awq4"], 21300 / 12140, cause="arithmetic",
                 what="awq4's KV blocks over fp16's (1.75x)")


def test_on_the_l4_neither_format_dominates(impl) -> None:
    runs, baseline, _ = recorded("l4")
    got = impl.analyze(runs, baseline)
    assert got.dominant is None and got.capacity_tied is False, (
        f"fp8 is fastest but awq4 holds the most KV: no run leads on both, and the block "
        f"counts differ; got dominant={got.dominant!r}, capacity_tied={got.capacity_tied}")


def test_a_run_ahead_on_both_dominates(impl) -> None:
    runs = [RunRecord("a", 10.0, 100), RunRecord("b", 12.0, 150), RunRecord("c", 11.0, 120)]
    got = impl.analyze(runs, "a")
    assert got.dominant == "b", f"b leads both meters, got {got.dominant!r}"
    tie = [RunRecord("a", 10.0, 100), RunRecord("b", 12.0, 150), RunRecord("c", 12.0, 120)]
    got = impl.analyze(tie, "a")
    assert got.dominant is None, (
        f"b and c tie on throughput: b is not strictly ahead of c, got {got.dominant!r}")


def test_ties_keep_the_input_order(impl) -> None:
    runs = [RunRecord("z", 5.0, 364, 16.0), RunRecord("m", 7.0, 364, 25.7),
            RunRecord("a", 5.0, 364, 25.7)]
    got = impl.analyze(runs, "z")
    assert got.capacity_order == ["z", "m", "a"] and got.capacity_tied, (
        f"every run holds 364 blocks: the order stays z, m, a and capacity_tied is True; got "
        f"{got.capacity_order}, {got.capacity_tied}")
    assert got.throughput_order == ["m", "z", "a"], (
        f"m first, then z and a (tied) in input order; got {got.throughput_order}")
    assert got.quality_order == ["z", "m", "a"], f"lowest perplexity first: {got.quality_order}"


def test_analyze_refuses_bad_input(impl) -> None:
    runs = [RunRecord("fp16", 1.0, 1), RunRecord("fp8", 2.0, 2)]
    with expect_raises(ValueError, "the baseline must be one of the runs", match="bf16"):
        impl.analyze(runs, "bf16")
    with expect_raises(ValueError, "two runs named fp16 cannot be told apart"):
        impl.analyze(runs + [RunRecord("fp16", 3.0, 3)], "fp16")
    with expect_raises(ValueError, "nothing to analyze"):
        impl.analyze([], "fp16")


# -- analysis: the recorded CPU run ------------------------------------------------------------


def test_recorded_cpu_run_ties_capacity_and_ranks_quality(impl) -> None:
    runs, baseline, _ = recorded("cpu")
    got = impl.analyze(runs, baseline)
    assert got.capacity_tied and got.capacity_order == [r.name for r in runs], (
        f"vLLM-CPU sizes the KV cache in GiB, not from what the weights leave: 364 blocks for "
        f"every method; got {got.capacity_order}, tied={got.capacity_tied}")
    assert got.quality_order is not None and got.quality_order[:2] == ["bf16", "fp8_per_channel"], (
        f"bf16 has the lowest perplexity, fp8 per channel the next; got {got.quality_order}")
    assert got.dominant is None, "with every block count tied, no run is strictly ahead on both"


# -- live: four vLLM-CPU engines ---------------------------------------------------------------

FP8_LIMIT = 1.10  # fp8 per channel: within 10% of bf16 (3.6% seen)
INT4_LIMIT = 2.0  # int4, groups of 64, round to nearest: within 2x of bf16 (1.61x seen)
PROMPTS = ["The capital of France is", "Water boils at", "A good breakfast is",
           "The sky looks blue because"]


def _measure(llm: Any, name: str) -> dict[str, Any]:
    from vllm import SamplingParams

    from pytest_vllm_katas.live import quant_checkpoints as qc

    logprobs = qc.token_logprobs(llm)
    # the perplexity pass above warmed the engine up; a short run, for information only
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"name": name, "logprobs": logprobs, "kv_blocks": qc.kv_blocks(llm),
            "tokens_per_s": tokens / seconds,
            "kv_gib": llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes / 2**30,
            "block_size": llm.llm_engine.vllm_config.cache_config.block_size,
            "sample": outs[0].outputs[0].text}


@pytest.fixture(scope="module")
def cpu_runs(live_engines: Any, tmp_path_factory: Any) -> list[dict[str, Any]]:
    """bf16, fp8_per_channel, AWQ and GPTQ on SmolLM2, one engine at a time, measured once.

    AWQ is packed by kata 06-03's reference packer, GPTQ by ``quant_checkpoints``; both hold
    the same symmetric int4 values (groups of 64, round to nearest).
    """
    from pytest_vllm_katas.live import models
    from pytest_vllm_katas.live import quant_checkpoints as qc
    from reference.phase06 import int4_groups_and_packing as int4

    if not models.smollm2_available():
        pytest.skip(models.smollm2_missing_reason())
    src, root = models.smollm2_path(), tmp_path_factory.mktemp("quantize_and_eval")
    weights = qc.load_weights(src)
    awq = qc.write_checkpoint(src, root / "awq", qc.awq_tensors(
        weights, int4.quantize_grouped, int4.awq_pack), qc.awq_config())
    gptq = qc.write_checkpoint(src, root / "gptq", qc.gptq_tensors(
        weights, int4.quantize_grouped), qc.gptq_config())
    del weights
    live_engines.close()  # one engine at a time
    runs = []
    for name, path, quantization in [("bf16", src, None),
                                     ("fp8_per_channel", src, "fp8_per_channel"),
                                     ("awq", awq, None), ("gptq", gptq, None)]:
        with qc.quant_engine(path, quantization=quantization) as llm:
            runs.append(_measure(llm, name))
    print("\nvLLM-CPU, SmolLM2 (throughput: information only, never asserted)")
    for r in runs:
        print(f"  {r['name']:>16}: {r['tokens_per_s']:6.1f} tok/s  {r['kv_blocks']} blocks  "
              f"sample {r['sample']!r}")
    return runs


# Each live test calls your code before asking for ``cpu_runs``, whose set-up starts four
# engines: a stub reports todo without paying for them.


@pytest.mark.live
def test_vllm_blocks_match_the_cpu_prediction(impl, request: pytest.FixtureRequest) -> None:
    block = impl.kv_bytes_per_block(**SMOLLM2_KV, dtype_bytes=2, block_size=128)
    predicted = impl.cpu_kv_blocks(1, block)
    cpu_runs = request.getfixturevalue("cpu_runs")
    got = {r["name"]: r["kv_blocks"] for r in cpu_runs}
    assert all(r["block_size"] == 128 and r["kv_gib"] == 1 for r in cpu_runs), cpu_runs
    assert set(got.values()) == {predicted}, (
        f"vLLM-CPU reports {got} KV blocks; you predict {predicted} for every method (the "
        "budget is 1 GiB whatever the weights weigh)")


@pytest.mark.live
def test_vllm_quality_ordering_on_cpu(impl, request: pytest.FixtureRequest) -> None:
    impl.perplexity([-1.0])
    cpu_runs = request.getfixturevalue("cpu_runs")
    ppl = {r["name"]: impl.perplexity(r["logprobs"]) for r in cpu_runs}
    print("perplexity:", {k: round(v, 2) for k, v in ppl.items()})
    want = {r["name"]: math.exp(-sum(r["logprobs"]) / len(r["logprobs"])) for r in cpu_runs}
    for name in ppl:
        assert_close(ppl[name], want[name], cause="float64-reordered",
                     what=f"perplexity of the {name} engine from its prompt log-probabilities")
    assert min(ppl, key=ppl.get) == "bf16", f"bf16 has the lowest perplexity: {ppl}"
    assert ppl["fp8_per_channel"] < FP8_LIMIT * ppl["bf16"], (
        f"fp8 per channel within {FP8_LIMIT}x of bf16: {ppl}")
    for name in ("awq", "gptq"):
        assert ppl[name] < INT4_LIMIT * ppl["bf16"], f"{name} within {INT4_LIMIT}x of bf16: {ppl}"
        assert ppl[name] > ppl["fp8_per_channel"], f"4 bits cost more than 8: {ppl}"


@pytest.mark.live
def test_two_formats_same_values_same_perplexity(impl, request: pytest.FixtureRequest) -> None:
    impl.perplexity([-1.0])
    cpu_runs = request.getfixturevalue("cpu_runs")
    ppl = {r["name"]: impl.perplexity(r["logprobs"]) for r in cpu_runs}
    assert abs(ppl["awq"] / ppl["gptq"] - 1) < 0.005, (
        f"AWQ and GPTQ files holding the same int4 values and scales run through the same CPU "
        f"kernel: same perplexity (within 0.5%); got AWQ {ppl['awq']:.3f}, GPTQ "
        f"{ppl['gptq']:.3f}")


@pytest.mark.live
def test_analysis_of_the_live_runs(impl, request: pytest.FixtureRequest) -> None:
    impl.analyze([RunRecord("bf16", 1.0, 1, 1.0)], "bf16")
    cpu_runs = request.getfixturevalue("cpu_runs")
    runs = [RunRecord(r["name"], r["tokens_per_s"], r["kv_blocks"],
                      impl.perplexity(r["logprobs"])) for r in cpu_runs]
    got = impl.analyze(runs, "bf16")
    print("throughput order (information only):", got.throughput_order,
          {k: round(v, 2) for k, v in got.speedup.items()})
    assert got.capacity_tied and set(got.capacity_gain.values()) == {1.0}, (
        f"on CPU every method gets the same KV blocks: gains {got.capacity_gain}")
    assert got.quality_order is not None and got.quality_order[0] == "bf16", got.quality_order
    assert got.dominant is None, "tied capacity: no run is strictly ahead on both meters"
