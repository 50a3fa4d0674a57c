"""Differential suite: mini_vllm under the "vllm-0.32" preset against vLLM 0.32's own classes.

vLLM's ``Scheduler`` and ``KVCacheManager`` (built as vLLM's own tests build them, offline, no
model executor) and mini_vllm's run the same requests and the same token stream in lockstep;
after every step or op the free queue, ref counts, prefix-cache index, block tables, queues,
rows, admissions and their hits, preemptions and finishes must be identical
(``pytest_vllm_katas/live/vllm_twins.py`` builds, drives and compares). Hypothesis draws the
workloads and shrinks a divergence to a minimal one, printed with the failure.

The last tests prove the suite has teeth: with any one of the preset's rules switched back to the
course's, it finds a divergence, and a small one.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, find, given, settings

from pytest_vllm_katas.live import vllm_twins
from pytest_vllm_katas.live.fixtures import require_vllm
from pytest_vllm_katas.live.vllm_twins import (
    VLLM_PRESET,
    PoolConfig,
    RequestSpec,
    Workload,
    kv_runs,
    policy_variants,
    run_kv_ops,
    run_scheduler_workload,
    workloads,
)

pytestmark = pytest.mark.live

# Fixed seeds (derandomize) and no example database: every run checks the same workloads, and a
# failure reproduces exactly. No deadline: a step's cost is not what is under test.
_SETTINGS = dict(derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _vllm_imported() -> None:
    require_vllm()
    vllm_twins.vllm_api()  # the one slow import, outside every example


def _workload(*requests: RequestSpec, **knobs: object) -> Workload:
    base = dict(block_size=2, num_blocks=3, max_num_seqs=1, max_num_batched_tokens=2,
                long_prefill_token_threshold=0, enable_caching=False)
    return Workload(**{**base, **knobs}, requests=requests)  # type: ignore[arg-type]


def _req(rid: str, prompt: tuple[int, ...], max_tokens: int = 1) -> RequestSpec:
    return RequestSpec(rid=rid, prompt=prompt, max_tokens=max_tokens)


# One witness per rule, minimal cases like those the teeth tests below find; the last test checks
# that each still diverges with its rule switched back to the course's.
UNHASHED_FIRST = _workload(_req("r0", (1,), 2))
DUPLICATES = _workload(_req("r0", (1, 1)), _req("r1", (1, 1)), _req("r2", (1,)),
                       max_num_seqs=2, enable_caching=True)
RESERVE_FULL_ISL = _workload(_req("r0", (1,)), _req("r1", (1, 1, 1)), _req("r2", (1,)),
                             max_num_seqs=2)
LONE_REQUEST = _workload(_req("r0", (1, 1)), long_prefill_token_threshold=1)


def _fail_message(divergence: object, policy: object = VLLM_PRESET) -> str:
    return f"mini_vllm (policy {policy!r}) departs from vLLM 0.32:\n{divergence}"


@settings(max_examples=400, **_SETTINGS)
@given(workloads())
@example(UNHASHED_FIRST)
@example(DUPLICATES)
@example(RESERVE_FULL_ISL)
@example(LONE_REQUEST)
def test_scheduler_agrees_with_vllm_step_by_step(w: Workload) -> None:
    divergence = run_scheduler_workload(w)
    assert divergence is None, _fail_message(divergence)


@settings(max_examples=200, **_SETTINGS)
@given(workloads(cramped=True))
def test_scheduler_agrees_with_vllm_under_memory_pressure(w: Workload) -> None:
    divergence = run_scheduler_workload(w)
    assert divergence is None, _fail_message(divergence)


@settings(max_examples=150, **_SETTINGS)
@given(workloads(cramped=True))
def test_without_full_isl_reservation_both_admit_on_the_first_chunk(w: Workload) -> None:
    # The one rule upstream can switch off too (SchedulerConfig.scheduler_reserve_full_isl):
    # off on both sides, mini_vllm's first-chunk admission must be exactly vLLM's.
    policy = policy_variants()["scheduler_reserve_full_isl"]
    divergence = run_scheduler_workload(w, policy, reserve_full_isl=False)
    assert divergence is None, _fail_message(divergence, policy)


@settings(max_examples=300, **_SETTINGS)
@given(kv_runs())
@example((PoolConfig(block_size=2, num_blocks=3, enable_caching=True),
          [("admit", (1, 1), 1), ("admit", (1, 1), 2), ("compute", 0, 1)]))
@example((PoolConfig(block_size=2, num_blocks=4, enable_caching=True),
          [("admit", (1, 1, 2), 3), ("reset",), ("free", 0), ("reset",), ("admit", (1, 1), 2)]))
def test_kv_cache_manager_agrees_with_vllm_op_by_op(run: tuple[PoolConfig, list]) -> None:
    config, ops = run
    divergence = run_kv_ops(config, ops)
    assert divergence is None, _fail_message(divergence)


def test_the_preset_differs_from_the_course_in_four_rules() -> None:
    assert len(policy_variants()) == 4, (
        f"the teeth tests below switch each preset rule back one at a time; expected the issue's "
        f"four rules, got {sorted(policy_variants())}"
    )


# Shrinking is where these spend their time; max_examples only bounds the search before it.
_FIND = settings(max_examples=1000, **_SETTINGS)


@pytest.mark.parametrize("rule", sorted(policy_variants()))
def test_each_rule_switched_back_is_caught_with_a_small_case(rule: str) -> None:
    variant = policy_variants()[rule]
    minimal = find(workloads(), lambda w: run_scheduler_workload(w, variant) is not None,
                   settings=_FIND)
    divergence = run_scheduler_workload(minimal, variant)
    size = sum(len(r.prompt) + r.max_tokens for r in minimal.requests)
    assert len(minimal.requests) <= 4 and size <= 20, (
        f"with {rule} switched back, the smallest divergence found has {len(minimal.requests)} "
        f"requests and {size} tokens; expected at most 4 and 20:\n{minimal}\n{divergence}"
    )


@pytest.mark.parametrize("rule", ["cache_duplicate_blocks", "free_unhashed_blocks_first"])
def test_each_pool_rule_switched_back_is_caught_op_by_op(rule: str) -> None:
    variant = policy_variants()[rule]
    config, ops = find(kv_runs(), lambda r: run_kv_ops(*r, policy=variant) is not None,
                       settings=_FIND)
    assert len(ops) <= 4, (
        f"with {rule} switched back, the smallest diverging op sequence has {len(ops)} ops; "
        f"expected at most 4:\n{config} {ops}\n{run_kv_ops(config, ops, policy=variant)}"
    )


@pytest.mark.parametrize(("witness", "rule"), [
    (UNHASHED_FIRST, "free_unhashed_blocks_first"),
    (DUPLICATES, "cache_duplicate_blocks"),
    (RESERVE_FULL_ISL, "scheduler_reserve_full_isl"),
    (LONE_REQUEST, "lone_request_ignores_long_prefill_threshold"),
])
def test_each_witness_diverges_under_the_course_rule(witness: Workload, rule: str) -> None:
    assert run_scheduler_workload(witness, policy_variants()[rule]) is not None, (
        f"{witness} no longer tells {rule} apart from the course's rule"
    )
