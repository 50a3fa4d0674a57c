from __future__ import annotations

import random

import pytest

from mini_vllm import KVCacheManager, LLMEngine, Request, RequestStatus, SamplingParams, Scheduler
from mini_vllm.tests.builders import compositions, greedy, record_schedules, run_all
from pytest_vllm_katas.invariants import check_block_pool, check_scheduler_step


def scheduler(num_blocks: int = 256, block_size: int = 4, **kwargs: int) -> Scheduler:
    return Scheduler(KVCacheManager(num_blocks=num_blocks, block_size=block_size), **kwargs)


def test_budget_trace_matches_lab_01_04() -> None:
    engine = LLMEngine(max_num_batched_tokens=8)
    a = engine.add_request("hello world", greedy(4))
    b = engine.add_request("goodbye", greedy(4))
    outputs = record_schedules(engine)
    run_all(engine)
    assert compositions(outputs, {a: "A", b: "B"}) == [
        {"A": 8},
        {"A": 3, "B": 5},
        {"A": 1, "B": 2},
        {"A": 1, "B": 1},
        {"A": 1, "B": 1},
        {"B": 1},
    ]


def test_ample_budget_prefills_everyone_in_step_one() -> None:
    engine = LLMEngine()
    a = engine.add_request("hello world", greedy(4))
    b = engine.add_request("goodbye", greedy(4))
    outputs = record_schedules(engine)
    run_all(engine)
    steps = compositions(outputs, {a: "A", b: "B"})
    assert steps[0] == {"A": 11, "B": 7}
    assert all(step == {"A": 1, "B": 1} for step in steps[1:])


def test_token_conservation_per_request() -> None:
    engine = LLMEngine(max_num_batched_tokens=5, block_size=4)
    prompts = ["hello world", "goodbye", "a", "S" * 23]
    ids = [engine.add_request(p, greedy(6)) for p in prompts]
    outputs = record_schedules(engine)
    run_all(engine)
    for rid, prompt in zip(ids, prompts, strict=True):
        total = sum(out.num_scheduled_tokens.get(rid, 0) for out in outputs)
        assert total == len(prompt) + 6 - 1, f"{rid}: scheduled {total} tokens"


def test_threshold_chunks_a_prefill_and_emits_nothing_mid_prefill() -> None:
    engine = LLMEngine(long_prefill_token_threshold=2)
    rid = engine.add_request("0123456789", greedy(3))
    seen: list[tuple[int, int]] = []
    while engine.has_unfinished_requests():
        finished = engine.step()
        for r in [*engine.scheduler.running, *finished]:
            if r.request_id == rid:
                seen.append((r.num_computed_tokens, r.num_tokens))
    assert seen[:5] == [(2, 10), (4, 10), (6, 10), (8, 10), (10, 11)]


def test_spike_profiles_match_lab_03_05() -> None:
    def victim_costs(threshold: int) -> list[int]:
        engine = LLMEngine(long_prefill_token_threshold=threshold)
        victim = engine.add_request("hi", greedy(16))
        engine.step()  # the victim's own prefill, not recorded
        engine.add_request("x" * 256, greedy(2))
        outputs = record_schedules(engine)
        run_all(engine)
        return [o.total_num_scheduled_tokens for o in outputs if victim in o.num_scheduled_tokens]

    assert victim_costs(0) == [257, 2] + [1] * 13
    assert victim_costs(32) == [33] * 8 + [2] + [1] * 6


def test_lifo_preemption_under_memory_pressure() -> None:
    sched = scheduler(num_blocks=5, block_size=4)  # 4 usable blocks = 16 slots
    a, b = Request(list(range(8)), greedy(8)), Request(list(range(10, 18)), greedy(8))
    sched.add_request(a)
    sched.add_request(b)
    out = sched.schedule()
    assert out.num_scheduled_tokens == {a.request_id: 8, b.request_id: 8}
    sched.update_from_output(out, {a.request_id: 1, b.request_id: 2})
    out = sched.schedule()
    assert out.preempted_req_ids == [b.request_id], "the most recent admission is the victim"
    assert out.num_scheduled_tokens == {a.request_id: 1}
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.output_token_ids == [2] and b.num_preemptions == 1
    assert list(sched.waiting) == [b] and sched.running == [a]
    check_block_pool(sched.kv.block_pool)


def test_no_admissions_in_a_step_that_preempted() -> None:
    sched = scheduler(num_blocks=5, block_size=4)
    a, b = Request(list(range(8)), greedy(8)), Request(list(range(10, 18)), greedy(8))
    sched.add_request(a)
    sched.add_request(b)
    out = sched.schedule()
    sched.update_from_output(out, {a.request_id: 1, b.request_id: 2})
    late = Request([1], greedy(1))
    sched.add_request(late)
    out = sched.schedule()
    assert out.preempted_req_ids and late.request_id not in out.num_scheduled_tokens


def test_max_num_seqs_caps_admissions() -> None:
    sched = scheduler(max_num_seqs=4)
    for i in range(10):
        sched.add_request(Request([i], greedy(2)))
    out = sched.schedule()
    assert len(out.num_scheduled_tokens) == 4 and len(sched.running) == 4


