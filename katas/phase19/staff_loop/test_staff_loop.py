"""Spec for kata 19-02: the staff loop's arithmetic and triage, graded.

The course's lab is a self-graded mock interview; its checkable core is the capacity
arithmetic of the design session and the symptom -> phase map of the debugging session. Every
expected number here is derived in the test from the course's figures (Llama-3 8B and 70B
shapes, the A100 of phase 00, the three design scenarios, the six symptoms).
"""

from __future__ import annotations

import pytest

from katas.phase19.staff_loop.scaffold import (
    A100_80GB,
    A100_BANDWIDTH,
    H100_80GB,
    H100_BANDWIDTH,
    GiB,
    KiB,
    Knob,
    MiB,
    Symptom,
)
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

LLAMA3_8B = (32, 8, 128, 2)  # layers, KV heads, head dim, fp16 bytes
LLAMA3_70B = (80, 8, 128, 2)
W_8B = 8e9 * 2  # fp16 weight bytes
W_70B = 70e9 * 2
W_405B = 405e9 * 2


def topo(result) -> tuple:
    assert isinstance(result, tuple) and len(result) == 3, (
        f"choose_parallelism returns a Topology (tp, pp, replicas), got {result!r}")
    return tuple(result)


# -- capacity arithmetic ----------------------------------------------------------------------


def test_kv_bytes_per_token_course_models(impl) -> None:
    got = (impl.kv_bytes_per_token(*LLAMA3_8B), impl.kv_bytes_per_token(*LLAMA3_70B),
           impl.kv_bytes_per_token(32, 8, 128, 1))
    assert got == (128 * KiB, 320 * KiB, 64 * KiB), (
        "K and V, per layer, per KV head, head_dim values of dtype_bytes: Llama-3 8B is 128 KiB, "
        f"70B 320 KiB, 8B with an fp8 cache 64 KiB; got {got}")


def test_kv_bytes_per_token_rejects_non_positive(impl) -> None:
    with expect_raises(ValueError, "a model with 0 layers has no cache to size",
                       match="num_layers"):
        impl.kv_bytes_per_token(0, 8, 128, 2)


def test_the_staff_sentence_numbers(impl) -> None:
    per_token = impl.kv_bytes_per_token(*LLAMA3_8B)
    got = impl.sequences_that_fit(8 * GiB, 2048, per_token)
    assert got == 32, f"8 GiB / (2048 x 128 KiB = 256 MiB) is 32 sequences, got {got}"


def test_sequences_are_floored_not_rounded(impl) -> None:
    per_token = impl.kv_bytes_per_token(*LLAMA3_70B)
    got = impl.sequences_that_fit(8 * GiB, 2048, per_token)
    assert got == 12, (
        f"70B: 8 GiB / 640 MiB = 12.8, and 0.8 of a sequence serves nobody: expected 12, got {got}")
    short = impl.sequences_that_fit(32 * 256 * MiB - 1, 2048, 128 * KiB)
    assert short == 31, f"one byte short of 32 sequences is 31 sequences, got {short}"
    assert impl.sequences_that_fit(0, 2048, 128 * KiB) == 0, "no free memory, no sequences"


def test_sequences_that_fit_rejects_bad_input(impl) -> None:
    with expect_raises(ValueError, "a 0-token context is not a sequence", match="context"):
        impl.sequences_that_fit(8 * GiB, 0, 128 * KiB)
    with expect_raises(ValueError, "negative free memory means the weights did not fit",
                       match="free"):
        impl.sequences_that_fit(-1, 2048, 128 * KiB)


def test_capacity_sentence_is_the_course_sentence(impl) -> None:
    got = impl.capacity_sentence(128 * KiB, 2048, 8 * GiB)
    expected = ("128 KiB per token, so 2048-token contexts cost 256 MiB each, "
                "so 8 GiB of free HBM holds ~32 of them")
    assert got == expected, f"the course's staff sentence:\n  {expected!r}\ngot\n  {got!r}"
    got = impl.capacity_sentence(impl.kv_bytes_per_token(*LLAMA3_70B), 2048, 8 * GiB)
    expected = ("320 KiB per token, so 2048-token contexts cost 640 MiB each, "
                "so 8 GiB of free HBM holds ~12 of them")
    assert got == expected, f"the same sentence for 70B:\n  {expected!r}\ngot\n  {got!r}"


