"""Spec for kata 04-05: split-KV decode attention equals dense attention, partition by partition.

On a GPU the kernels run on CUDA with realistic sizes; without one the plugin turns the Triton
interpreter on and the sizes shrink so that the whole kata runs in seconds on a CPU. torch and
the scaffold are imported inside the tests: this module must import without torch, so that the
plugin can skip it with an install hint instead of failing collection.
"""

from __future__ import annotations

import pytest

from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.triton_fallback import interpreter_enabled

pytestmark = pytest.mark.gpu_req

INTERPRETED = interpreter_enabled()

# Outputs: the project's one bound per storage dtype (fp32 accumulators inside).
GATE = {"float16": "fp16-accumulated-in-fp32", "bfloat16": "bf16"}
# Partials: max_logits and exp_sums are float32 sums of exactly representable products, so they
# are held to float32 rounding; acc carries exp(s - m) rounded to the cache dtype by tl.dot.
SUMS = "float32"

HEAD_DIM = 32 if INTERPRETED else 128
GQA = {"num_heads": 8, "num_kv_heads": 2, "head_dim": HEAD_DIM}
# Most tests: 2 query heads per KV head. Under the interpreter every program costs
# milliseconds, and stage 2 runs one program per (sequence, query head).
SMALL = {"num_heads": 4, "num_kv_heads": 2, "head_dim": HEAD_DIM}

# (num_heads, num_kv_heads, head_dim, block_size, seq_lens, num_splits, dtype)
if INTERPRETED:
    SHAPES = [
        pytest.param(4, 4, 32, 16, [130, 33], 3, "float16", id="mha-bs16-3splits"),
        pytest.param(8, 2, 32, 16, [130, 7, 64], 4, "float16", id="gqa-bs16-4splits"),
        pytest.param(4, 2, 32, 16, [130, 7, 64], 4, "bfloat16", id="gqa-bs16-4splits-bf16"),
        pytest.param(8, 1, 32, 8, [50, 9], 5, "float16", id="mqa8-bs8-5splits"),
    ]
    SPLIT_COUNTS = [2, 12]
    MIXED_LENS = [1, 15, 16, 17, 130, 64, 200]
else:
    SHAPES = [
        pytest.param(8, 8, 64, 16, [130, 1000, 4097], 7, dtype, id=f"mha-bs16-7splits-{dtype}")
        for dtype in ("float16", "bfloat16")
    ] + [
        pytest.param(32, 8, 128, 16, [130, 2048, 3333, 1], 16, "float16",
                     id="gqa-bs16-16splits"),
        pytest.param(32, 8, 128, 16, [130, 2048, 3333, 1], 16, "bfloat16",
                     id="gqa-bs16-16splits-bf16"),
        pytest.param(28, 4, 128, 16, [777, 1500], 33, "float16", id="gqa7-bs16-33splits"),
        pytest.param(32, 1, 128, 32, [517, 4000], 5, "bfloat16", id="mqa32-bs32-5splits-bf16"),
    ]
    SPLIT_COUNTS = [2, 3, 5, 8, 33, 64]
    MIXED_LENS = [1, 15, 16, 17, 130, 64, 1000, 4095, 2, 3000, 511, 8192]

DTYPES = ["float16", "bfloat16"]


@pytest.fixture
def lab():
    """The lab's scaffold module (imported here: it needs torch)."""
    from katas.phase04.triton_split_kv_decode import scaffold

    return scaffold


def batch_of(lab, lens, *, dtype: str = "float16", **kwargs):
    import torch

    return lab.with_dtype(lab.make_paged_batch(lens, **kwargs), getattr(torch, dtype))


