"""The engine on a real network: paging, prefix caching, chunking and preemption change when a
token is computed, never which — now proven with a model that reads its K/V from the paged cache.

All in float64 on the seeded tiny Llama (the ``tiny_llama`` fixture), so "the same" means the
very same token ids.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.attention import AttentionMetadata
from mini_vllm.tests.builders import greedy, output_ids
from pytest_vllm_katas.invariants import assert_same_outputs

PREFIX = "You are a helpful assistant. "  # 29 bytes: 7 full blocks of 4 shared by every prompt
PROMPTS = [PREFIX + q for q in ("Why?", "What is paging?", "Hi", "Name three colours")] + [
    "S" * 40, "hello world"]
SEEDED = SamplingParams(max_tokens=16, temperature=0.9, top_k=40, top_p=0.95, seed=5,
                        ignore_eos=True)
PARAMS = [greedy(16), SEEDED]


def _engine(model, **kwargs) -> LLMEngine:  # type: ignore[no-untyped-def]
    kwargs.setdefault("block_size", 4)
    return LLMEngine(model=model, **kwargs)


def _dense_greedy(model, prompt: list[int], max_tokens: int) -> list[int]:  # type: ignore[no-untyped-def]
    """No paging, no cache reuse: recompute the whole sequence from scratch for every token."""
    tokens = list(prompt)
    out: list[int] = []
    for _ in range(max_tokens):
        n = len(tokens)
        block_size = 8
        num_blocks = -(-n // block_size)
        shape = (num_blocks + 1, block_size, model.num_kv_heads, model.head_dim)
        caches = [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
                  for _ in range(model.num_layers)]
        table = np.arange(1, num_blocks + 1, dtype=np.int64)[None]
        positions = np.arange(n, dtype=np.int64)
        meta = AttentionMetadata(
            query_start_loc=np.array([0, n]), seq_lens=np.array([n]), block_table=table,
            slot_mapping=positions + block_size, block_size=block_size,
        )
        hidden = model.forward(np.array(tokens, dtype=np.int64), positions, caches, meta)
        token = int(np.argmax(model.compute_logits(hidden[-1:])[0]))
        out.append(token)
        tokens.append(token)
    return out


def test_paged_engine_equals_recomputing_everything(tiny_llama) -> None:
    engine = _engine(tiny_llama, long_prefill_token_threshold=5, max_num_batched_tokens=12)
    got = output_ids(engine, PROMPTS[:3], greedy(10))
    prompts = [list(p.encode()) for p in PROMPTS[:3]]
    expected = [_dense_greedy(tiny_llama, p, 10) for p in prompts]
    assert_same_outputs(expected, got, labels=("recomputed", "paged engine"))


@pytest.mark.parametrize("params", PARAMS, ids=["greedy", "seeded"])
def test_chunked_prefill_matches_unchunked(tiny_llama, params: SamplingParams) -> None:
    plain = output_ids(_engine(tiny_llama), PROMPTS, params)
    chunked = output_ids(_engine(tiny_llama, long_prefill_token_threshold=3,
                                 max_num_batched_tokens=7), PROMPTS, params)
    assert_same_outputs(plain, chunked, labels=("unchunked", "chunked"))


@pytest.mark.parametrize("params", PARAMS, ids=["greedy", "seeded"])
def test_prefix_caching_matches_no_caching(tiny_llama, params: SamplingParams) -> None:
    cached_engine = _engine(tiny_llama, enable_caching=True, max_num_seqs=2)
    hits: list[int] = []
    original = cached_engine.scheduler.schedule

    def probe():  # type: ignore[no-untyped-def]
        out = original()
        hits.extend(r.num_computed_tokens for r in out.scheduled_requests
                    if r.request_id in out.scheduled_new_req_ids)
        return out

    cached_engine.scheduler.schedule = probe  # type: ignore[method-assign]
    cached = output_ids(cached_engine, PROMPTS, params)
    uncached = output_ids(_engine(tiny_llama, enable_caching=False, max_num_seqs=2), PROMPTS,
                          params)
    assert sum(hits) >= 3 * 28, f"the shared prefix should have been hit, hits {hits}"
    assert_same_outputs(uncached, cached, labels=("caching off", "caching on"))


@pytest.mark.parametrize("params", PARAMS, ids=["greedy", "seeded"])
def test_cramped_pool_preempts_yet_matches_roomy(tiny_llama, params: SamplingParams) -> None:
    roomy = output_ids(_engine(tiny_llama, num_blocks=256), PROMPTS, params)
    cramped_engine = _engine(tiny_llama, num_blocks=24)
    outs = cramped_engine.generate(PROMPTS, params)
    assert sum(o.num_preemptions for o in outs) > 0, "the cramped pool must really preempt"
    assert_same_outputs(roomy, [o.output_token_ids for o in outs], labels=("roomy", "cramped"))


def test_the_model_really_reads_its_kv_cache(tiny_llama) -> None:
    # Corrupt the cached K of the first prompt block between two steps: a network that reads
    # its cache must now produce different tokens (the fingerprints stay intact on purpose).
    clean = output_ids(_engine(tiny_llama), ["hello world, how are you"], greedy(12))
    engine = _engine(tiny_llama)
    rid = engine.add_request("hello world, how are you", greedy(12))
    engine.step()
    block = engine.kv_cache_manager.get_block_ids(rid)[0]
    for key_cache, _ in engine.model_runner.kv_caches:
        key_cache[block] *= -3.0
    done = {}
    while engine.has_unfinished_requests():
        done.update({r.request_id: r.output_token_ids for r in engine.step()})
    assert clean[0][0] == done[rid][0], "the first token was sampled before the corruption"
    assert done[rid] != clean[0], "corrupting cached K changed nothing: the cache is not read"


def test_float32_engine_matches_float64_greedy(tiny_llama) -> None:
    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_llama import build_tiny_llama

    f32 = load_model(build_tiny_llama(), dtype=np.float32)
    assert f32.dtype == np.float32
    assert_same_outputs(output_ids(_engine(tiny_llama), PROMPTS, greedy(8)),
                        output_ids(_engine(f32), PROMPTS, greedy(8)),
                        labels=("float64", "float32"))