def test_decode_floor_matches_phase00(impl) -> None:
    got = impl.decode_step_floor_s(W_8B, 1, A100_BANDWIDTH)
    assert_close(got, 0.008, cause="arithmetic",
                 what="8B fp16 on one A100 reads 16 GB per step at 2 TB/s: 8 ms (125 tok/s)")
    got = impl.decode_step_floor_s(W_70B, 4, A100_BANDWIDTH)
    assert_close(got, 0.0175, cause="arithmetic",
                 what="70B over TP=4: each rank reads 35 GB per step: 17.5 ms")


# -- topology ---------------------------------------------------------------------------------


def test_scenario_a_70b_on_two_a100_nodes(impl) -> None:
    got = topo(impl.choose_parallelism(W_70B, A100_80GB, 8, 2, hbm_bytes_per_s=A100_BANDWIDTH,
                                       itl_target_s=0.030))
    assert got == (4, 1, 4), (
        "140 GB of weights, at most 40 GiB per GPU: TP=2 (70 GB/GPU) does not fit, TP=4 "
        f"(35 GB, 17.5 ms floor < 30 ms) does; 16 GPUs = 4 replicas. Got {got}")
    got = topo(impl.choose_parallelism(W_70B, A100_80GB, 8, 2))
    assert got == (4, 1, 4), f"without an ITL target memory alone decides: (4, 1, 4), got {got}"
    got = topo(impl.choose_parallelism(W_70B, A100_80GB, 8, 2, hbm_bytes_per_s=A100_BANDWIDTH,
                                       itl_target_s=0.010))
    assert got == (8, 1, 2), (
        f"a 10 ms ITL floor needs TP=8 (8.75 ms): two replicas of one node each; got {got}")


def test_tp_stays_in_the_node_pp_crosses_nodes(impl) -> None:
    got = topo(impl.choose_parallelism(W_70B, 24 * GiB, 8, 2))
    assert got == (8, 2, 1), (
        "on 24 GiB GPUs even TP=8 leaves 17.5 GB per GPU (> 12 GiB): fill the node with TP, "
        f"then split the layers across the two nodes with PP=2; got {got}")


def test_scenario_b_8b_on_eight_gpus(impl) -> None:
    got = topo(impl.choose_parallelism(W_8B, A100_80GB, 8, 1))
    assert got == (1, 1, 8), (
        f"16 GB of weights fit one GPU: no model parallelism, 8 replicas; got {got}")


def test_scenario_c_latency_first_8b_on_four_h100s(impl) -> None:
    got = topo(impl.choose_parallelism(W_8B, H100_80GB, 4, 1, hbm_bytes_per_s=H100_BANDWIDTH,
                                       itl_target_s=0.002))
    assert got == (4, 1, 1), (
        "a 2 ms ITL floor: TP=1 reads 16 GB in 4.8 ms, TP=2 in 2.4 ms, TP=4 in 1.2 ms: one "
        f"replica over all four GPUs; got {got}")
    got = topo(impl.choose_parallelism(W_8B, H100_80GB, 4, 1, hbm_bytes_per_s=H100_BANDWIDTH,
                                       itl_target_s=0.005))
    assert got == (1, 1, 4), f"at 5 ms TP=1 (4.8 ms) is enough: 4 replicas; got {got}"


def test_pp_does_not_buy_itl(impl) -> None:
    with expect_raises(ValueError, "a 5 ms floor for 70B needs more than TP=8 (8.75 ms); "
                       "pipeline stages run one after another, so PP cannot help"):
        impl.choose_parallelism(W_70B, A100_80GB, 8, 2, hbm_bytes_per_s=A100_BANDWIDTH,
                                itl_target_s=0.005)


def test_impossible_placement_is_an_error(impl) -> None:
    with expect_raises(ValueError, "405B fp16 (810 GB) exceeds 16 x 40 GiB of weight budget"):
        impl.choose_parallelism(W_405B, A100_80GB, 8, 2)
    with expect_raises(ValueError, "TP sizes are powers of two: 6 GPUs per node is refused",
                       match="power of two"):
        impl.choose_parallelism(W_8B, A100_80GB, 6, 1)
    with expect_raises(ValueError, "an ITL target without a bandwidth cannot be checked"):
        impl.choose_parallelism(W_8B, A100_80GB, 8, 1, itl_target_s=0.01)