def check_partials(got, lab, batch, num_splits: int, what: str, scale=None) -> None:
    """The three partials against ``scaffold.partials_reference``, with a diagnosis."""
    import torch

    assert isinstance(got, tuple) and len(got) == 3, (
        f"{what}: split_kv_partials must return (max_logits, exp_sums, acc), got {type(got)}"
    )
    m, l, acc = got  # noqa: E741
    num_seqs, num_heads, head_dim = batch.query.shape
    want_shapes = ((num_seqs, num_heads, num_splits),) * 2 + ((*batch.query.shape[:2],
                                                               num_splits, head_dim),)
    for name, tensor, shape in zip(("max_logits", "exp_sums", "acc"), got, want_shapes,
                                   strict=True):
        assert tuple(tensor.shape) == shape and tensor.dtype == torch.float32, (
            f"{what}: {name} must be float32 {shape}, got {tensor.dtype} {tuple(tensor.shape)}"
        )
    ref_m, ref_l, ref_acc = lab.partials_reference(batch, num_splits, scale)
    m, l, acc = m.cpu().double(), l.cpu().double(), acc.cpu().double()  # noqa: E741

    empty = torch.isinf(ref_m)
    full = ~empty
    assert_close(m[full], ref_m[full], cause=SUMS,
                 what=f"{what}: max_logits (max of scale * q·k over the partition's tokens: "
                 "are the partition's bounds right?)")
    assert_close(l[full], ref_l[full], cause=SUMS,
                 what=f"{what}: exp_sums (sum of exp(s - max) over the partition: one token "
                 "too many or too few changes it)")
    # acc is compared after dividing both by the reference exp_sums: values of order 1.
    ref_out = ref_acc[full] / ref_l[full][:, None]
    got_out = acc[full] / ref_l[full][:, None]
    cause = GATE[str(batch.query.dtype).split(".")[-1]]
    try:
        assert_close(got_out, ref_out, cause=cause,
                     what=f"{what}: acc / exp_sums (acc = sum of exp(s - max) * v)")
    except AssertionError:
        if torch.allclose(acc[full], ref_out, atol=1e-2):
            pytest.fail(f"{what}: acc holds sum(p * v) / sum(p), each partition's normalised "
                        "output; the merge needs it unnormalised (not divided by exp_sums)",
                        pytrace=False)
        raise
    written = (m[empty] == float("-inf")).all() & (l[empty] == 0).all() & (acc[empty] == 0).all()
    assert bool(written), (
        f"{what}: an empty partition (no token of its sequence falls in it) must be written "
        "as (max_logits, exp_sums, acc) = (-inf, 0, 0), so that it weighs nothing in the "
        f"merge; got max_logits {m[empty].tolist()}, exp_sums {l[empty].tolist()} there "
        "(not written at all?)"
    )


# -- the launcher's rule ----------------------------------------------------------------------

# (num_seqs, num_kv_heads, max_context, num_sms) -> num_splits, for the documented rule.
RULE_CASES = [
    pytest.param((1, 8, 32768, 132), 64, id="batch1-32k-33_rounded_up"),
    pytest.param((4, 8, 16384, 132), 16, id="batch4-16k-9_rounded_up"),
    pytest.param((2, 8, 4096, 132), 32, id="batch2-4k"),
    pytest.param((1, 8, 1024, 132), 16, id="batch1-1k-capped_by_context"),
    pytest.param((2, 8, 1000, 132), 15, id="batch2-1000-cap_rounds_down"),
    pytest.param((1, 8, 48, 132), 1, id="short_context-never_zero"),
    pytest.param((16, 8, 32768, 132), 4, id="batch16-under_one_wave"),
    pytest.param((17, 8, 32768, 132), 1, id="batch17-full_wave"),
    pytest.param((64, 8, 32768, 132), 1, id="batch64"),
    pytest.param((1, 1, 1 << 20, 108), 256, id="mqa-108_sms"),
]


