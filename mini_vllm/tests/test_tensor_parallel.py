"""Tensor parallelism (phase 10): a Llama split over in-process ranks serves the very same tokens.

Every rank computes a partial result from its shard; the row-parallel layers' partials are summed
by one all-reduce each. In float64 the only difference from the unsharded model is the order of
those sums, so logits agree to 1e-12 and greedy tokens exactly, through the whole engine: prefix
caching, chunked prefill and preemption included. Communication is counted, never timed.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine
from mini_vllm.attention import AttentionMetadata
from mini_vllm.distributed import (
    TensorParallelGroup,
    TensorParallelLlama,
    column_shards,
    qkv_shards,
    row_shards,
    shard_model,
)
from mini_vllm.distributed.tensor_parallel import kv_heads_of_rank
from mini_vllm.models.llama import LlamaForCausalLM
from mini_vllm.tests.builders import greedy, record_prefix_hits
from pytest_vllm_katas.invariants import assert_same_outputs
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

PREFIX = "You are a helpful assistant. "  # 29 bytes: 7 full blocks of 4 shared by the prompts
PROMPTS = [PREFIX + q for q in ("Why?", "What is paging?", "Hi")] + ["S" * 40, "hello world"]
REORDERED = 1e-12  # float64: the all-reduce adds the ranks' partials in another order
TP_SIZES = [1, 2, 4]  # the tiny Llama: 4 query heads, 2 KV heads (replicated at tp = 4)


@pytest.fixture(scope="module")
def sharded(tiny_llama) -> dict[int, TensorParallelLlama]:  # type: ignore[no-untyped-def]
    return {tp: shard_model(tiny_llama, tp) for tp in TP_SIZES}


def _caches(model, num_blocks: int, block_size: int):  # type: ignore[no-untyped-def]
    shape = (num_blocks, block_size, model.num_kv_heads, model.head_dim)
    return [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
            for _ in range(model.num_layers)]


def _prefill_then_decode(model, tokens: list[int], next_token: int):  # type: ignore[no-untyped-def]
    """One prefill of ``tokens`` and one decode step of ``next_token`` on fresh paged caches
    (blocks 1, 2, ... in order); returns (logits of every prefill row, decode logits, caches)."""
    block_size = 4
    n = len(tokens)
    num_blocks = -(-(n + 1) // block_size)
    caches = _caches(model, num_blocks + 1, block_size)
    table = np.arange(1, num_blocks + 1, dtype=np.int64)[None]
    positions = np.arange(n, dtype=np.int64)
    meta = AttentionMetadata(query_start_loc=np.array([0, n]), seq_lens=np.array([n]),
                             block_table=table, slot_mapping=positions + block_size,
                             block_size=block_size)
    prefill = model.compute_logits(model.forward(np.array(tokens), positions, caches, meta))
    meta = AttentionMetadata(query_start_loc=np.array([0, 1]), seq_lens=np.array([n + 1]),
                             block_table=table, slot_mapping=np.array([n + block_size]),
                             block_size=block_size)
    decode = model.compute_logits(model.forward(np.array([next_token]), np.array([n]), caches,
                                                meta))
    return prefill, decode, caches


def _recording_engine(model, logits_rows: list[np.ndarray], **kwargs) -> LLMEngine:  # type: ignore[no-untyped-def]
    def sample(logits, params):  # type: ignore[no-untyped-def]
        logits_rows.append(np.array(logits, copy=True))
        return int(np.argmax(logits))

    kwargs.setdefault("block_size", 4)
    return LLMEngine(model=model, sampler=sample, **kwargs)


# -- the group ---------------------------------------------------------------------------------

def test_all_reduce_sums_in_rank_order_and_counts() -> None:
    group = TensorParallelGroup(3)
    parts = [np.full((2, 2), v) for v in (1.0, 2.0, 4.0)]
    out = group.all_reduce(parts)
    np.testing.assert_array_equal(out, np.full((2, 2), 7.0))
    assert parts[0][0, 0] == 1.0, "all_reduce must not write into a rank's partial"
    gathered = group.all_gather([np.zeros((2, 1)), np.ones((2, 2)), np.full((2, 1), 2.0)])
    np.testing.assert_array_equal(gathered, [[0, 1, 1, 2], [0, 1, 1, 2]])
    assert (group.num_all_reduces, group.num_all_gathers) == (1, 1)
    with pytest.raises(ValueError, match="one tensor per rank"):
        group.all_reduce(parts[:2])
    with pytest.raises(ValueError, match="same shape"):
        group.all_reduce([np.zeros(2), np.zeros(3), np.zeros(2)])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="world_size"):
            TensorParallelGroup(bad)  # type: ignore[arg-type]


# -- the shards --------------------------------------------------------------------------------

def test_kv_heads_split_then_replicate() -> None:
    assert [list(kv_heads_of_rank(8, 2, r)) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [list(kv_heads_of_rank(8, 8, r)) for r in range(8)] == [[r] for r in range(8)]
    # 16 ranks, 8 KV heads: each head lives on two neighbouring ranks (upstream's rule).
    assert [kv_heads_of_rank(8, 16, r).start for r in range(16)] == [r // 2 for r in range(16)]
    assert [kv_heads_of_rank(2, 4, r).start for r in range(4)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="num_key_value_heads"):
        kv_heads_of_rank(3, 2, 0)
    with pytest.raises(ValueError, match="replicated evenly"):
        kv_heads_of_rank(4, 6, 0)


def test_each_rank_holds_its_share(tiny_llama, sharded) -> None:  # type: ignore[no-untyped-def]
    attn = tiny_llama.model.layers[0].self_attn
    hd, q, kv = attn.head_dim, attn.q_size, attn.kv_size
    dense_qkv = attn.qkv_proj  # [hidden, q | k | v]
    dense_o = attn.o_proj
    dense_bytes = sum(a.nbytes for n, a in tiny_llama.named_parameters()
                      if "norm" not in n and "embed" not in n)  # with lm_head (untied)
    for tp, model in sharded.items():
        heads = 4 // tp
        kv_heads = max(1, 2 // tp)
        assert (model.num_heads_per_rank, model.num_kv_heads_per_rank) == (heads, kv_heads)
        assert model.num_kv_heads == tp * kv_heads, "the runner's cache holds every rank's heads"
        sharded_bytes = []
        for r, rank in enumerate(model.ranks):
            a, m = rank.attn[0], rank.mlp[0]
            assert a.qkv_proj.shape == (64, (heads + 2 * kv_heads) * hd)
            assert a.o_proj.shape == (heads * hd, 64)
            assert m.gate_up_proj.shape == (64, 2 * 128 // tp)
            assert m.down_proj.shape == (128 // tp, 64)
            assert rank.lm_head.shape == (64, -(-257 // tp))
            np.testing.assert_array_equal(a.qkv_proj[:, :heads * hd],
                                          dense_qkv[:, r * heads * hd:(r + 1) * heads * hd])
            k_head = kv_heads_of_rank(2, tp, r).start
            np.testing.assert_array_equal(
                a.qkv_proj[:, heads * hd:heads * hd + kv_heads * hd],
                dense_qkv[:, q + k_head * hd:q + (k_head + kv_heads) * hd])
            np.testing.assert_array_equal(
                a.qkv_proj[:, (heads + kv_heads) * hd:],
                dense_qkv[:, q + kv + k_head * hd:q + kv + (k_head + kv_heads) * hd])
            np.testing.assert_array_equal(a.o_proj, dense_o[r * heads * hd:(r + 1) * heads * hd])
            assert not np.shares_memory(a.qkv_proj, dense_qkv), "each rank owns its arrays"
            sharded_bytes.append(sum(p.nbytes for n, p in rank.parameters().items()))
        if tp <= 2:  # no replication: the shards add up to the model (plus the vocab padding)
            pad = (-(-257 // tp) * tp - 257) * 64 * 8
            assert sum(sharded_bytes) == dense_bytes + pad
        else:  # the replicated KV heads cost each replica its copy
            assert sum(sharded_bytes) > dense_bytes
        assert len(set(sharded_bytes)) == 1, "every rank holds the same amount"
    # tp = 4: ranks 0 and 1 replicate KV head 0, ranks 2 and 3 KV head 1.
    k = [r.attn[1].qkv_proj[:, hd:2 * hd] for r in sharded[4].ranks]
    np.testing.assert_array_equal(k[0], k[1])
    np.testing.assert_array_equal(k[2], k[3])
    assert not np.array_equal(k[0], k[2])


# -- the forward pass --------------------------------------------------------------------------

def test_tp1_is_the_unsharded_model_bit_for_bit(tiny_llama, sharded) -> None:  # type: ignore[no-untyped-def]
    tokens = list(b"hello world, how are you")
    dense = _prefill_then_decode(tiny_llama, tokens, 33)
    one = _prefill_then_decode(sharded[1], tokens, 33)
    np.testing.assert_array_equal(one[0], dense[0])
    np.testing.assert_array_equal(one[1], dense[1])


@pytest.mark.parametrize("tp", [2, 4])
def test_sharded_logits_match_to_1e12(tiny_llama, sharded, tp: int) -> None:  # type: ignore[no-untyped-def]
    tokens = list(b"hello world, how are you")
    dense_prefill, dense_decode, dense_caches = _prefill_then_decode(tiny_llama, tokens, 33)
    prefill, decode, caches = _prefill_then_decode(sharded[tp], tokens, 33)
    np.testing.assert_allclose(prefill, dense_prefill, rtol=0, atol=REORDERED)
    np.testing.assert_allclose(decode, dense_decode, rtol=0, atol=REORDERED)
    # Each rank cached exactly its own KV heads (a replicated head by each of its replicas).
    model = sharded[tp]
    per = model.num_kv_heads_per_rank
    for (key, value), (dense_key, dense_value) in zip(caches, dense_caches, strict=True):
        for r in range(tp):
            head = kv_heads_of_rank(2, tp, r)
            mine = slice(r * per, (r + 1) * per)
            np.testing.assert_allclose(key[:, :, mine], dense_key[:, :, head.start:head.stop],
                                       rtol=0, atol=REORDERED)
            np.testing.assert_allclose(value[:, :, mine],
                                       dense_value[:, :, head.start:head.stop],
                                       rtol=0, atol=REORDERED)


def test_two_all_reduces_per_layer_per_forward(sharded) -> None:  # type: ignore[no-untyped-def]
    for tp, model in sharded.items():
        model.group.reset_counters()
        _prefill_then_decode(model, list(b"count the collectives"), 7)  # two forwards
        assert model.group.num_all_reduces == 2 * 2 * model.num_layers, (
            f"tp={tp}: one all-reduce after o_proj and one after down_proj, per layer and "
            f"forward; got {model.group.num_all_reduces} for 2 forwards of 2 layers")
        assert model.group.num_all_gathers == 2, "one all-gather per compute_logits (vocab)"


# -- the engine --------------------------------------------------------------------------------

@pytest.mark.parametrize("tp", TP_SIZES)
def test_engine_serves_the_same_tokens_and_logits(tiny_llama, sharded, tp: int) -> None:  # type: ignore[no-untyped-def]
    # Prefix caching on, prefill chunked (threshold 3, budget 7) and a pool cramped enough to
    # preempt: the sharded model runs in the engine unchanged and must change nothing.
    knobs = dict(enable_caching=True, long_prefill_token_threshold=3,
                 max_num_batched_tokens=7, num_blocks=24)
    dense_rows: list[np.ndarray] = []
    dense = _recording_engine(tiny_llama, dense_rows, **knobs).generate(PROMPTS, greedy(12))
    model = sharded[tp]
    model.group.reset_counters()
    rows: list[np.ndarray] = []
    engine = _recording_engine(model, rows, **knobs)
    hits = record_prefix_hits(engine)
    outs = engine.generate(PROMPTS, greedy(12))
    assert sum(o.num_preemptions for o in outs) > 0, "the cramped pool must really preempt"
    assert sum(hits) > 0, "the shared prefix must hit the prefix cache"
    assert_same_outputs([o.output_token_ids for o in dense], [o.output_token_ids for o in outs],
                        labels=("unsharded", f"tp={tp}"))
    assert len(rows) == len(dense_rows)
    np.testing.assert_allclose(np.array(rows), np.array(dense_rows), rtol=0, atol=REORDERED)
    steps = engine.model_runner.num_steps
    assert model.group.num_all_reduces == 2 * model.num_layers * steps
    assert model.group.num_all_gathers == steps


# -- errors ------------------------------------------------------------------------------------

def _llama(heads: int, kv_heads: int, intermediate: int = 64) -> LlamaForCausalLM:
    config = {"hidden_size": 8 * heads, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "intermediate_size": intermediate,
              "num_hidden_layers": 1, "vocab_size": 32, "max_position_embeddings": 64}
    return LlamaForCausalLM(config, np.float64)


@pytest.mark.parametrize(("heads", "kv_heads", "inter", "tp", "match"), [
    (4, 2, 64, 3, "num_attention_heads"),
    (4, 2, 64, 8, "num_attention_heads"),
    (6, 3, 64, 2, "num_key_value_heads"),
    (12, 4, 72, 6, "replicated evenly"),
    (8, 8, 100, 8, "intermediate_size"),
])
def test_what_does_not_split_is_a_clear_error(heads: int, kv_heads: int, inter: int, tp: int,
                                              match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shard_model(_llama(heads, kv_heads, inter), tp)


def test_bad_sizes_and_bad_shards_are_refused(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="tensor-parallel size"):
            shard_model(tiny_llama, bad)  # type: ignore[arg-type]

    def split_inputs(w, tp):  # type: ignore[no-untyped-def]
        return np.split(w, tp, axis=1)  # a column-parallel split along the wrong axis

    with pytest.raises(ValueError, match="column_shards for gate_proj"):
        shard_model(tiny_llama, 2, column_shards=split_inputs)
    with pytest.raises(ValueError, match="row_shards for o_proj"):
        shard_model(tiny_llama, 2, row_shards=lambda w, tp: np.split(w, tp, axis=0))
    with pytest.raises(ValueError, match="qkv_shards"):
        shard_model(tiny_llama, 4, qkv_shards=lambda wq, wk, wv, h, k, tp: [
            (a, b, c) for a, b, c in zip(np.split(wq, tp), np.split(wk, tp), np.split(wv, tp),
                                         strict=True)])
    assert shard_model(tiny_llama, 2, column_shards=column_shards, row_shards=row_shards,
                       qkv_shards=qkv_shards).tp_size == 2


# -- a real checkpoint ---------------------------------------------------------------------------

@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_smollm2_at_tp3_serves_the_same_tokens() -> None:
    # SmolLM2-135M: 9 query heads and 3 KV heads, so tp = 3 (not 2) is the size that splits it.
    from mini_vllm.models.loader import load_model
    from mini_vllm.tokenizer import get_tokenizer

    model = load_model(smollm2_path(), dtype=np.float32)
    tokenizer = get_tokenizer(smollm2_path())
    prompt = tokenizer.encode("The capital of France is")

    def run(m):  # type: ignore[no-untyped-def]
        engine = LLMEngine(model=m, tokenizer=tokenizer, block_size=16, num_blocks=8,
                           max_model_len=64)
        return [o.output_token_ids for o in engine.generate([prompt], greedy(2))]

    expected = run(model)
    tp3 = shard_model(model, 3)
    assert (tp3.num_heads_per_rank, tp3.num_kv_heads_per_rank) == (3, 1)
    assert_same_outputs(expected, run(tp3), labels=("unsharded", "tp=3"))
    assert tp3.group.num_all_reduces == 2 * 30 * 2, "30 layers x 2, for each of 2 forwards"
