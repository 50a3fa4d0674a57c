"""Kata 09-02: n > 1 shares the prompt's KV. The course's numbers, then mini_vllm's engine on the
tiny Llama (cpu), then vLLM's own KV manager (live, skipped without vLLM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

BLOCK = 4
PROMPT = list(range(60, 90))  # 30 tokens: 7 full blocks of 4 + a 2-token tail


def test_course_n4_hit_rate_is_75_percent(impl) -> None:
    got = impl.hit_rate(4, 30, BLOCK)
    assert_close(got, 0.75, cause="arithmetic",
                 what="n=4: three of four children hit every full prompt block, 1 - 1/n")
    for n in (2, 8):
        got = impl.hit_rate(n, 30, BLOCK)
        assert_close(got, 1 - 1 / n, cause="arithmetic", what=f"n={n}: the first child misses, "
                     "the other n - 1 hit: (n - 1) / n")


def test_course_2000_token_prompt_saves_about_6000_prefill_tokens(impl) -> None:
    shared = impl.prefill_tokens(4, 2000, 16)
    alone = impl.prefill_tokens(4, 2000, 16, enable_caching=False)
    assert alone == 8000, f"caching off: 4 full prefills of 2,000 = 8,000 tokens, got {alone}"
    assert shared == 2048, (
        f"2,000 = 125 blocks of 16, the 125th holds the last token and is recomputed: "
        f"2,000 + 3 x 16 = 2,048 prefill tokens, got {shared}")
    assert alone - shared == 5952, f"the course's ~6,000 saved is 5,952, got {alone - shared}"


def test_kv_is_the_prompt_once_plus_each_childs_tail_and_samples(impl) -> None:
    got = impl.kv_tokens(4, 2000, 100, 16)
    assert got == 1984 + 4 * (16 + 99), (
        f"1,984 shared slots + 4 x (16 private prompt + 99 sampled) = 2,444 (the course's "
        f"P + nL = 2,400 rounds this), got {got}")
    off = impl.kv_tokens(4, 2000, 100, 16, enable_caching=False)
    assert off == 4 * 2099, f"caching off: 4 x (2,000 + 99) = 8,396 slots, got {off}"


def test_a_partial_tail_block_is_never_shared(impl) -> None:
    got = impl.shared_blocks(4, 30, BLOCK)
    assert got == 7, f"30 tokens = 7 full blocks + a 2-token tail: 7 shared, got {got}"
    counts = impl.block_ref_counts(4, 30, BLOCK)
    assert counts == [4] * 7 + [1] * 4, (
        f"7 shared blocks at ref count 4, then one private tail block per child; got {counts}")


def test_a_whole_block_prompt_recomputes_its_last_block(impl) -> None:
    got = impl.shared_blocks(4, 32, BLOCK)
    assert got == 7, (f"32 tokens = 8 full blocks, but a hit stops at num_tokens - 1 = 31: "
                      f"7 shared, got {got}")
    assert impl.prefill_tokens(4, 32, BLOCK) == 32 + 3 * 4
    assert_close(impl.hit_rate(4, 32, BLOCK), 3 * 7 / (4 * 8), cause="arithmetic",
                 what="21 hits of 32 full-block lookups")


def test_caching_off_shares_nothing(impl) -> None:
    assert impl.shared_blocks(4, 30, BLOCK, enable_caching=False) == 0
    assert impl.hit_rate(4, 30, BLOCK, enable_caching=False) == 0.0
    counts = impl.block_ref_counts(4, 30, BLOCK, enable_caching=False)
    assert counts == [1] * 32, f"caching off: 4 x 8 private blocks at ref count 1, got {counts}"


def test_one_sample_or_a_short_prompt_shares_nothing(impl) -> None:
    assert impl.shared_blocks(1, 30, BLOCK) == 0, "n=1 has no sibling to share with"
    assert impl.prefill_tokens(1, 30, BLOCK) == 30
    assert impl.hit_rate(4, 3, BLOCK) == 0.0, "a 3-token prompt has no full block to hit"
    assert impl.block_ref_counts(4, 3, BLOCK) == [1] * 4


@pytest.mark.parametrize(("args", "field"), [((0, 30, 4), "n"), ((4, 30, 0), "block_size"),
                                              ((4, -1, 4), "prompt_len"), ((4.0, 30, 4), "n")])
def test_bad_sizes_are_refused(impl, args: tuple, field: str) -> None:
    with expect_raises(ValueError, f"{field} must be an int >= 1", match=field):
        impl.prefill_tokens(*args)


def test_read_sharing_splits_shared_and_private(impl) -> None:
    got = impl.read_sharing([[5, 6, 9], [5, 6, 10], [5, 6, 11]])
    assert got.shared_block_ids == [5, 6] and got.private_block_ids == [[9], [10], [11]], got
    assert got.num_distinct_blocks == 5, got
    alone = impl.read_sharing([[1, 2]])
    assert alone.shared_block_ids == [] and alone.num_distinct_blocks == 2, alone
    with expect_raises(ValueError, "there is nothing to read without a block table"):
        impl.read_sharing([])


# -------------------------------------------------------------------------- mini_vllm (cpu)


def _mini_vllm_tables(model: Any, enable_caching: bool) -> list[list[int]]:
    engine = LLMEngine(model=model, block_size=BLOCK, num_blocks=64,
                       enable_caching=enable_caching)
    parent = engine.add_request(PROMPT, SamplingParams(n=4, max_tokens=4, temperature=1.0,
                                                       seed=3, ignore_eos=True))
    engine.step()  # all four children admitted: the prompt is prefilled
    kv = engine.kv_cache_manager
    return [kv.get_blocks(c) for c in engine.parent_requests[parent].child_request_ids]


@pytest.mark.parametrize("caching", [True, False], ids=["caching_on", "caching_off"])
def test_prediction_matches_mini_vllm(impl, tiny_llama: Any, caching: bool) -> None:
    tables = _mini_vllm_tables(tiny_llama, caching)
    got = impl.read_sharing(tables)
    want = impl.shared_blocks(4, len(PROMPT), BLOCK, enable_caching=caching)
    assert len(got.shared_block_ids) == want, (
        f"mini_vllm's children share {len(got.shared_block_ids)} blocks; you predict {want}")
    counts = sorted(b.ref_cnt for b in {b.block_id: b for t in tables for b in t}.values())
    predicted = sorted(impl.block_ref_counts(4, len(PROMPT), BLOCK, enable_caching=caching))
    assert counts == predicted, f"mini_vllm's ref counts {counts}; you predict {predicted}"


# --------------------------------------------------------------------------------------- live

CPU_BLOCK = 128  # vLLM's CPU block
N = 4
# The live tier's shared tiny-Llama engines: katas 02-05 and 03-03 ask for these same two.
CACHING_ON = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)
CACHING_OFF = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024,
                           enable_prefix_caching=False)
QUERIES, HITS = "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"
# 300 tokens: 2 full blocks + a 44-token tail; 256: exactly 2 blocks (the last is recomputed).
LIVE_PROMPTS = [300, 256]


@dataclass
class VllmRun:
    tables: list[list[int]]  # each child's block ids after the first step
    ref_counts: dict[int, int]  # block id -> ref count, read at the same moment
    cached: list[int]  # each child's num_cached_tokens, in child order
    queries: int  # prefix-cache meter: tokens looked up during the run
    hits: int  # and tokens served from the cache


def _counters(llm: Any) -> dict[str, int]:
    return {m.name: int(m.value) for m in llm.get_metrics() if m.name in (QUERIES, HITS)}


def _run_on_vllm(live_engines: LiveEngines, config: EngineConfig, prompt_len: int) -> VllmRun:
    """One request with SamplingParams(n=4) on vLLM; its children read after one step."""
    from vllm import SamplingParams as VllmSamplingParams

    handle = live_engines.get(config)
    assert handle.vllm_config.cache_config.block_size == CPU_BLOCK, "vLLM's CPU block is 128"
    handle.llm.reset_prefix_cache()  # other katas share this engine: start from a cold cache
    engine, scheduler = handle.llm.llm_engine, handle.scheduler
    kv = scheduler.kv_cache_manager
    prompt = [60 + i % 30 for i in range(prompt_len)]
    before, meter = set(scheduler.requests), _counters(handle.llm)
    engine.add_request("n4", {"prompt_token_ids": prompt},
                       VllmSamplingParams(n=N, max_tokens=2, temperature=1.0, seed=3,
                                          ignore_eos=True))
    # The front end's ParentRequest fans out: children 0_n4-<hex> .. 3_n4-<hex>.
    children = sorted(rid for rid in scheduler.requests if rid not in before)
    assert len(children) == N, f"n=4 should reach the scheduler as 4 children, got {children}"
    first = engine.step()  # one step admits all four and prefills the prompt
    tables = [list(kv.get_block_ids(rid)[0]) for rid in children]
    refs = {b: kv.block_pool.blocks[b].ref_cnt for t in tables for b in t}
    by_index = {o.outputs[0].index: o.num_cached_tokens or 0 for o in first}
    while engine.has_unfinished_requests():  # leave the shared engine idle
        engine.step()
    after = _counters(handle.llm)
    return VllmRun(tables=tables, ref_counts=refs, cached=[by_index[i] for i in range(N)],
                   queries=after.get(QUERIES, 0) - meter.get(QUERIES, 0),
                   hits=after.get(HITS, 0) - meter.get(HITS, 0))


@pytest.mark.live
@pytest.mark.parametrize("prompt_len", LIVE_PROMPTS)
def test_vllm_children_share_the_blocks_you_predict(impl, live_engines: LiveEngines,
                                                    prompt_len: int) -> None:
    shared = impl.shared_blocks(N, prompt_len, CPU_BLOCK)
    counts = impl.block_ref_counts(N, prompt_len, CPU_BLOCK)
    run = _run_on_vllm(live_engines, CACHING_ON, prompt_len)
    got = impl.read_sharing(run.tables)
    assert got.shared_block_ids == run.tables[0][:shared] and len(got.shared_block_ids) == shared, (
        f"vLLM's block tables {run.tables}: you read {got.shared_block_ids} as shared and "
        f"predict {shared} shared blocks")
    tail = -(-prompt_len // CPU_BLOCK) - shared
    assert got.private_block_ids == [t[shared:] for t in run.tables], (
        f"each child's private tail is its table after the shared blocks; you read "
        f"{got.private_block_ids} from {run.tables}")
    assert all(len(p) == tail for p in got.private_block_ids), (
        f"each child holds {tail} private prompt block(s): {got.private_block_ids}")
    held = [run.ref_counts[b] for b in got.shared_block_ids]
    held += [run.ref_counts[b] for p in got.private_block_ids for b in p]
    assert held == counts, (
        f"vLLM's block pool holds the prompt with ref counts {held} (shared first, then each "
        f"child's tail); you predict {counts}")
    assert got.num_distinct_blocks == len(run.ref_counts) == len(counts), (
        f"the children hold {len(run.ref_counts)} distinct blocks; you read "
        f"{got.num_distinct_blocks} and predict {len(counts)}")


@pytest.mark.live
@pytest.mark.parametrize("prompt_len", LIVE_PROMPTS)
def test_vllm_hits_and_prefill_match_your_prediction(impl, live_engines: LiveEngines,
                                                     prompt_len: int) -> None:
    rate = impl.hit_rate(N, prompt_len, CPU_BLOCK)
    prefill = impl.prefill_tokens(N, prompt_len, CPU_BLOCK)
    hit = impl.shared_blocks(N, prompt_len, CPU_BLOCK) * CPU_BLOCK
    run = _run_on_vllm(live_engines, CACHING_ON, prompt_len)
    assert run.cached == [0] + [hit] * (N - 1), (
        f"vLLM's children report num_cached_tokens {run.cached}: the first misses, the other "
        f"three hit; your shared blocks say {hit} tokens each")
    assert run.queries == N * prompt_len, f"vLLM looked up {run.queries} prompt tokens"
    lookups = N * (prompt_len // CPU_BLOCK) * CPU_BLOCK  # tokens in full-block lookups
    assert_close(rate, run.hits / lookups, cause="arithmetic",
                 what=f"hit rate: vLLM's meter served {run.hits} of the {lookups} tokens its "
                 f"children looked up in full blocks")
    assert prefill == run.queries - run.hits, (
        f"vLLM computed {run.queries - run.hits} prompt tokens for 4 children of {prompt_len}; "
        f"you predict {prefill}")


@pytest.mark.live
def test_vllm_with_caching_off_shares_nothing(impl, live_engines: LiveEngines) -> None:
    prompt_len = LIVE_PROMPTS[0]
    counts = impl.block_ref_counts(N, prompt_len, CPU_BLOCK, enable_caching=False)
    rate = impl.hit_rate(N, prompt_len, CPU_BLOCK, enable_caching=False)
    prefill = impl.prefill_tokens(N, prompt_len, CPU_BLOCK, enable_caching=False)
    run = _run_on_vllm(live_engines, CACHING_OFF, prompt_len)
    got = impl.read_sharing(run.tables)
    assert got.shared_block_ids == [] and got.num_distinct_blocks == N * 3, (
        f"caching off: vLLM gave the children disjoint tables {run.tables}; you read {got}")
    held = sorted(run.ref_counts.values())
    assert held == sorted(counts), f"vLLM's ref counts {held}; you predict {sorted(counts)}"
    assert (run.queries, run.hits) == (0, 0) and rate == 0.0, (
        f"caching off: vLLM looked up {run.queries} tokens and hit {run.hits}; you predict a "
        f"hit rate of {rate}")
    assert prefill == N * prompt_len - sum(run.cached) == 1200, (
        f"caching off: vLLM prefilled {N * prompt_len - sum(run.cached)} tokens; you predict "
        f"{prefill}")