@pytest.mark.parametrize(("args", "expected"), RULE_CASES)
def test_choose_num_splits_follows_the_rule(impl, args, expected: int) -> None:
    num_seqs, num_kv_heads, max_context, num_sms = args
    got = impl.choose_num_splits(num_seqs, num_kv_heads, max_context, num_sms)
    assert isinstance(got, int) and got == expected, (
        f"choose_num_splits(num_seqs={num_seqs}, num_kv_heads={num_kv_heads}, max_context="
        f"{max_context}, num_sms={num_sms}) should be {expected}, got {got!r}: 1 once "
        "num_seqs * num_kv_heads streams reach num_sms, else ceil(2 * num_sms / streams) "
        "rounded up to a power of two, capped at max(1, max_context // 64)"
    )


def test_default_split_count_comes_from_the_rule(impl, lab, monkeypatch) -> None:
    batch = batch_of(lab, [130, 40], **SMALL, seed=11)
    calls = []

    def spy(num_seqs, num_kv_heads, max_context, num_sms):
        calls.append((num_seqs, num_kv_heads, max_context, num_sms))
        return 3

    monkeypatch.setattr(impl, "choose_num_splits", spy)
    got = impl.split_kv_attention(*batch.args())
    expected_call = (2, 2, batch.block_tables.shape[1] * batch.block_size,
                     lab.multiprocessor_count(batch.query.device))
    assert calls == [expected_call], (
        "split_kv_attention with num_splits=None must ask choose_num_splits once, with "
        "(num_seqs, num_kv_heads, block_tables.shape[1] * block_size, "
        f"multiprocessor_count(device)) = {expected_call}; calls seen: {calls}"
    )
    assert_close(got, lab.dense_reference(batch), cause=GATE["float16"],
                 what="split_kv_attention with the split count the rule gave (3)")


# -- stage 1 on its own -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_partials_match_torch(impl, lab, dtype: str) -> None:
    # 130, 33 and 7 tokens in blocks of 16: 9, 3 and 1 blocks. Three splits of 3, 1 and 1
    # blocks: the last partition of the first sequence ends mid-block, the third sequence
    # leaves two partitions empty.
    batch = batch_of(lab, [130, 33, 7], **SMALL, dtype=dtype, poison="nan", seed=12)
    got = impl.split_kv_partials(*batch.args(), num_splits=3)
    check_partials(got, lab, batch, 3, f"split_kv_partials, {dtype}, 3 splits")


def test_last_partition_stops_at_seq_len(impl, lab) -> None:
    # 92 tokens in blocks of 8: 12 blocks, 2 splits of 6 blocks; the second partition is
    # tokens 48..91, and its last block holds 4 tokens and 4 NaN slots.
    batch = batch_of(lab, [92], **SMALL, block_size=8, poison="nan", seed=13)
    partials = impl.split_kv_partials(*batch.args(), num_splits=2)
    check_partials(partials, lab, batch, 2,
                   "split_kv_partials, 92 tokens, 2 splits (the last partition ends at "
                   "seq_len, mid-block, before NaN slots)")
    assert_close(impl.split_kv_attention(*batch.args(), num_splits=2), lab.dense_reference(batch),
                 cause=GATE["float16"], what="split_kv_attention, 92 tokens, 2 splits")


def test_empty_partitions_weigh_nothing(impl, lab) -> None:
    # 40 tokens in blocks of 16: 3 blocks. Five splits: one block each, splits 3 and 4 empty.
    batch = batch_of(lab, [40], **SMALL, poison="nan", seed=14)
    partials = impl.split_kv_partials(*batch.args(), num_splits=5)
    check_partials(partials, lab, batch, 5, "split_kv_partials, 3 blocks in 5 splits")
    assert_close(impl.split_kv_attention(*batch.args(), num_splits=5), lab.dense_reference(batch),
                 cause=GATE["float16"],
                 what="split_kv_attention, 3 blocks in 5 splits (two partitions are empty)")


