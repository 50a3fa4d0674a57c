"""Spec for kata 10-01: tensor parallelism is algebra — and the algebra serves a real model.

Every sharded result is compared with the dense one in float64 (the sums happen in another
order, so the bound is "float64-reordered"); every collective goes through a counting
``TensorParallelGroup``, so "one all-reduce" is counted, never assumed. The last test shards
mini_vllm's tiny Llama with your functions and runs the whole engine on it.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.distributed import TensorParallelGroup, shard_model
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

REORDERED = "float64-reordered"
RANKS = [1, 2, 4, 8]  # the course's rank counts
# Llama-3-8B's layer: the 8 KV heads that cap plain TP at 8.
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_heads=32, num_kv_heads=8,
                 head_dim=128)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _shapes(arrays) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    return [tuple(np.shape(a)) for a in arrays]


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


# -- the two shardings -------------------------------------------------------------------------

def test_column_shards_split_the_output_rows(impl) -> None:
    W = _rng().standard_normal((16, 24))  # (out, in), not square
    for n in RANKS:
        shards = impl.column_shards(W, n)
        assert _shapes(shards) == [(16 // n, 24)] * n, (
            f"num_ranks={n}: a column-parallel rank holds out/num_ranks whole output rows of W "
            f"(out, in) = (16, 24); got shard shapes {_shapes(shards)}")
        for r, shard in enumerate(shards):
            chunk = 16 // n
            assert np.array_equal(shard, W[r * chunk:(r + 1) * chunk]), (
                f"num_ranks={n}: rank {r} must hold output rows {r * chunk}..{(r + 1) * chunk - 1}"
                f" of W, in rank order")


def test_row_shards_split_the_input_columns(impl) -> None:
    W = _rng(1).standard_normal((16, 24))
    for n in RANKS:
        shards = impl.row_shards(W, n)
        assert _shapes(shards) == [(16, 24 // n)] * n, (
            f"num_ranks={n}: a row-parallel rank holds in/num_ranks input columns of W "
            f"(out, in) = (16, 24), every output row; got shard shapes {_shapes(shards)}")
        for r, shard in enumerate(shards):
            chunk = 24 // n
            assert np.array_equal(shard, W[:, r * chunk:(r + 1) * chunk]), (
                f"num_ranks={n}: rank {r} must hold input columns {r * chunk}.."
                f"{(r + 1) * chunk - 1} of W, in rank order")


def test_column_parallel_reconstructs_x_at_W_T(impl) -> None:
    rng = _rng(2)
    x, W = rng.standard_normal((5, 24)), rng.standard_normal((16, 24))
    for n in RANKS:
        y = impl.column_parallel(x, W, n)
        assert_close(y, x @ W.T, cause=REORDERED,
                     what=f"column_parallel with num_ranks={n} vs the dense x @ W.T")


def test_row_parallel_reconstructs_x_at_W_T(impl) -> None:
    rng = _rng(3)
    x, W = rng.standard_normal((5, 24)), rng.standard_normal((16, 24))  # in=24 != out=16
    for n in RANKS:
        y = impl.row_parallel(x, W, n)
        assert_close(y, x @ W.T, cause=REORDERED,
                     what=f"row_parallel with num_ranks={n} vs the dense x @ W.T")


def test_column_parallel_gathers_once_and_never_reduces(impl) -> None:
    rng = _rng(4)
    x, W = rng.standard_normal((3, 8)), rng.standard_normal((12, 8))
    group = TensorParallelGroup(4)
    y = impl.column_parallel(x, W, 4, group=group)
    assert_close(y, x @ W.T, cause=REORDERED, what="column_parallel through the given group")
    assert (group.num_all_gathers, group.num_all_reduces) == (1, 0), (
        f"column-parallel outputs are slices of y: one all-gather (concatenation) joins them "
        f"and nothing is summed; the group counted {group.num_all_gathers} all-gather(s) and "
        f"{group.num_all_reduces} all-reduce(s)")


def test_row_parallel_reduces_once_and_never_gathers(impl) -> None:
    rng = _rng(5)
    x, W = rng.standard_normal((3, 8)), rng.standard_normal((12, 8))
    group = TensorParallelGroup(4)
    y = impl.row_parallel(x, W, 4, group=group)
    assert_close(y, x @ W.T, cause=REORDERED, what="row_parallel through the given group")
    assert (group.num_all_reduces, group.num_all_gathers) == (1, 0), (
        f"row-parallel outputs are full-shape partial sums: one all-reduce (a sum, not a "
        f"concatenation) completes them; the group counted {group.num_all_reduces} "
        f"all-reduce(s) and {group.num_all_gathers} all-gather(s)")


def test_column_parallel_adds_each_ranks_bias_slice(impl) -> None:
    rng = _rng(6)
    x, W, b = rng.standard_normal((3, 8)), rng.standard_normal((12, 8)), rng.standard_normal(12)
    for n in (1, 2, 4):
        assert_close(impl.column_parallel(x, W, n, b), x @ W.T + b, cause=REORDERED,
                     what=f"column_parallel with a bias, num_ranks={n} (each output column "
                          f"gets its own bias entry once)")


def test_row_parallel_adds_the_bias_once(impl) -> None:
    rng = _rng(7)
    x, W, b = rng.standard_normal((3, 8)), rng.standard_normal((12, 8)), rng.standard_normal(12)
    for n in (1, 2, 4):
        assert_close(impl.row_parallel(x, W, n, b), x @ W.T + b, cause=REORDERED,
                     what=f"row_parallel with a bias, num_ranks={n} (the partials are summed, "
                          f"so a bias added on every rank would count num_ranks times)")


# -- the Megatron pairing ------------------------------------------------------------------------

def test_mlp_tp_equals_the_dense_mlp(impl) -> None:
    rng = _rng(8)
    x = rng.standard_normal((4, 12))
    W1, W2 = rng.standard_normal((32, 12)), rng.standard_normal((10, 32))  # hidden 32
    dense_relu = np.maximum(x @ W1.T, 0.0) @ W2.T
    dense_silu = _silu(x @ W1.T) @ W2.T
    for n in RANKS:
        y, _ = impl.mlp_tp(x, W1, W2, n)
        assert_close(y, dense_relu, cause=REORDERED,
                     what=f"mlp_tp (ReLU) with num_ranks={n} vs relu(x @ W1.T) @ W2.T")
        y, _ = impl.mlp_tp(x, W1, W2, n, activation=_silu)
        assert_close(y, dense_silu, cause=REORDERED,
                     what=f"mlp_tp (SiLU) with num_ranks={n} vs silu(x @ W1.T) @ W2.T")


def test_mlp_tp_uses_exactly_one_all_reduce(impl) -> None:
    rng = _rng(9)
    x = rng.standard_normal((4, 12))
    W1, W2 = rng.standard_normal((32, 12)), rng.standard_normal((10, 32))
    for n in (2, 4, 8):
        group = TensorParallelGroup(n)
        y, count = impl.mlp_tp(x, W1, W2, n, group=group)
        assert count == 1, f"num_ranks={n}: mlp_tp reported {count} all-reduces, expected 1"
        assert (group.num_all_reduces, group.num_all_gathers) == (1, 0), (
            f"num_ranks={n}: column-parallel W1 then row-parallel W2 lets each rank's slice of "
            f"the hidden activation flow straight into its W2 shard: one all-reduce, no "
            f"all-gather. The group counted {group.num_all_reduces} all-reduce(s) and "
            f"{group.num_all_gathers} all-gather(s)")
        assert_close(y, np.maximum(x @ W1.T, 0.0) @ W2.T, cause=REORDERED,
                     what=f"mlp_tp through the given group, num_ranks={n}")


# -- divisibility --------------------------------------------------------------------------------

def test_uneven_column_split_is_refused(impl) -> None:
    rng = _rng(10)
    x, W = rng.standard_normal((2, 8)), rng.standard_normal((6, 8))  # out = 6
    with expect_raises(ValueError, "6 output rows do not split over 4 ranks: a ragged or "
                                   "truncated shard would silently change the model"):
        impl.column_shards(W, 4)
    with expect_raises(ValueError, "column_parallel over 4 ranks needs out (6) divisible by 4"):
        impl.column_parallel(x, W, 4)
    with expect_raises(ValueError, "num_ranks must be at least 1"):
        impl.column_shards(W, 0)


def test_uneven_row_split_is_refused(impl) -> None:
    rng = _rng(11)
    x, W = rng.standard_normal((2, 6)), rng.standard_normal((8, 6))  # in = 6
    with expect_raises(ValueError, "6 input columns do not split over 4 ranks: a ragged or "
                                   "truncated shard would silently change the model"):
        impl.row_shards(W, 4)
    with expect_raises(ValueError, "row_parallel over 4 ranks needs in (6) divisible by 4"):
        impl.row_parallel(x, W, 4)


def test_mlp_hidden_must_divide(impl) -> None:
    rng = _rng(12)
    x = rng.standard_normal((2, 8))
    W1, W2 = rng.standard_normal((12, 8)), rng.standard_normal((8, 12))  # hidden 12
    with expect_raises(ValueError, "hidden = 12 does not split over 8 ranks"):
        impl.mlp_tp(x, W1, W2, 8)
    with expect_raises(ValueError, "a group of 2 ranks cannot run a 4-rank mlp_tp"):
        impl.mlp_tp(x, W1, W2, 4, group=TensorParallelGroup(2))


# -- attention: heads are the boundary -------------------------------------------------------------

def _qkv(num_heads: int, num_kv_heads: int, head_dim: int = 4, hidden: int = 8):
    # Row i of every weight is filled with a value that names its head, so shards are readable.
    Wq = np.repeat(np.arange(num_heads * head_dim) // head_dim, hidden).reshape(-1, hidden)
    Wk = 100 + np.repeat(np.arange(num_kv_heads * head_dim) // head_dim, hidden).reshape(-1, hidden)
    return Wq.astype(float), Wk.astype(float), Wk.astype(float) + 100


def _heads(W: np.ndarray, base: int, head_dim: int = 4) -> list[int]:
    return [int(v) - base for v in W[::head_dim, 0]] if len(W) % head_dim == 0 else [-1]


def test_qkv_shards_give_each_rank_whole_heads(impl) -> None:
    Wq, Wk, Wv = _qkv(8, 4)
    for n, q_heads, kv_heads in [
        (1, [list(range(8))], [[0, 1, 2, 3]]),
        (2, [[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1], [2, 3]]),
        (4, [[0, 1], [2, 3], [4, 5], [6, 7]], [[0], [1], [2], [3]]),
    ]:
        shards = impl.qkv_shards(Wq, Wk, Wv, 8, 4, n)
        assert len(shards) == n, f"num_ranks={n}: expected {n} (Wq, Wk, Wv) triples"
        got_q = [_heads(q, 0) for q, _, _ in shards]
        got_k = [_heads(k, 100) for _, k, _ in shards]
        got_v = [_heads(v, 200) for _, _, v in shards]
        assert got_q == q_heads, (f"8 query heads over {n} ranks: expected query heads "
                                  f"{q_heads} (consecutive, rank order), got {got_q}")
        assert got_k == kv_heads and got_v == kv_heads, (
            f"4 KV heads over {n} ranks: expected KV heads {kv_heads} for both K and V "
            f"(the ones each rank's query heads read), got K {got_k}, V {got_v}")


def test_kv_heads_are_replicated_when_ranks_outnumber_them(impl) -> None:
    # The tiny Llama's shape (4 query heads, 2 KV heads) at 4 ranks, and 8 KV heads at 16.
    for heads, kv, n in [(4, 2, 4), (32, 8, 16), (8, 2, 8)]:
        Wq, Wk, Wv = _qkv(heads, kv)
        shards = impl.qkv_shards(Wq, Wk, Wv, heads, kv, n)
        assert len(shards) == n, f"num_ranks={n}: expected {n} (Wq, Wk, Wv) triples"
        group = heads // kv
        expected = [[(r * heads // n) // group] for r in range(n)]
        got_k = [_heads(k, 100) for _, k, _ in shards]
        got_v = [_heads(v, 200) for _, _, v in shards]
        assert got_k == expected and got_v == expected, (
            f"{kv} KV heads over {n} ranks: a head cannot be cut, so each rank holds one whole "
            f"KV head, the one its query heads read (replicated {n // kv}x); expected "
            f"{expected}, got K {got_k}, V {got_v} (-1: not whole heads)")


def test_head_counts_must_divide(impl) -> None:
    Wq, Wk, Wv = _qkv(4, 2)
    with expect_raises(ValueError, "4 query heads cannot be split over 3 ranks"):
        impl.qkv_shards(Wq, Wk, Wv, 4, 2, 3)
    Wq, Wk, Wv = _qkv(6, 3)
    with expect_raises(ValueError, "3 KV heads neither split over 2 ranks nor replicate evenly"):
        impl.qkv_shards(Wq, Wk, Wv, 6, 3, 2)
    Wq, Wk, Wv = _qkv(12, 4)
    with expect_raises(ValueError, "4 KV heads cannot be replicated evenly over 6 ranks"):
        impl.qkv_shards(Wq, Wk, Wv, 12, 4, 6)
    with expect_raises(ValueError, "Llama-3-8B's 32 heads do not split at TP=6"):
        impl.rank_layer_shapes(**LLAMA3_8B, num_ranks=6)


# -- what one rank holds ---------------------------------------------------------------------------

def test_rank_layer_shapes_for_llama3_8b(impl) -> None:
    expected = {
        1: {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096),
            "o_proj": (4096, 4096), "gate_proj": (14336, 4096), "up_proj": (14336, 4096),
            "down_proj": (4096, 14336)},
        2: {"q_proj": (2048, 4096), "k_proj": (512, 4096), "v_proj": (512, 4096),
            "o_proj": (4096, 2048), "gate_proj": (7168, 4096), "up_proj": (7168, 4096),
            "down_proj": (4096, 7168)},
        8: {"q_proj": (512, 4096), "k_proj": (128, 4096), "v_proj": (128, 4096),
            "o_proj": (4096, 512), "gate_proj": (1792, 4096), "up_proj": (1792, 4096),
            "down_proj": (4096, 1792)},
        16: {"q_proj": (256, 4096), "k_proj": (128, 4096), "v_proj": (128, 4096),
             "o_proj": (4096, 256), "gate_proj": (896, 4096), "up_proj": (896, 4096),
             "down_proj": (4096, 896)},
    }
    bf16_bytes = {}
    for n, shapes in expected.items():
        got = impl.rank_layer_shapes(**LLAMA3_8B, num_ranks=n)
        got = {k: tuple(v) for k, v in dict(got).items()}
        assert got == shapes, (f"Llama-3-8B layer at TP={n}: expected per-rank (out, in) "
                               f"shapes {shapes}, got {got}")
        bf16_bytes[n] = 2 * sum(a * b for a, b in got.values())
    assert bf16_bytes[1] == 436_207_616, "one Llama-3-8B layer is 218,103,808 bf16 parameters"
    assert bf16_bytes[2] * 2 == bf16_bytes[1] and bf16_bytes[8] * 8 == bf16_bytes[1], (
        "up to TP=8 every weight of the layer splits: each rank holds exactly 1/TP")
    assert bf16_bytes[16] * 16 > bf16_bytes[1], "at TP=16 the replicated KV heads cost extra"


def test_kv_cache_bytes_per_token_stop_shrinking_at_the_kv_head_count(impl) -> None:
    expected = {1: 131_072, 2: 65_536, 4: 32_768, 8: 16_384, 16: 16_384}
    got = {n: impl.kv_cache_bytes_per_token(num_layers=32, num_kv_heads=8, head_dim=128,
                                            dtype_bytes=2, num_ranks=n) for n in expected}
    assert got == expected, (
        f"Llama-3-8B in bf16: each rank caches its own KV heads, 2 (K and V) x 32 layers x "
        f"heads x 128 x 2 bytes; past 8 ranks a head is replicated, not cut, so the per-rank "
        f"cost stops shrinking. Expected {expected}, got {got}")


# -- your sharding serves a real model -------------------------------------------------------------

PROMPTS = ["You are a helpful assistant. Why?", "You are a helpful assistant. Hi", "hello world"]


def test_your_sharding_runs_the_engine(impl, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    # mini_vllm's tiny Llama (4 query heads, 2 KV heads) split with your three functions:
    # q/k/v by qkv_shards, o_proj and down_proj by row_shards, gate/up and the LM head (vocab)
    # by column_shards. At TP=4 the KV heads are replicated.
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    knobs = dict(block_size=4, long_prefill_token_threshold=5, max_num_batched_tokens=12)
    expected = [o.output_token_ids
                for o in LLMEngine(model=tiny_llama, **knobs).generate(PROMPTS, params)]
    for tp in (2, 4):
        model = shard_model(tiny_llama, tp, column_shards=impl.column_shards,
                            row_shards=impl.row_shards, qkv_shards=impl.qkv_shards)
        engine = LLMEngine(model=model, **knobs)
        got = [o.output_token_ids for o in engine.generate(PROMPTS, params)]
        assert_same_outputs(expected, got, labels=("unsharded engine", f"your shards, TP={tp}"))
        steps = engine.model_runner.num_steps
        assert model.group.num_all_reduces == 2 * 2 * steps, (
            "two all-reduces per layer per forward (after o_proj and down_proj)")
