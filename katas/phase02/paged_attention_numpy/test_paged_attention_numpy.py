"""Spec for kata 02-06: gathering through a block table is the identity, to the last bit.

Every cache starts filled with poison (1e6) and only the slots a sequence owns get real
values, so reading one slot too many changes the answer by orders of magnitude. Physical
block ids are shuffled and never include block 0 (mini_vllm's null block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pytest_vllm_katas import assert_close

pytestmark = pytest.mark.cpu_ok

POISON = 1e6
# Dense and paged attention run the same float64 operations in the same order on identical
# numbers (the gather copies values exactly), so they agree to the last bit; 1e-12 leaves room
# only for a reordered sum (~1e-16 here), never for a wrong slot.
SAME_ORDER = "float64-same-order"


# -- oracles and builders (independent of the code under test) -------------------------------


def slots_of(table, block_size: int, start: int, num_tokens: int) -> np.ndarray:
    t = np.arange(start, start + num_tokens)
    return np.asarray(table)[t // block_size] * block_size + t % block_size


def dense_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Attention over contiguous ``keys`` / ``values`` ``[seq_len, kv_heads, head_dim]``."""
    num_heads, head_dim = q.shape
    group = num_heads // keys.shape[1]
    out = np.empty((num_heads, head_dim))
    for h in range(num_heads):
        scores = (keys[:, h // group, :] @ q[h]) * (1.0 / np.sqrt(head_dim))
        w = np.exp(scores - scores.max())
        w /= w.sum()
        out[h] = w @ values[:, h // group, :]
    return out


@dataclass
class Paged:
    """One sequence, dense and paged: ``keys`` / ``values`` are the truth, the caches hold
    them at the table's slots and poison everywhere else."""

    q: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    k_cache: np.ndarray
    v_cache: np.ndarray
    table: np.ndarray
    seq_len: int
    block_size: int

    def args(self) -> tuple:
        return self.q, self.k_cache, self.v_cache, self.table, self.seq_len, self.block_size

    def dense(self) -> np.ndarray:
        return dense_attention(self.q, self.keys, self.values)


def make_paged(seq_len: int, *, block_size: int = 16, num_heads: int = 4, num_kv_heads: int = 4,
               head_dim: int = 8, num_blocks: int = 32, seed: int = 0, table=None) -> Paged:
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((seq_len, num_kv_heads, head_dim))
    values = rng.standard_normal((seq_len, num_kv_heads, head_dim))
    q = rng.standard_normal((num_heads, head_dim))
    if table is None:
        table = rng.permutation(np.arange(1, num_blocks))[: -(-seq_len // block_size)]
    table = np.asarray(table)
    shape = (num_blocks * block_size, num_kv_heads, head_dim)
    k_cache, v_cache = np.full(shape, POISON), np.full(shape, POISON)
    rows = slots_of(table, block_size, 0, seq_len)
    k_cache[rows], v_cache[rows] = keys, values
    return Paged(q, keys, values, k_cache, v_cache, table, seq_len, block_size)


# -- the write map ----------------------------------------------------------------------------

TABLE = [7, 2, 9]  # logical block 0 -> physical 7, 1 -> 2, 2 -> 9


@pytest.mark.parametrize(
    ("start", "num_tokens", "expected"),
    [
        pytest.param(0, 4, [28, 29, 30, 31], id="first_block"),
        pytest.param(2, 4, [30, 31, 8, 9], id="crosses_a_block_boundary"),
        pytest.param(9, 1, [37], id="decode_one_token_mid_block"),
        pytest.param(8, 1, [36], id="decode_first_slot_of_a_block"),
        pytest.param(5, 6, [9, 10, 11, 36, 37, 38], id="prefill_chunk_mid_sequence"),
        pytest.param(0, 12, [28, 29, 30, 31, 8, 9, 10, 11, 36, 37, 38, 39], id="whole_table"),
    ],
)
def test_slot_mapping_formula(impl, start: int, num_tokens: int, expected: list[int]) -> None:
    got = np.asarray(impl.build_slot_mapping(TABLE, 4, start, num_tokens)).tolist()
    assert got == expected, (
        f"table {TABLE} (logical block i lives in physical block TABLE[i]), blocks of 4, "
        f"positions {start}..{start + num_tokens - 1}: the cache rows are {expected}; got {got}"
    )


def test_slot_mapping_is_an_integer_array(impl) -> None:
    got = impl.build_slot_mapping(np.array(TABLE), 4, 3, 5)
    assert isinstance(got, np.ndarray) and got.dtype.kind in "iu" and got.shape == (5,), (
        f"the slot mapping indexes the cache: an integer numpy array of shape (5,), got "
        f"{type(got).__name__} {getattr(got, 'dtype', '')} {getattr(got, 'shape', '')}"
    )
    empty = impl.build_slot_mapping(TABLE, 4, 3, 0)
    assert len(empty) == 0, f"zero tokens map to zero slots, got {np.asarray(empty).tolist()}"


# -- the scatter ------------------------------------------------------------------------------


def test_write_kv_touches_only_the_mapped_rows(impl) -> None:
    rng = np.random.default_rng(1)
    k_cache, v_cache = np.full((16, 2, 3), POISON), np.full((16, 2, 3), POISON)
    new_k, new_v = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 3))
    slots = np.array([13, 2, 7])
    impl.write_kv(k_cache, v_cache, new_k, new_v, slots)
    for name, cache, new in (("k_cache", k_cache, new_k), ("v_cache", v_cache, new_v)):
        wrong = [int(slots[i]) for i in range(3) if not np.array_equal(cache[slots[i]], new[i])]
        assert not wrong, (
            f"row i of new_k / new_v must land at cache row slot_mapping[i] (rows 13, 2, 7): "
            f"{name} rows {wrong} do not hold the new values"
        )
    untouched = np.setdiff1d(np.arange(16), slots)
    changed = [int(r) for r in untouched
               if not ((k_cache[r] == POISON).all() and (v_cache[r] == POISON).all())]
    assert not changed, (
        f"write_kv must leave every other cache row as it was; rows {changed} changed"
    )


def test_write_then_gather_round_trips(impl) -> None:
    # A 40-token prompt prefilled in chunks of 16 (a chunked prefill), then read back.
    rng = np.random.default_rng(2)
    table, block_size = [5, 11, 3], 16
    k_cache, v_cache = np.full((12 * 16, 2, 4), POISON), np.full((12 * 16, 2, 4), POISON)
    keys, values = rng.standard_normal((40, 2, 4)), rng.standard_normal((40, 2, 4))
    for start in (0, 16, 32):
        n = min(16, 40 - start)
        slots = impl.build_slot_mapping(table, block_size, start, n)
        impl.write_kv(k_cache, v_cache, keys[start:start + n], values[start:start + n], slots)
    read = impl.build_slot_mapping(table, block_size, 0, 40)
    assert np.array_equal(k_cache[read], keys) and np.array_equal(v_cache[read], values), (
        "what the write map stored, the read map must find: chunk-by-chunk writes of positions "
        "0..39, read back through the table, should return the keys and values in order"
    )
    untouched = int((k_cache == POISON).sum())
    assert untouched == (12 * 16 - 40) * 2 * 4, (
        f"only the 40 written slots may change: {(12 * 16 - 40) * 2 * 4} K values stay poison, "
        f"got {untouched}"
    )


# -- the gather and the attention --------------------------------------------------------------

SHAPES = [
    pytest.param(4, 4, id="mha-4_heads"),
    pytest.param(8, 2, id="gqa-8_query_heads-2_kv_heads"),
    pytest.param(4, 1, id="mqa-4_query_heads-1_kv_head"),
]


@pytest.mark.parametrize("seq_len", [1, 16, 35, 100])
@pytest.mark.parametrize(("num_heads", "num_kv_heads"), SHAPES)
def test_paged_matches_dense_exactly(impl, num_heads: int, num_kv_heads: int,
                                     seq_len: int) -> None:
    case = make_paged(seq_len, num_heads=num_heads, num_kv_heads=num_kv_heads, seed=seq_len)
    got = impl.paged_attention(*case.args())
    assert got.shape == (num_heads, 8) and got.dtype == np.float64, (
        f"the output is [num_heads, head_dim] = ({num_heads}, 8) float64, got {got.shape} "
        f"{got.dtype}"
    )
    assert_close(got, case.dense(), cause=SAME_ORDER,
                 what=f"paged vs dense attention (seq_len {seq_len}, shuffled table {case.table})")


def test_partial_tail_block_is_masked(impl) -> None:
    case = make_paged(35, block_size=16, seed=3)
    tail_start = case.table[2] * 16
    assert (case.k_cache[tail_start + 3 : tail_start + 16] == POISON).all(), (
        "test premise: the last 13 slots of the third block hold poison"
    )
    got = impl.paged_attention(*case.args())
    assert np.isfinite(got).all() and np.abs(got).max() < 10, (
        f"seq_len 35 fills 2 blocks and 3 slots of a third; the other 13 slots hold {POISON:g}. "
        f"Read exactly seq_len rows, not len(block_table) * block_size. Got max |out| = "
        f"{np.abs(got).max():.3g}"
    )
    assert_close(got, case.dense(), cause=SAME_ORDER, what="paged attention, partial tail block")


def test_indirection_is_the_identity(impl) -> None:
    first = make_paged(35, seed=4, table=[9, 4, 17])
    second = make_paged(35, seed=4, table=[2, 30, 11])
    assert np.array_equal(first.keys, second.keys), "test premise: the same logical tokens"
    a, b = impl.paged_attention(*first.args()), impl.paged_attention(*second.args())
    assert np.array_equal(a, b), (
        f"the same tokens in physical blocks [9, 4, 17] and [2, 30, 11] must give bit-identical "
        f"output: where bytes live is unobservable. Max difference {np.abs(a - b).max():.3g}"
    )


def test_query_heads_share_kv_heads_in_groups(impl) -> None:
    # 4 query heads, 2 KV heads: heads 0-1 read KV head 0, heads 2-3 read KV head 1.
    case = make_paged(20, num_heads=4, num_kv_heads=2, seed=5)
    case.q[:] = case.q[0]  # every query head asks the same question
    got = impl.paged_attention(*case.args())
    same_group = np.array_equal(got[0], got[1]) and np.array_equal(got[2], got[3])
    pairs = {f"heads {a} and {b}": bool(np.array_equal(got[a], got[b]))
             for a, b in ((0, 1), (2, 3), (0, 2))}
    assert same_group and not np.allclose(got[0], got[2]), (
        "with identical queries, heads 0 and 1 (KV head 0) must agree, heads 2 and 3 (KV head 1) "
        "must agree, and the two pairs must differ: query head h reads KV head "
        f"h // (num_heads // num_kv_heads), not h % num_kv_heads. Equal outputs: {pairs}"
    )
    assert_close(got, case.dense(), cause=SAME_ORDER, what="grouped-query paged attention")


def test_large_scores_do_not_overflow(impl) -> None:
    case = make_paged(40, seed=6)
    case.q *= 1000.0  # scores in the thousands: exp() overflows unless the max is subtracted
    got = impl.paged_attention(*case.args())
    assert np.isfinite(got).all(), (
        f"scores in the thousands: subtract each head's max score before exp(), or exp "
        f"overflows; {int((~np.isfinite(got)).sum())} of {got.size} outputs are inf or NaN"
    )
    assert_close(got, case.dense(), cause=SAME_ORDER, what="paged attention with large scores")


def test_decode_step_writes_one_slot_and_attends_over_it(impl) -> None:
    case = make_paged(35, seed=7)  # 35 tokens cached; the decode step adds position 35
    rng = np.random.default_rng(8)
    new_k, new_v = rng.standard_normal((1, 4, 8)), rng.standard_normal((1, 4, 8))
    slot = impl.build_slot_mapping(case.table, 16, 35, 1)
    impl.write_kv(case.k_cache, case.v_cache, new_k, new_v, slot)
    got = impl.paged_attention(case.q, case.k_cache, case.v_cache, case.table, 36, 16)
    expected = dense_attention(case.q, np.concatenate([case.keys, new_k]),
                               np.concatenate([case.values, new_v]))
    assert_close(got, expected, cause=SAME_ORDER,
                 what="attention after writing one decode token at start=seq_len")


def test_paged_attention_leaves_the_caches_untouched(impl) -> None:
    case = make_paged(35, seed=9)
    k_before, v_before = case.k_cache.copy(), case.v_cache.copy()
    impl.paged_attention(*case.args())
    changed = int((case.k_cache != k_before).sum() + (case.v_cache != v_before).sum())
    assert changed == 0, (
        f"paged_attention reads the caches; it must not write to them ({changed} values changed)"
    )


def test_course_worked_example_three_tokens(impl) -> None:
    # The Phase 00 guide's example: q = [1, 0]; keys [1,0], [0,1], [1,0]; values [10,0], [0,10],
    # [5,5]. Here it is paged: blocks of 2, table [3, 1], the third token alone in block 1.
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])[:, None, :]
    values = np.array([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])[:, None, :]
    case = make_paged(3, block_size=2, num_heads=1, num_kv_heads=1, head_dim=2, num_blocks=4,
                      table=[3, 1])
    rows = slots_of([3, 1], 2, 0, 3)
    case.k_cache[rows], case.v_cache[rows] = keys, values
    q = np.array([[1.0, 0.0]])
    out = impl.paged_attention(q, case.k_cache, case.v_cache, case.table, 3, 2)[0]
    # Scores 1, 0, 1 scaled by 1/sqrt(2): weights w, 1 - 2w, w with w = e^s / (2 e^s + 1).
    e = np.exp(1.0 / np.sqrt(2.0))
    w = e / (2.0 * e + 1.0)
    assert_close(out, [15.0 * w, 10.0 - 15.0 * w], cause="float64-reordered",
                 what="the worked example's output")
    weights = (round(out[0] / 15.0, 4), round(1.0 - 2.0 * out[0] / 15.0, 4))
    assert weights == (0.4011, 0.1978), (
        f"token 3 attends 0.4011 / 0.1978 / 0.4011 to tokens 1 / 2 / 3; got {weights}"
    )
    assert np.round(out).tolist() == [6.0, 4.0], f"the output is about [6, 4], got {out.tolist()}"


# --- speed (timed only by pytest-benchmark; with --katas-speed, [speed] budget applies) --------


def test_speed_one_decode_step_over_a_1k_token_context(kata_bench) -> None:
    rng = np.random.default_rng(11)
    block_size, num_blocks, kv_heads, head_dim = 16, 96, 4, 64
    table = rng.permutation(np.arange(1, num_blocks))[:64]  # 1,024 tokens, shuffled blocks
    k_cache = rng.normal(size=(num_blocks * block_size, kv_heads, head_dim))
    v_cache = rng.normal(size=(num_blocks * block_size, kv_heads, head_dim))
    q = rng.normal(size=(16, head_dim))  # 16 query heads over 4 KV heads (GQA)
    # The timed output is checked with the same tolerance as the correctness tests: a different
    # but correct summation order may differ from the reference in the last bit.
    kata_bench(lambda m: m.paged_attention(q, k_cache, v_cache, table, 1000, block_size),
               same=lambda yours, ref: assert_close(yours, ref, cause=SAME_ORDER,
                                                    what="timed paged attention"))