# -- the whole thing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_heads", "num_kv_heads", "head_dim", "block_size", "lens", "num_splits", "dtype"), SHAPES
)
def test_split_kv_matches_torch_oracle(
    impl, lab, num_heads, num_kv_heads, head_dim, block_size, lens, num_splits, dtype
) -> None:
    batch = batch_of(lab, lens, num_heads=num_heads, num_kv_heads=num_kv_heads,
                     head_dim=head_dim, block_size=block_size, dtype=dtype, seed=1)
    got = impl.split_kv_attention(*batch.args(), num_splits=num_splits)
    assert got.shape == batch.query.shape and got.dtype == batch.query.dtype, (
        f"output must be shaped and typed like the query {tuple(batch.query.shape)} "
        f"{batch.query.dtype}, got {tuple(got.shape)} {got.dtype}"
    )
    assert got.device == batch.query.device, "output must live on the query's device"
    assert_close(got, lab.dense_reference(batch), cause=GATE[dtype],
                 what=f"split_kv_attention, {num_splits} splits, {dtype}")


def test_any_split_count_gives_the_same_answer(impl, lab) -> None:
    batch = batch_of(lab, [130, 1], **SMALL, poison="nan", seed=2)
    expected = lab.dense_reference(batch)
    for num_splits in SPLIT_COUNTS:
        assert_close(impl.split_kv_attention(*batch.args(), num_splits=num_splits), expected,
                     cause=GATE["float16"],
                     what=f"split_kv_attention with num_splits={num_splits} (the merge of any "
                     "number of partitions is attention over their union)")


def test_one_split_is_the_one_pass_kernel(impl, lab) -> None:
    batch = batch_of(lab, [130, 17], **SMALL, poison="nan", seed=3)
    expected = lab.dense_reference(batch)
    one_pass = impl.split_kv_attention(*batch.args(), num_splits=1)
    assert one_pass.shape == batch.query.shape and one_pass.dtype == batch.query.dtype, (
        f"with num_splits=1 the output must be shaped and typed like the query "
        f"{tuple(batch.query.shape)} {batch.query.dtype}, got {tuple(one_pass.shape)} "
        f"{one_pass.dtype}"
    )
    assert_close(one_pass, expected, cause=GATE["float16"],
                 what="split_kv_attention with num_splits=1 (WRITE_OUTPUT: stage 1 writes "
                 "acc / exp_sums itself, kata 02-04's kernel)")
    partials = impl.split_kv_partials(*batch.args(), num_splits=1)
    check_partials(partials, lab, batch, 1, "split_kv_partials with one split (the whole "
                   "sequence's summary)")
    assert_close(impl.merge_partials(*partials, batch.query.dtype), expected,
                 cause=GATE["float16"], what="merge_partials of a single partition")


