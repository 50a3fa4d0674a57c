"""Adapter slots: an LRU over ``max_loras`` slots that never evicts what a running request uses,
and the admission walk that defers (never blocks on) a request whose adapter has no slot."""

from __future__ import annotations

import pytest

from katas.phase11.adapter_slots.scaffold import (
    TraceRequest,
    run_trace,
    skewed_trace,
    uniform_trace,
)
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok


# -- the cache --------------------------------------------------------------------------------


def test_fill_then_hit(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    outcomes = [cache.ensure(a) for a in (1, 2, 1)]
    assert outcomes == ["load", "load", "hit"], (
        f"two free slots, adapters 1, 2, 1: expected load, load, hit, got {outcomes}")
    assert cache.stats() == {"hits": 1, "misses": 2, "evictions": 0}, (
        f"stats after load, load, hit: {cache.stats()}")
    assert cache.resident() == [2, 1], (
        f"resident() lists slotted adapters coldest first: after 1, 2, 1 it is [2, 1], got "
        f"{cache.resident()}")


def test_capacity_is_exactly_max_loras(impl) -> None:
    cache = impl.AdapterSlotCache(3)
    outcomes = [cache.ensure(a) for a in (1, 2, 3, 4)]
    assert outcomes == ["load", "load", "load", "evict+load"], (
        f"3 slots, 4 adapters: the fourth evicts, got {outcomes}")
    assert cache.resident() == [2, 3, 4], f"3 slots hold 3 adapters, got {cache.resident()}"
    assert cache.stats() == {"hits": 0, "misses": 4, "evictions": 1}, cache.stats()


def test_lru_evicts_the_coldest(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    for a in (1, 2, 1):
        cache.ensure(a)
    outcome = cache.ensure(3)
    assert outcome == "evict+load", f"no free slot: expected 'evict+load', got {outcome!r}"
    assert cache.resident() == [1, 3], (
        f"adapter 1 was re-touched after 2, so 2 is the least recently used and must go; "
        f"resident is {cache.resident()} (a hit that does not refresh recency makes this FIFO)")


def test_skewed_traffic_loves_lru(impl) -> None:
    cache = impl.AdapterSlotCache(4)
    trace = skewed_trace()  # 2000 requests, 80% on 3 hot adapters, 20% over all 16
    for adapter in trace:
        cache.ensure(adapter)
    stats = cache.stats()
    assert stats == {"hits": 1539, "misses": 461, "evictions": 457}, (
        f"LRU with 4 slots on the seeded 80/20 trace: expected 1539 hits, 461 misses, 457 "
        f"evictions, got {stats}")
    assert stats["hits"] / len(trace) > 0.75


def test_uniform_traffic_thrashes_toward_slots_over_tenants(impl) -> None:
    cache = impl.AdapterSlotCache(4)
    trace = uniform_trace()  # 2000 requests over 8 adapters
    for adapter in trace:
        cache.ensure(adapter)
    stats = cache.stats()
    assert stats["hits"] == 972, (
        f"4 slots, 8 equally busy tenants: the hit rate falls to about 4/8; the seeded trace "
        f"gives 972 hits of 2000, got {stats}")


# -- pins: what running requests use ----------------------------------------------------------


def test_a_pinned_adapter_is_never_evicted(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    cache.pin(1)
    cache.ensure(1)
    cache.ensure(2)  # 1 is now the coldest, but a running request uses it
    outcome = cache.ensure(3)
    assert outcome == "evict+load" and cache.resident() == [1, 3], (
        f"adapter 1 is pinned by a running request: 2 must be evicted although 1 is colder; "
        f"got {outcome!r}, resident {cache.resident()}")
    cache.pin(3)
    with expect_raises(RuntimeError, "every slot holds a pinned adapter: nothing may be evicted"):
        cache.ensure(4)


def test_admission_counts_distinct_pinned_adapters(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    cache.pin(1)
    cache.pin(1)
    assert cache.can_admit(2), "one distinct adapter pinned of 2 slots: a second may run"
    cache.pin(2)
    assert cache.can_admit(1) and cache.can_admit(2), "a pinned adapter is always admissible"
    assert not cache.can_admit(3), "2 distinct adapters pinned, max_loras=2: a third must wait"
    cache.unpin(1)
    assert not cache.can_admit(3), "adapter 1 still has one running request"
    cache.unpin(1)
    assert cache.can_admit(3), "the last request on adapter 1 finished: its pin is gone"
    with expect_raises(ValueError, "unpinning an adapter nobody pins is a bookkeeping bug",
                       match="1"):
        cache.unpin(1)


def test_idle_resident_adapters_do_not_block_admission(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    requests = [TraceRequest("a", 0, 1, 2), TraceRequest("b", 0, 2, 2),
                TraceRequest("c", 3, 3, 2), TraceRequest("a2", 6, 1, 1)]
    admitted = run_trace(cache, requests)
    assert admitted == [["a", "b"], [], [], ["c"], [], [], ["a2"]], (
        f"a and b finished at step 2; their adapters stay resident but unpinned, so c is "
        f"admitted on arrival (evicting the colder one) and so is a2; got {admitted}")
    assert cache.stats() == {"hits": 3, "misses": 4, "evictions": 2}, cache.stats()
    assert cache.resident() == [3, 1], f"resident {cache.resident()}, expected [3, 1]"


def test_a_running_tenant_is_never_thrashed(impl) -> None:
    cache = impl.AdapterSlotCache(2)
    requests = [TraceRequest("a", 0, 1, 6), TraceRequest("b", 0, 2, 6),
                TraceRequest("c", 0, 3, 6), TraceRequest("base", 1, None, 2),
                TraceRequest("a2", 2, 1, 2)]
    admitted = run_trace(cache, requests)
    assert admitted[:7] == [["a", "b"], ["base"], ["a2"], [], [], [], ["c"]], (
        f"two slots, three long tenants: c waits until a and b finish (step 6) while base and "
        f"a2 (adapter 1, already running) go ahead; got {admitted[:7]}")
    assert cache.stats() == {"hits": 15, "misses": 3, "evictions": 1}, (
        f"each adapter loads once and hits on every later step it runs: expected 15 hits, 3 "
        f"misses, 1 eviction, got {cache.stats()} (admitting c early, or evicting a running "
        f"tenant's adapter, reloads adapters every step)")


def test_bad_max_loras_is_refused(impl) -> None:
    with expect_raises(ValueError, "a cache needs at least one slot", match="max_loras"):
        impl.AdapterSlotCache(0)


# -- the admission walk -------------------------------------------------------------------------


def test_scheduler_caps_distinct_adapters_per_step(impl) -> None:
    admitted = impl.max_schedulable([1, 2, 1, 3, 2, 4], max_loras=2)
    assert admitted == [0, 1, 2, 4], (
        f"adapters [1, 2, 1, 3, 2, 4], max_loras=2: 1 and 2 claim the slots, the second 1 and "
        f"2 reuse them, 3 and 4 are deferred; expected [0, 1, 2, 4], got {admitted}")


def test_base_requests_never_consume_slots(impl) -> None:
    admitted = impl.max_schedulable([None, 1, None, 2, None], max_loras=1)
    assert admitted == [0, 1, 2, 4], (
        f"base requests (None) ride free; with one slot adapter 2 waits: expected "
        f"[0, 1, 2, 4], got {admitted}")


def test_deferral_is_not_a_barrier(impl) -> None:
    admitted = impl.max_schedulable([1, 2, 3, 1, None, 2], max_loras=2)
    assert admitted == [0, 1, 3, 4, 5], (
        f"adapter 3 (index 2) cannot get a slot, but the requests behind it can: expected "
        f"[0, 1, 3, 4, 5], got {admitted} (a break instead of a skip stalls the whole queue)")


def test_running_adapters_count_against_the_cap(impl) -> None:
    admitted = impl.max_schedulable([3, 1, 2, None], max_loras=2, running=[1, None, 1])
    assert admitted == [0, 1, 3], (
        f"running requests already use adapter 1: one slot is left, 3 takes it, 1 reuses, 2 "
        f"waits; expected [0, 1, 3], got {admitted}")
    with expect_raises(ValueError, "running requests already exceed max_loras", match="max_loras"):
        impl.max_schedulable([1], max_loras=1, running=[2, 3])


# -- the engine ------------------------------------------------------------------------------


def _serve(model, slot_cache_cls):
    from mini_vllm import LLMEngine, SamplingParams
    from mini_vllm.lora import LoRAConfig, LoRARequest
    from mini_vllm.lora.tiny_adapters import AdapterSpec, build_tiny_adapter
    from mini_vllm.models.tiny_llama import build_tiny_llama

    base = build_tiny_llama()
    specs = [AdapterSpec(seed=1), AdapterSpec(seed=2, r=4, lora_alpha=8,
                                              target_modules=("q_proj", "v_proj")),
             AdapterSpec(seed=3, target_modules=("o_proj", "down_proj"))]
    loras = [LoRARequest(f"tenant-{i}", i + 1, str(build_tiny_adapter(base, s)))
             for i, s in enumerate(specs)]
    engine = LLMEngine(model=model, lora_config=LoRAConfig(
        max_loras=2, max_lora_rank=8, slot_cache_cls=slot_cache_cls))
    plan = [("a", 0, 6), ("b", 1, 3), ("c", 2, 2), ("base", None, 3), ("a2", 0, 2),
            ("c2", 2, 4), ("b2", 1, 2), ("base2", None, 1)]
    names = {}
    for name, which, n in plan:
        params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        rid = engine.add_request(f"tenant {name} asks", params,
                                 lora_request=None if which is None else loras[which])
        names[rid] = name
    steps, tokens = [], {}
    for _ in range(40):  # bounded: a cache that never admits must fail, not hang
        if not engine.has_unfinished_requests():
            break
        before = {r.request_id for r in engine.scheduler.running}
        finished = engine.step()
        started = [r.request_id for r in engine.scheduler.running if r.request_id not in before]
        started += [r.request_id for r in finished if r.request_id not in before]
        steps.append(sorted(names[rid] for rid in started))
        tokens.update({names[r.request_id]: r.output_token_ids for r in finished})
    return steps, tokens, engine


def test_your_cache_drives_the_engine(impl, tiny_llama) -> None:
    from mini_vllm.lora import AdapterSlotCache as StockCache

    steps, tokens, engine = _serve(tiny_llama, impl.AdapterSlotCache)
    want_steps, want_tokens, stock = _serve(tiny_llama, StockCache)
    assert not engine.has_unfinished_requests(), (
        f"requests still waiting after 40 steps with your cache (admitted per step: {steps}): "
        f"can_admit never let them in")
    assert steps == want_steps, (
        f"admissions per step with your cache {steps}, with mini_vllm's {want_steps}")
    assert tokens == want_tokens, "same admissions must give the same tokens"
    assert engine.lora_slots.stats() == stock.lora_slots.stats(), (
        f"your cache's stats in the engine {engine.lora_slots.stats()}, mini_vllm's "
        f"{stock.lora_slots.stats()}")
    assert engine.lora_manager.num_slot_loads == stock.lora_manager.num_slot_loads
