"""Spec for kata 02-04: paged decode attention equals dense attention, in torch and in Triton.

On a GPU the kernels run on CUDA with realistic sizes; without one the plugin turns the Triton
interpreter on and the sizes shrink so that the whole kata runs in seconds on a CPU. torch and
the scaffold are imported inside the tests: this module must import without torch, so that the
plugin can skip it with an install hint instead of failing collection.
"""

from __future__ import annotations

import pytest

from pytest_vllm_katas import assert_close
from pytest_vllm_katas.triton_fallback import interpreter_enabled

pytestmark = pytest.mark.gpu_req

INTERPRETED = interpreter_enabled()

# The course's gate and its worked example: 130 tokens in 9 blocks of 16, the last holding 2.
GATE = "fp16-accumulated-in-fp32"  # max |Δ| <= 1e-2 against the torch reference
COURSE_SEQ_LEN = 130
COURSE_BLOCK_TABLE = [12, 3, 47, 1, 88, 5, 9, 22, 0]

# (num_heads, num_kv_heads, head_dim, block_size, seq_lens): MHA, GQA and MQA; lengths mostly
# not multiples of the block size.
if INTERPRETED:
    SHAPES = [
        pytest.param(4, 4, 32, 16, [130, 33], id="mha-4heads-d32-bs16"),
        pytest.param(8, 2, 32, 16, [130, 7, 64], id="gqa-4q_per_kv-d32-bs16"),
        pytest.param(4, 1, 64, 8, [50, 9, 1], id="mqa-d64-bs8"),
    ]
    MIXED_LENS = [1, 15, 16, 17, 130, 64, 200]
else:
    SHAPES = [
        pytest.param(8, 8, 64, 16, [130, 1000, 4097], id="mha-8heads-d64-bs16"),
        pytest.param(32, 8, 128, 16, [130, 2048, 3333, 1], id="gqa-4q_per_kv-d128-bs16"),
        pytest.param(28, 4, 128, 16, [777, 1500], id="gqa-7q_per_kv-d128-bs16"),
        pytest.param(16, 1, 128, 32, [517, 4000], id="mqa-d128-bs32"),
    ]
    MIXED_LENS = [1, 15, 16, 17, 130, 64, 1000, 4095, 2, 3000, 511, 8192]

SMALL_GQA = {"num_heads": 8, "num_kv_heads": 2, "head_dim": 32 if INTERPRETED else 128}


@pytest.fixture
def paged():
    """The lab's scaffold module (imported here: it needs torch)."""
    from katas.phase02.triton_paged_attention import scaffold

    return scaffold


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "block_size", "lens"), SHAPES)
def test_paged_torch_matches_dense_baseline(
    impl, paged, num_heads, num_kv_heads, head_dim, block_size, lens
) -> None:
    batch = paged.make_paged_batch(
        lens, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
        block_size=block_size,
    )
    got = impl.paged_attention_torch(*batch.args())
    assert_close(
        got, paged.dense_reference(batch), cause=GATE,
        what="paged_attention_torch vs the dense baseline (gather through block_tables, then "
        "attend over exactly seq_len tokens)",
    )


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "block_size", "lens"), SHAPES)
def test_triton_matches_torch_reference(
    impl, reference_impl, paged, num_heads, num_kv_heads, head_dim, block_size, lens
) -> None:
    batch = paged.make_paged_batch(
        lens, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
        block_size=block_size, seed=1,
    )
    got = impl.paged_attention_triton(*batch.args())
    assert got.shape == batch.query.shape and got.dtype == batch.query.dtype, (
        f"output must be shaped and typed like the query {tuple(batch.query.shape)} "
        f"{batch.query.dtype}, got {tuple(got.shape)} {got.dtype}"
    )
    assert got.device == batch.query.device, "output must live on the query's device"
    assert_close(
        got, reference_impl.paged_attention_torch(*batch.args()), cause=GATE,
        what="paged_attention_triton vs the torch reference",
    )


def test_triton_uses_the_scale_argument(impl, reference_impl, paged) -> None:
    batch = paged.make_paged_batch([COURSE_SEQ_LEN, 40], **SMALL_GQA, seed=2)
    got = impl.paged_attention_triton(*batch.args(), scale=0.5)
    assert_close(
        got, reference_impl.paged_attention_torch(*batch.args(), scale=0.5), cause=GATE,
        what="paged_attention_triton with scale=0.5 (is the scale argument ignored?)",
    )