def test_merge_rescales_partials_with_different_maxima(impl, lab) -> None:
    import torch

    # One sequence of 300 tokens, 4 partitions of 80: every head asks the same question and
    # key t gets a component along it that grows with t, so each partition's max is far
    # above the previous one's, and the merge must bring every summary to the common max.
    seq_len = 300
    batch = batch_of(lab, [seq_len], **GQA, seed=8)
    question = batch.query[0, 0].float()
    batch.query[:] = batch.query[0, 0]
    direction = question / question.norm()
    t = torch.arange(seq_len, device=batch.query.device)
    blocks = batch.block_tables[0, t // batch.block_size].long()
    slots = t % batch.block_size
    ramp = 8.0 * t.float() / seq_len * batch.query.shape[-1] ** 0.5 / question.norm()
    climb = (ramp[:, None] * direction[None, :]).to(batch.key_cache.dtype)
    batch.key_cache[blocks, slots] += climb[:, None, :]
    got = impl.split_kv_attention(*batch.args(), num_splits=4)
    assert_close(
        got, lab.dense_reference(batch), cause=GATE["float16"],
        what="split_kv_attention, 4 partitions whose maxima climb (merging: every partition's "
        "exp_sums and acc must be scaled by exp(max_logits - the common max) before they "
        "are summed)",
    )


def test_query_heads_share_kv_heads_in_groups(impl, lab) -> None:
    import dataclasses

    # 8 query heads over 2 KV heads: heads 0-3 read KV head 0, heads 4-7 read KV head 1.
    batch = batch_of(lab, [40], **GQA, seed=7)
    same_question = batch.query[:, :1].expand_as(batch.query).contiguous()
    batch = dataclasses.replace(batch, query=same_question)  # every head asks the same
    got = impl.split_kv_attention(*batch.args(), num_splits=2)
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
    assert_close(got, lab.dense_reference(batch), cause=GATE["float16"],
                 what="split_kv_attention, 8 query heads over 2 KV heads, 2 splits")


def test_mixed_lengths_and_shuffled_tables(impl, lab) -> None:
    batch = batch_of(lab, MIXED_LENS, **SMALL, poison="nan", seed=6)
    got = impl.split_kv_attention(*batch.args(), num_splits=3)
    assert_close(
        got, lab.dense_reference(batch), cause=GATE["float16"],
        what=f"split_kv_attention for lengths {MIXED_LENS}, 3 splits (each sequence is cut by "
        "its own seq_len and read through its own block-table row)",
    )


def test_split_kv_uses_the_scale_argument(impl, lab) -> None:
    batch = batch_of(lab, [130, 40], **SMALL, seed=9)
    got = impl.split_kv_attention(*batch.args(), scale=0.5, num_splits=2)
    assert_close(got, lab.dense_reference(batch, scale=0.5), cause=GATE["float16"],
                 what="split_kv_attention with scale=0.5 (is the scale argument ignored?)")


def test_block_offsets_past_the_int32_range(impl, lab) -> None:
    import torch

    # K and V of each block side by side ([num_blocks, 2, block_size, kv_heads, head_dim], the
    # FlashInfer layout), so one block spans 2 * 16 * 1 * 32 = 1024 elements. The sequence's
    # blocks sit past element 2**32 of an 8 GiB cache that is mostly never touched (the
    # memory is reserved, not used), so block id times block stride overflows int32.
    block_size, head_dim = 16, 32
    per_block = 2 * block_size * head_dim
    far = 2**32 // per_block
    table = [far + 3, far + 1, far + 7]
    try:
        kv = torch.empty(far + 8, 2, block_size, 1, head_dim, dtype=torch.float16,
                         device=lab.kernel_device())
    except (RuntimeError, MemoryError) as exc:  # a small GPU, or no overcommit
        pytest.skip(f"needs an 8 GiB cache allocation (mostly untouched): {exc}")
    gen = torch.Generator().manual_seed(10)
    for block in table:
        kv[block] = torch.randn(2, block_size, 1, head_dim, generator=gen).half()
    seq_len = 40
    batch = lab.PagedBatch(
        query=torch.randn(1, 4, head_dim, generator=gen).half().to(kv.device),
        key_cache=kv[:, 0], value_cache=kv[:, 1],
        block_tables=torch.tensor([table], dtype=torch.int32, device=kv.device),
        seq_lens=torch.tensor([seq_len], dtype=torch.int32, device=kv.device),
    )
    got = impl.split_kv_attention(*batch.args(), num_splits=2)
    assert_close(
        got, lab.dense_reference(batch), cause=GATE["float16"],
        what=f"split_kv_attention with blocks {table} of a cache whose block stride is "
        f"{per_block} elements: block * stride passes 2**31, so it must be computed in int64 "
        "(and the caches' strides read, not assumed)",
    )


def test_bad_split_count_is_refused(impl, lab) -> None:
    batch = batch_of(lab, [40], **SMALL, seed=4)
    with expect_raises(ValueError, "a decode step cannot be cut into 0 partitions",
                       match="num_splits"):
        impl.split_kv_partials(*batch.args(), num_splits=0)
    with expect_raises(ValueError, "a decode step cannot be cut into 0 partitions",
                       match="num_splits"):
        impl.split_kv_attention(*batch.args(), num_splits=0)
