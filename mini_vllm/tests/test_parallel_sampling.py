"""Parallel sampling (``n > 1``): one prompt, n children, the prompt's full blocks shared.

On the seeded tiny Llama (float64) with blocks of 4: a 30-token prompt is 7 full blocks + a
2-token tail. With prefix caching, child 0 prefills all 30 tokens; children 1..3 hit the 7 full
blocks (ref count 4) and compute only the 2 tail tokens, each into a private tail block. Hits:
3 x 7 of 4 x 7 prompt-block lookups = (n - 1) / n. With caching off: 4 full prefills, 0 hits.
"""

from __future__ import annotations

from typing import Any

import pytest

from mini_vllm import LLMEngine, RequestOutput, SamplingParams
from mini_vllm.parallel_sampling import ParallelRequestOutput, ParentRequest, child_request_id
from mini_vllm.tests.builders import greedy, record_schedules

BLOCK = 4
PROMPT = list(range(60, 90))  # 30 tokens: 7 full blocks of 4 + a 2-token tail
FULL_BLOCKS = len(PROMPT) // BLOCK
N = 4


def _params(**kwargs: Any) -> SamplingParams:
    kwargs = {"max_tokens": 8, "temperature": 1.0, "ignore_eos": True, "n": N, **kwargs}
    return SamplingParams(**kwargs)


def _record_hits(engine: LLMEngine) -> list[int]:
    """Observe-don't-modify: the number of prefix-hit blocks each admission lookup found."""
    hits: list[int] = []
    original = engine.kv_cache_manager.get_computed_blocks

    def probe(request):  # type: ignore[no-untyped-def]
        blocks, num_tokens = original(request)
        hits.append(len(blocks))
        return blocks, num_tokens

    engine.kv_cache_manager.get_computed_blocks = probe  # type: ignore[method-assign]
    return hits


def _first_step(model: Any, enable_caching: bool) -> tuple[LLMEngine, list[str], Any, list[int]]:
    engine = LLMEngine(model=model, block_size=BLOCK, num_blocks=64, enable_caching=enable_caching)
    schedules = record_schedules(engine)
    hits = _record_hits(engine)
    parent_id = engine.add_request(PROMPT, _params(seed=11))
    children = engine.parent_requests[parent_id].child_request_ids
    engine.step()
    return engine, children, schedules[0], hits


# -- the fan-out rules (upstream's ParentRequest) ----------------------------------------------


def test_child_ids_and_seeds_follow_upstream() -> None:
    parent = ParentRequest("req-x", SamplingParams(n=3, seed=7, temperature=0.5))
    infos = [parent.get_child_info(i) for i in range(3)]
    assert [cid for cid, _ in infos] == ["0_req-x", "1_req-x", "2_req-x"]
    assert [p.seed for _, p in infos] == [7, 8, 9], "a seeded parent seeds child i with seed + i"
    assert all(p.n == 1 and p.temperature == 0.5 for _, p in infos)
    assert parent.sampling_params.n == 3 and parent.sampling_params.seed == 7, "parent untouched"
    assert child_request_id("p", 2) == "2_p"

    unseeded = ParentRequest("q", SamplingParams(n=3))
    shared = [unseeded.child_sampling_params(i) for i in range(3)]
    assert shared[0] is shared[1] is shared[2] and shared[0].seed is None and shared[0].n == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_n_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        SamplingParams(n=bad)


def test_parent_gathers_outputs_in_index_order() -> None:
    parent = ParentRequest("p", SamplingParams(n=2))
    parent.add_output("1_p", "second")
    assert not parent.finished
    with pytest.raises(ValueError, match="have not finished"):
        parent.get_output([1])
    parent.add_output("0_p", "first")
    out = parent.get_output([1, 2])
    assert out.outputs == ["first", "second"] and out.n == 2 and out.request_id == "p"
    with pytest.raises(ValueError, match="already reported"):
        parent.add_output("0_p", "again")
    with pytest.raises(ValueError, match="not a child"):
        parent.add_output("0_other", "x")


# -- KV sharing on the tiny Llama ---------------------------------------------------------------


def test_n4_shares_the_prompts_full_blocks_with_ref_count_4(tiny_llama: Any) -> None:
    engine, children, first, hits = _first_step(tiny_llama, enable_caching=True)
    assert first.scheduled_new_req_ids == children, "all four children admitted in step one"
    kv = engine.kv_cache_manager
    tables = [kv.get_blocks(c) for c in children]
    shared = tables[0][:FULL_BLOCKS]
    for table in tables[1:]:
        assert [b.block_id for b in table[:FULL_BLOCKS]] == [b.block_id for b in shared]
    assert [b.ref_cnt for b in shared] == [N] * FULL_BLOCKS
    tails = [table[FULL_BLOCKS:] for table in tables]
    assert all(len(t) == 1 for t in tails), "one private tail block each (2 tokens + samples)"
    assert len({t[0].block_id for t in tails}) == N and all(t[0].ref_cnt == 1 for t in tails)
    # Prefill: the prompt once, then only the tail tokens per extra child.
    tail = len(PROMPT) - FULL_BLOCKS * BLOCK
    assert [first.num_scheduled_tokens[c] for c in children] == [len(PROMPT)] + [tail] * (N - 1)
    assert hits == [0] + [FULL_BLOCKS] * (N - 1)
    assert sum(hits) / (N * FULL_BLOCKS) == (N - 1) / N == 0.75