def test_triton_rescales_when_a_later_tile_raises_the_max(impl, paged) -> None:
    import torch

    # One sequence of 300 tokens: several tiles for any tile of up to 128 tokens. Every head
    # asks the same question, and key t gets a component along it that grows with t, so the
    # scores climb along the sequence and each new tile brings a new running maximum.
    seq_len = 300
    batch = paged.make_paged_batch([seq_len], **SMALL_GQA, seed=8)
    question = batch.query[0, 0].float()
    batch.query[:] = batch.query[0, 0]
    direction = question / question.norm()
    t = torch.arange(seq_len, device=batch.query.device)
    blocks = batch.block_tables[0, t // batch.block_size].long()
    slots = t % batch.block_size
    ramp = 8.0 * t.float() / seq_len * batch.query.shape[-1] ** 0.5 / question.norm()
    climb = (ramp[:, None] * direction[None, :]).to(batch.key_cache.dtype)
    batch.key_cache[blocks, slots] += climb[:, None, :]
    got = impl.paged_attention_triton(*batch.args())
    assert_close(
        got, paged.dense_reference(batch), cause=GATE,
        what="paged_attention_triton with scores that climb along the sequence (when a tile "
        "raises the running max m, the sum l and the accumulator acc built under the old max "
        "must both be scaled by exp(m_old - m_new))",
    )


def test_triton_query_heads_share_kv_heads_in_groups(impl, paged) -> None:
    import dataclasses

    # 8 query heads over 2 KV heads: heads 0-3 read KV head 0, heads 4-7 read KV head 1.
    batch = paged.make_paged_batch([40], **SMALL_GQA, seed=7)
    same_question = batch.query[:, :1].expand_as(batch.query).contiguous()
    batch = dataclasses.replace(batch, query=same_question)  # every head asks the same
    got = impl.paged_attention_triton(*batch.args())
    assert got.shape == batch.query.shape, (
        f"output must be shaped like the query {tuple(batch.query.shape)}, got {tuple(got.shape)}"
    )
    out = got[0].float().cpu()
    spread = [round((out[h] - out[4 * (h // 4)]).abs().max().item(), 4) for h in range(8)]
    between = (out[0] - out[4]).abs().max().item()
    assert max(spread) <= 1e-2 and between > 1e-2, (
        "with the same query in every head, heads 0-3 (KV head 0) must agree, heads 4-7 (KV "
        "head 1) must agree, and the two groups must differ: query head h reads KV head "
        "h // (num_heads // num_kv_heads), not h % num_kv_heads. Largest difference from the "
        f"first head of its group, per head: {spread}; between the groups: {between:.3g}"
    )
    assert_close(got, paged.dense_reference(batch), cause=GATE,
                 what="paged_attention_triton, 8 query heads over 2 KV heads")


# Shuffled physical blocks for lengths [130, 17, 31, 1] in blocks of 16. Block 0, like vLLM's
# null block that padding points at, belongs to no sequence and holds poison too.
TAIL_LENS = [COURSE_SEQ_LEN, 17, 31, 1]
TAIL_TABLES = [[12, 3, 14, 1, 9, 5, 7, 13, 2], [10, 4], [8, 15], [6]]


@pytest.mark.parametrize("poison", ["huge", "nan"], ids=["poison_huge", "poison_nan"])
@pytest.mark.parametrize("part", ["torch", "triton"])
def test_tail_block_slots_are_masked(impl, paged, part: str, poison: str) -> None:
    # Every unused slot holds poison; the lengths leave 2, 1, 15 and 1 tokens in the last block.
    batch = paged.make_paged_batch(TAIL_LENS, **SMALL_GQA, poison=poison, seed=3,
                                   block_tables=TAIL_TABLES)
    got = getattr(impl, f"paged_attention_{part}")(*batch.args())
    assert_close(
        got, paged.dense_reference(batch), cause=GATE,
        what=f"paged_attention_{part} with the unused slots poisoned ({poison}): tokens at "
        "t >= seq_len must be masked out of the loads as well as the scores",
    )


@pytest.mark.parametrize("part", ["torch", "triton"])
def test_course_block_table_matches_dense(impl, paged, part: str) -> None:
    batch = paged.make_paged_batch(
        [COURSE_SEQ_LEN], **SMALL_GQA, block_size=16, block_tables=[COURSE_BLOCK_TABLE], seed=4
    )
    got = getattr(impl, f"paged_attention_{part}")(*batch.args())
    assert_close(
        got, paged.dense_reference(batch), cause=GATE,
        what=f"paged_attention_{part} for seq_len=130 in blocks {COURSE_BLOCK_TABLE}",
    )


@pytest.mark.parametrize("part", ["torch", "triton"])
def test_physical_placement_does_not_change_the_result(impl, paged, part: str) -> None:
    import torch

    # Same logical K/V, two different physical layouts: the output must be bit-identical.
    lens = [COURSE_SEQ_LEN, 50]
    first = paged.make_paged_batch(lens, **SMALL_GQA, seed=5)
    moved_tables = [[40 + 2 * i for i in range(9)], [7, 3, 1, 5]]
    second = paged.make_paged_batch(lens, **SMALL_GQA, seed=5, block_tables=moved_tables)
    fn = getattr(impl, f"paged_attention_{part}")
    a, b = fn(*first.args()), fn(*second.args())
    assert torch.equal(a, b), (
        f"paged_attention_{part}: moving the blocks changed the output (max |Δ| = "
        f"{(a.float() - b.float()).abs().max().item():.3g}); the block table decides where bytes "
        "live, never what they mean"
    )


@pytest.mark.parametrize("num_kv_heads", [2, 8], ids=["gqa", "mha"])
def test_triton_handles_mixed_lengths_in_one_batch(impl, paged, num_kv_heads: int) -> None:
    shape = {**SMALL_GQA, "num_kv_heads": num_kv_heads}
    batch = paged.make_paged_batch(MIXED_LENS, **shape, poison="nan", seed=6)
    got = impl.paged_attention_triton(*batch.args())
    assert_close(
        got, paged.dense_reference(batch), cause=GATE,
        what=f"paged_attention_triton for lengths {MIXED_LENS} in one batch (each program must "
        "read its own sequence's seq_len and block-table row)",
    )