def test_replicas_round_up(impl) -> None:
    got = [impl.replicas_needed(d, c) for d, c in ((1000, 250), (1001, 250), (0, 250), (1, 250))]
    assert got == [4, 5, 0, 1], (
        f"replicas = demand / capacity rounded UP (a part-replica is a whole one): expected "
        f"[4, 5, 0, 1], got {got}")
    with expect_raises(ValueError, "a replica that serves nothing cannot cover any demand"):
        impl.replicas_needed(10, 0)


def test_scenario_a_capacity_walk(impl) -> None:
    """Scenario (a) end to end: 1,000 concurrent 2,048-token chats."""
    tp, pp, replicas = topo(impl.choose_parallelism(W_70B, A100_80GB, 8, 2))
    free = tp * pp * A100_80GB * 0.9 - W_70B  # 90% of the group's memory, minus the weights
    per_replica = impl.sequences_that_fit(free, 2048, impl.kv_bytes_per_token(*LLAMA3_70B))
    assert per_replica == 252, (
        f"4 x 80 GiB x 0.9 - 140 GB = 169.2 GB of KV at 640 MiB per chat: 252, got {per_replica}")
    needed = impl.replicas_needed(1000, per_replica)
    assert needed == 4 == replicas, (
        f"1000 chats / 252 per replica: 4 replicas, exactly the cluster's {replicas}; got {needed}")


# -- triage -----------------------------------------------------------------------------------

COURSE_PHASES = {
    Symptom.P99_ITL_SPIKES_HOURLY: (3, 18),
    Symptom.THROUGHPUT_DOWN_30_PERCENT_AFTER_MODEL_SWAP: (4, 6),
    Symptom.ONE_TENANT_COMPLAINS_DASHBOARDS_GREEN: (11,),
    Symptom.SEEDED_REQUESTS_DO_NOT_REPRODUCE: (9,),
    Symptom.OUTPUTS_DIFFER_ACROSS_TP_SIZES: (10,),
    Symptom.VLM_TTFT_DOUBLED: (13,),
}
COURSE_KNOBS = {
    Symptom.P99_ITL_SPIKES_HOURLY: Knob.LONG_PREFILL_TOKEN_THRESHOLD,
    Symptom.THROUGHPUT_DOWN_30_PERCENT_AFTER_MODEL_SWAP: Knob.ATTENTION_BACKEND,
    Symptom.ONE_TENANT_COMPLAINS_DASHBOARDS_GREEN: Knob.MAX_LORAS,
    Symptom.SEEDED_REQUESTS_DO_NOT_REPRODUCE: Knob.SEED_AND_BATCH_INVARIANCE,
    Symptom.OUTPUTS_DIFFER_ACROSS_TP_SIZES: Knob.TOLERANCE,
    Symptom.VLM_TTFT_DOUBLED: Knob.IMAGE_SIZE,
}


def _triage_all(impl) -> dict:
    out = {}
    for symptom in Symptom:
        answer = impl.triage(symptom)
        assert isinstance(answer, tuple) and len(answer) == 2, (
            f"triage returns (phases, knob), got {answer!r} for {symptom.name}")
        out[symptom] = answer
    return out


def test_triage_matches_the_course_catalog(impl) -> None:
    answers = _triage_all(impl)
    wrong = {s.name: (tuple(a[0]), COURSE_PHASES[s]) for s, a in answers.items()
             if tuple(a[0]) != COURSE_PHASES[s]}
    assert not wrong, f"phases (yours, the course's) differ for: {wrong}"


def test_triage_knobs(impl) -> None:
    answers = _triage_all(impl)
    wrong = {s.name: (a[1], COURSE_KNOBS[s]) for s, a in answers.items() if a[1] != COURSE_KNOBS[s]}
    assert not wrong, f"first knob (yours, expected) differs for: {wrong}"


def test_triage_rejects_an_unknown_symptom(impl) -> None:
    with expect_raises(ValueError, "a free-text symptom is not in the catalog: triage takes a "
                       "Symptom"):
        impl.triage("the GPU is on fire")