def test_caching_off_shares_nothing(tiny_llama: Any) -> None:
    engine, children, first, hits = _first_step(tiny_llama, enable_caching=False)
    kv = engine.kv_cache_manager
    tables = [kv.get_block_ids(c) for c in children]
    ids = [b for t in tables for b in t]
    assert len(ids) == len(set(ids)) == N * (FULL_BLOCKS + 1), "every child owns its blocks"
    assert all(b.ref_cnt == 1 for c in children for b in kv.get_blocks(c))
    assert [first.num_scheduled_tokens[c] for c in children] == [len(PROMPT)] * N
    assert sum(hits) == 0


def test_a_prompt_of_whole_blocks_recomputes_its_last_token(tiny_llama: Any) -> None:
    # 28 tokens = 7 full blocks: the num_tokens - 1 cap leaves the 7th block to be recomputed.
    engine = LLMEngine(model=tiny_llama, block_size=BLOCK, num_blocks=64)
    schedules = record_schedules(engine)
    parent_id = engine.add_request(PROMPT[:28], _params(seed=1))
    engine.step()
    children = engine.parent_requests[parent_id].child_request_ids
    assert [schedules[0].num_scheduled_tokens[c] for c in children] == [28] + [BLOCK] * (N - 1)


# -- the samples -------------------------------------------------------------------------------


def _samples(engine: LLMEngine, params: SamplingParams) -> list[list[int]]:
    (result,) = engine.generate([PROMPT], params)
    assert isinstance(result, ParallelRequestOutput) and result.n == params.n
    assert result.prompt_token_ids == PROMPT
    assert [o.request_id for o in result.outputs] == [
        child_request_id(result.request_id, i) for i in range(params.n)]
    return [o.output_token_ids for o in result.outputs]


def test_samples_differ_with_temperature(tiny_llama: Any) -> None:
    samples = _samples(LLMEngine(model=tiny_llama, block_size=BLOCK), _params())
    assert len({tuple(s) for s in samples}) == N, f"four distinct samples expected: {samples}"
    assert all(len(s) == 8 for s in samples)


def test_seeded_samples_differ_and_the_set_is_reproducible(tiny_llama: Any) -> None:
    params = _params(seed=123)
    first = _samples(LLMEngine(model=tiny_llama, block_size=BLOCK), params)
    again = _samples(LLMEngine(model=tiny_llama, block_size=BLOCK, enable_caching=False), params)
    assert len({tuple(s) for s in first}) == N, f"seed + i gives each child its own draws: {first}"
    assert first == again, "the same seed reproduces the whole set (caching changes nothing)"
    single = LLMEngine(model=tiny_llama, block_size=BLOCK).generate(
        [PROMPT], _params(seed=123 + 2, n=1))[0]
    assert single.output_token_ids == first[2], "child 2 samples exactly as n=1 with seed + 2"


def test_greedy_children_agree_with_n_equal_1(tiny_llama: Any) -> None:
    engine = LLMEngine(model=tiny_llama, block_size=BLOCK)
    samples = _samples(engine, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, n=3))
    plain = engine.generate([PROMPT], greedy(6))[0]
    assert samples == [plain.output_token_ids] * 3


def test_n_equal_1_keeps_the_flat_output_next_to_a_parallel_prompt() -> None:
    engine = LLMEngine()
    results = engine.generate(["hello", "world"],
                              [SamplingParams(max_tokens=8, temperature=0.0), _params(n=2, seed=0)])
    assert type(results[0]) is RequestOutput
    assert results[0].output_token_ids == [227, 18, 74, 70, 61, 117, 256], "pinned n=1 tokens"
    assert isinstance(results[1], ParallelRequestOutput) and results[1].n == 2
    assert engine.parent_requests == {} and not engine.has_unfinished_requests()


def test_abort_a_parent_aborts_its_children() -> None:
    engine = LLMEngine()
    parent_id = engine.add_request("hello", _params(n=3))
    engine.step()
    aborted = engine.abort_request(parent_id)
    assert sorted(r.request_id for r in aborted) == [f"{i}_{parent_id}" for i in range(3)]
    assert not engine.has_unfinished_requests() and engine.kv_cache_manager.get_usage() == 0.0


def test_a_refused_parent_queues_no_child() -> None:
    engine = LLMEngine()
    engine.add_request("x", greedy(4), request_id="1_p")
    with pytest.raises(ValueError, match="unique"):
        engine.add_request("hello", _params(n=3), request_id="p")
    assert engine.scheduler.get_num_unfinished_requests() == 1 and "p" not in engine.parent_requests