def test_admission_stops_at_the_head_of_the_line_when_memory_runs_out() -> None:
    sched = scheduler(num_blocks=4, block_size=4)  # 12 slots
    big, small = Request(list(range(10)), greedy(2)), Request([1], greedy(2))
    blocker = Request(list(range(20, 26)), greedy(2))
    sched.add_request(blocker)
    sched.add_request(big)
    sched.add_request(small)
    out = sched.schedule()
    assert list(out.num_scheduled_tokens) == [blocker.request_id]
    assert big.status == RequestStatus.WAITING and big.num_computed_tokens == 0
    assert small.status == RequestStatus.WAITING, "no skipping past the head of the line"


def test_prefix_hit_gives_a_waiter_a_head_start() -> None:
    sched = scheduler(block_size=4)
    first, second = Request(list(range(24)), greedy(2)), Request(list(range(24)), greedy(2))
    sched.add_request(first)
    sched.add_request(second)
    out = sched.schedule()
    assert out.num_scheduled_tokens == {first.request_id: 24, second.request_id: 4}
    assert second.num_computed_tokens == 20


def test_full_cache_hit_schedules_one_token() -> None:
    class UncappedKV(KVCacheManager):
        """A manager without the num_tokens - 1 cap: hits may cover the whole prompt."""

        def get_computed_blocks(self, request: Request):  # type: ignore[override]
            hashes = self._block_hashes(request, request.num_tokens // self.block_size)
            hits = [self.block_pool.get_cached_block(h) for h in hashes]
            if None in hits:
                return [], 0
            return hits, len(hits) * self.block_size

    sched = Scheduler(UncappedKV(num_blocks=32, block_size=4))
    first = Request(list(range(8)), greedy(2))
    sched.add_request(first)
    sched.update_from_output(sched.schedule(), {first.request_id: 7})
    second = Request(list(range(8)), greedy(2))
    sched.add_request(second)
    out = sched.schedule()
    assert out.num_scheduled_tokens[second.request_id] == 1
    assert Scheduler.needs_sample(second, 1), "the one token recomputed yields the logits"


def test_update_from_output_reaps_finished_and_frees_kv() -> None:
    sched = scheduler()
    req = Request([1, 2, 3], greedy(1))
    sched.add_request(req)
    finished = sched.update_from_output(sched.schedule(), {req.request_id: 9})
    assert finished == [req] and req.status == RequestStatus.FINISHED_LENGTH
    assert sched.running == [] and sched.kv.get_block_ids(req.request_id) == []
    assert sched.kv.block_pool.get_usage() == 0.0


@pytest.mark.parametrize("policy", ["course", "vllm-0.32"])
def test_scheduler_invariants_hold_every_step_and_nobody_starves(policy: str) -> None:
    rng = random.Random(7)
    budget, seats = 24, 6
    engine = LLMEngine(
        policy=policy,
        num_blocks=24,
        block_size=4,
        max_num_batched_tokens=budget,
        max_num_seqs=seats,
        long_prefill_token_threshold=10,
    )
    sched = engine.scheduler
    pending = [
        ("".join(rng.choice("ab") for _ in range(rng.randint(1, 30))), rng.randint(1, 12))
        for _ in range(40)
    ]
    alive: dict[str, int] = {}
    step = 0
    while pending or engine.has_unfinished_requests():
        for _ in range(rng.randint(0, 3)):
            if pending:
                prompt, m = pending.pop()
                alive[engine.add_request(prompt, greedy(m))] = step
        before = [r.request_id for r in sched.running]
        num_requests_before = len(sched.running) + len(sched.waiting)
        outputs = record_schedules(engine)
        finished = engine.step()
        sched.schedule = type(sched).schedule.__get__(sched)  # drop the probe
        check_scheduler_step(
            outputs[0],
            max_num_batched_tokens=budget,
            max_num_seqs=seats,
            num_running=len(sched.running),
            running_before=before,
            long_prefill_token_threshold=10,
            lone_request_ignores_long_prefill_threshold=(
                sched.lone_request_ignores_long_prefill_threshold),
            num_requests_before=num_requests_before,
        )
        check_block_pool(sched.kv.block_pool)
        in_queues = [r.request_id for r in [*sched.running, *sched.waiting]]
        assert len(in_queues) == len(set(in_queues)), "a request sits in two queues"
        for r in finished:
            del alive[r.request_id]
        assert all(step - born < 400 for born in alive.values()), "a request starved"
        step += 1
    assert not alive
    assert sched.kv.block_pool.get_usage() == 0.0, "all KV returned at the end"


def test_sampling_params_reach_the_sampler_unchanged() -> None:
    seen: list[SamplingParams] = []

    def spy(logits, params):  # type: ignore[no-untyped-def]
        seen.append(params)
        return 0

    params = SamplingParams(max_tokens=2, temperature=0.5, top_k=3, seed=11)
    LLMEngine(sampler=spy).generate(["ab"], params)
    assert seen == [params, params]
