"""Spec for kata 04-04: split the keys, summarise each range, merge the summaries, divide once.

A summary ``(m, denom, acc)`` of a key range is its largest score, the sum of
``exp(score - m)`` and those weights times the values, undivided. Partitioned attention must
equal dense attention for any number of partitions, any merge order and any tree of merges.

Why 1e-12: dense and partitioned attention add the same float64 terms in a different order, which
moves the result by about 1e-16 at these sizes. The bound is the course's, four orders of magnitude
above rounding, so a failure is a wrong weight, never rounding.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.attention import per_head_backend, row_by_row
from pytest_vllm_katas import assert_close, assert_same_outputs, expect_raises

pytestmark = pytest.mark.cpu_ok

# The course's bound for partitioned vs dense; see the module docstring for why it is fair.
EXACT = "float64-same-order"
HEAD_DIM = 16


# -- oracles and builders (independent of the code under test) ---------------------------------


def scores_of(q: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (K @ q) / np.sqrt(q.shape[0])


def dense_attention(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    s = scores_of(q, K)
    w = np.exp(s - s.max())
    return (w @ V) / w.sum()


def make_qkv(n: int, seed: int, d: int = HEAD_DIM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), rng.standard_normal((n, d)), rng.standard_normal((n, d))


def with_scores(scores: np.ndarray, seed: int, d: int = HEAD_DIM):  # type: ignore[no-untyped-def]
    """q, K, V whose scores ``k_i . q / sqrt(d)`` are exactly ``scores`` (q points along axis 0
    with length sqrt(d) = 4, a power of two, so no rounding creeps in)."""
    rng = np.random.default_rng(seed)
    q = np.zeros(d)
    q[0] = np.sqrt(d)
    K = rng.standard_normal((len(scores), d))
    K[:, 0] = scores
    return q, K, rng.standard_normal((len(scores), d))


def as_summary(summary: object, d: int, what: str) -> tuple[float, float, np.ndarray]:
    """Unpack a summary, checking its shape first, so a wrong shape is a message."""
    assert isinstance(summary, (tuple, list)) and len(summary) == 3, (
        f"{what} must be a summary: a tuple (m, denom, acc); got {type(summary).__name__} "
        f"{summary!r:.80}"
    )
    m, denom, acc = summary
    acc = np.asarray(acc)
    assert np.ndim(m) == 0 and np.ndim(denom) == 0 and acc.shape == (d,), (
        f"{what}: m and denom are numbers and acc is a vector of the value width ({d},); got "
        f"m {np.shape(m)}, denom {np.shape(denom)}, acc {acc.shape}"
    )
    return float(m), float(denom), acc


def summaries_of(impl, q, K, V, cuts):  # type: ignore[no-untyped-def]
    """The learner's summaries of the ranges between consecutive cut points."""
    bounds = [0, *cuts, len(K)]
    return [impl.attend_partial(q, K[a:b], V[a:b]) for a, b in itertools.pairwise(bounds)]


def check_output(got: object, expected: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert np.isfinite(got).all(), (
        f"{what}: {int((~np.isfinite(got)).sum())} of {got.size} outputs are inf or NaN"
    )
    assert_close(got, expected, cause=EXACT, what=what)


# -- the summary -------------------------------------------------------------------------------


def test_attend_partial_returns_the_unnormalized_summary(impl) -> None:
    q, K, V = make_qkv(9, seed=1)
    m, denom, acc = as_summary(impl.attend_partial(q, K, V), HEAD_DIM, "attend_partial(q, K, V)")
    s = scores_of(q, K)
    assert_close(m, s.max(), cause=EXACT,
                 what="m = the largest scaled score k.q / sqrt(d) of the range")
    weights = np.exp(s - s.max())
    assert_close(denom, weights.sum(), cause=EXACT,
                 what="denom = sum of exp(score - m) (not 1: the summary is never normalised)")
    assert_close(acc, weights @ V, cause=EXACT,
                 what="acc = sum of exp(score - m) * v, undivided (dividing here loses the "
                      "weight the merge needs)")


def test_one_partition_is_just_attention(impl) -> None:
    q, K, V = make_qkv(37, seed=2)
    expected = dense_attention(q, K, V)
    check_output(impl.finalize(impl.attend_partial(q, K, V)), expected,
                 "finalize(attend_partial(q, K, V)) over all 37 keys")
    check_output(impl.partitioned_attention(q, K, V, 1), expected,
                 "partitioned_attention with 1 partition")


# -- any number of partitions --------------------------------------------------------------------


@pytest.mark.parametrize("num_partitions", [2, 3, 7, 32, 100])
def test_any_partition_count_matches_dense(impl, num_partitions: int) -> None:
    # 211 keys (a prime): no partition count divides it, so the parts differ in size.
    q, K, V = make_qkv(211, seed=3)
    q *= 3.0  # peaked weights: partitions' maxima differ by several units
    check_output(impl.partitioned_attention(q, K, V, num_partitions), dense_attention(q, K, V),
                 f"{num_partitions} partitions of 211 keys vs dense attention")


@pytest.mark.parametrize(("num_keys", "num_partitions"), [(5, 8), (13, 100), (1, 4)])
def test_more_partitions_than_keys(impl, num_keys: int, num_partitions: int) -> None:
    # np.array_split hands back empty parts once there are more parts than keys: the GPU's
    # grid sized for the longest sequence, running on a short one.
    q, K, V = make_qkv(num_keys, seed=4)
    got = impl.partitioned_attention(q, K, V, num_partitions)
    check_output(got, dense_attention(q, K, V),
                 f"{num_keys} keys in {num_partitions} partitions ({num_partitions - num_keys} "
                 "of them empty: skip them, they must neither crash nor add NaN)")


def test_uneven_partitions_match_dense(impl) -> None:
    # Any cut points, not only array_split's: ranges of 1 key, long ranges, empty ranges.
    q, K, V = make_qkv(60, seed=5)
    q *= 2.0
    expected = dense_attention(q, K, V)
    rng = np.random.default_rng(6)
    for trial in range(20):
        cuts = sorted(rng.integers(0, 61, size=int(rng.integers(1, 12))).tolist())
        merged = impl.merge_partials(summaries_of(impl, q, K, V, cuts))
        check_output(impl.finalize(merged), expected,
                     f"trial {trial}: summaries of the ranges cut at {cuts}, merged")


# -- the merge ---------------------------------------------------------------------------------


def wide_scores() -> np.ndarray:
    # Eight ranges of 6 keys whose maxima lie far apart (-400 .. 400, more than exp's float64
    # range of 709): merging must rescale to the largest max, wherever that range sits.
    rng = np.random.default_rng(7)
    offsets = [-400.0, 0.0, 398.0, -150.0, 400.0, 397.5, 20.0, -390.0]
    return np.concatenate([off + rng.standard_normal(6) for off in offsets])


ORDER_CASES = [
    pytest.param("typical", id="typical_scores"),
    pytest.param("wide", id="maxima_400_apart"),
]


@pytest.mark.parametrize("case", ORDER_CASES)
def test_merge_is_order_invariant(impl, case: str) -> None:
    if case == "typical":
        q, K, V = make_qkv(48, seed=8)
        q *= 2.0
    else:
        q, K, V = with_scores(wide_scores(), seed=8)
    parts = summaries_of(impl, q, K, V, list(range(6, 48, 6)))
    expected = dense_attention(q, K, V)
    rng = np.random.default_rng(9)
    orders = {"as split": list(range(8)), "reversed": list(range(7, -1, -1))}
    orders.update({f"shuffle {i}": rng.permutation(8).tolist() for i in range(5)})
    for name, order in orders.items():
        merged = impl.merge_partials([parts[i] for i in order])
        check_output(impl.finalize(merged), expected,
                     f"8 summaries merged in order {order} ({name}); thread blocks finish in any "
                     "order, so the merge must rescale to the largest max, not the first")


def test_merge_is_hierarchical(impl) -> None:
    # Merging merges is attending over the union: (a b c)(d e f g)(h i j k l) and a balanced
    # tree of pairs give the summary of all 60 keys, which attend_partial computes directly.
    q, K, V = make_qkv(60, seed=10)
    q *= 2.0
    cuts = [5, 9, 14, 22, 30, 31, 40, 46, 50, 55, 58]
    leaves = summaries_of(impl, q, K, V, cuts)
    direct = as_summary(impl.attend_partial(q, K, V), HEAD_DIM, "attend_partial over all keys")
    groups = [impl.merge_partials(leaves[0:3]), impl.merge_partials(leaves[3:7]),
              impl.merge_partials(leaves[7:12])]
    level = leaves
    while len(level) > 1:  # balanced tree: merge neighbours pairwise (at most 4 levels)
        level = [impl.merge_partials(level[i:i + 2]) for i in range(0, len(level), 2)]
    for name, summary in (("merge of 3 group merges", impl.merge_partials(groups)),
                          ("balanced tree of pairwise merges", level[0])):
        m, denom, acc = as_summary(summary, HEAD_DIM, name)
        assert m == direct[0], (
            f"{name}: the merged m must be the largest score of all 60 keys ({direct[0]:.6f}), "
            f"got {m:.6f}"
        )
        assert_close(denom, direct[1], cause=EXACT,
                     what=f"{name}: denom (a merge returns a summary to merge again, so its "
                          "denom must be the union's, not 1)")
        assert_close(acc, direct[2], cause=EXACT, what=f"{name}: acc")
        check_output(impl.finalize(summary), dense_attention(q, K, V),
                     f"{name}, finalized, vs dense attention")


EXTREME_CASES = [
    # The course's ~200 logit. exp(200) = 7.2e86 is finite in float64 (the overflow threshold
    # is ln(1.8e308) = 709.8), so this case alone cannot tell a shifted exp from an unshifted one.
    pytest.param(200.0, id="course_logit_200"),
    # Past the threshold: exp(1000) is inf in float64, so only a max-shifted exp survives.
    pytest.param(1000.0, id="logit_1000_overflows_exp"),
]


@pytest.mark.parametrize("big", EXTREME_CASES)
def test_extreme_scores_do_not_overflow(impl, big: float) -> None:
    # 40 ordinary scores in 5 partitions; partition 3 holds big and big - 1, partition 4 holds
    # big - 0.5, so the output is a real blend of three values across two partitions.
    scores = np.random.default_rng(11).standard_normal(40)
    scores[[26, 29, 35]] = big, big - 1.0, big - 0.5
    q, K, V = with_scores(scores, seed=12)
    got = impl.partitioned_attention(q, K, V, 5)
    got = np.asarray(got)
    assert got.shape == (HEAD_DIM,) and np.isfinite(got).all(), (
        f"scores of {big:g} in partitions 3 and 4: the output must be finite; got "
        f"{int((~np.isfinite(got)).sum()) if got.shape == (HEAD_DIM,) else got.shape} "
        f"non-finite values. Subtract each range's max before exp, and rescale with "
        f"exp(m - m_max), never a positive exponent"
    )
    check_output(got, dense_attention(q, K, V), f"scores of {big:g} in 5 partitions")


# -- the empty range and bad input ---------------------------------------------------------------


def test_empty_key_range_is_the_merge_identity(impl) -> None:
    q, K, V = make_qkv(10, seed=13)
    empty = as_summary(impl.attend_partial(q, K[:0], V[:0]), HEAD_DIM,
                       "attend_partial over an empty range")
    assert empty[0] == -np.inf and empty[1] == 0.0 and not empty[2].any(), (
        f"the summary of no keys is (m=-inf, denom=0, acc=zeros): the merge's identity; got "
        f"m={empty[0]}, denom={empty[1]}, acc with {int(np.count_nonzero(empty[2]))} nonzeros"
    )
    whole = as_summary(impl.attend_partial(q, K, V), HEAD_DIM, "attend_partial over 10 keys")
    for name, parts in (("empty then whole", [empty, whole]), ("whole then empty", [whole, empty]),
                        ("empty, whole, empty", [empty, whole, empty])):
        m, denom, acc = as_summary(impl.merge_partials(parts), HEAD_DIM, name)
        assert m == whole[0] and denom == whole[1] and np.array_equal(acc, whole[2]), (
            f"merging with the empty summary must change nothing ({name}): m {m} vs {whole[0]}, "
            f"denom {denom} vs {whole[1]}, acc off by {np.abs(acc - whole[2]).max():.3g}"
        )
    m, denom, acc = as_summary(impl.merge_partials([empty, empty]), HEAD_DIM,
                               "merge of two empty summaries")
    assert m == -np.inf and denom == 0.0 and not np.isnan(acc).any() and not acc.any(), (
        f"two empty ranges merge into the empty summary (-inf, 0, zeros), with no NaN: "
        f"exp(-inf - (-inf)) is NaN, so all-empty needs its own case; got m={m}, denom={denom}, "
        f"acc={acc[:3]}..."
    )
    with expect_raises(ValueError, "the empty summary has denom 0: there is no output to give"):
        impl.finalize(empty)


@pytest.mark.parametrize("num_partitions", [0, -2])
def test_bad_arguments_are_rejected(impl, num_partitions: int) -> None:
    q, K, V = make_qkv(6, seed=14)
    with expect_raises(ValueError, f"num_partitions={num_partitions}: there must be at least one",
                       match="num_partitions"):
        impl.partitioned_attention(q, K, V, num_partitions)
    with expect_raises(ValueError, "attention over zero keys has no softmax to take"):
        impl.partitioned_attention(q, K[:0], V[:0], 3)


# -- cascade: a shared prefix ------------------------------------------------------------------


def test_cascade_prefix_and_suffix_summaries_merge_to_the_full_context(impl) -> None:
    # The course's cascade shape: 8 requests share a 512-token prefix, each adds 64 tokens of
    # its own. Each request's answer is the merge of its prefix summary and its suffix summary.
    # (A cascade kernel reads the prefix rows once for all 8 queries: 512 + 8 * 64 = 1,024 key
    # rows instead of 8 * 576 = 4,608, saving 7 * 512 = 3,584.)
    rng = np.random.default_rng(15)
    d, prefix_len, suffix_len, requests = 8, 512, 64, 8
    K_prefix, V_prefix = rng.standard_normal((prefix_len, d)), rng.standard_normal((prefix_len, d))
    for r in range(requests):
        q = 2.0 * rng.standard_normal(d)
        K_own, V_own = rng.standard_normal((suffix_len, d)), rng.standard_normal((suffix_len, d))
        merged = impl.merge_partials([impl.attend_partial(q, K_prefix, V_prefix),
                                      impl.attend_partial(q, K_own, V_own)])
        check_output(impl.finalize(merged),
                     dense_attention(q, np.concatenate([K_prefix, K_own]),
                                     np.concatenate([V_prefix, V_own])),
                     f"request {r}: shared-prefix summary merged with its own 64-token suffix")


# -- the engine on your split-KV attention -------------------------------------------------------

PROMPTS = ["You are terse. Why?", "You are terse. Hi", "S" * 13]
MAX_STEPS = 200


def split_kv_row(impl, num_partitions: int, seen: list[int]):  # type: ignore[no-untyped-def]
    """A mini_vllm RowAttention on the learner's partitioned_attention: gather the request's
    keys and values through the block table, then split them into ``num_partitions`` ranges."""

    def attend_row(q, key_cache, value_cache, block_table, seq_len):  # type: ignore[no-untyped-def]
        keys = key_cache[block_table].reshape(-1, key_cache.shape[-1])[:seq_len]
        values = value_cache[block_table].reshape(-1, value_cache.shape[-1])[:seq_len]
        seen.append(seq_len)
        return impl.partitioned_attention(q, keys, values, num_partitions)

    return attend_row


def run_engine(model, attn_backend=None) -> list[list[int]]:  # type: ignore[no-untyped-def]
    engine = LLMEngine(model=model, attn_backend=attn_backend, block_size=4, num_blocks=64,
                       max_num_batched_tokens=16)
    params = [SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=8, temperature=0.8, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)]
    ids = [engine.add_request(p, sp) for p, sp in zip(PROMPTS, params, strict=True)]
    done: dict[str, list[int]] = {}
    for _ in range(MAX_STEPS):
        if not engine.has_unfinished_requests():
            break
        done.update({r.request_id: list(r.output_token_ids) for r in engine.step()})
    assert not engine.has_unfinished_requests(), f"the engine did not finish in {MAX_STEPS} steps"
    return [done[rid] for rid in ids]


@pytest.mark.parametrize("num_partitions", [pytest.param(3, id="3_partitions"),
                                            pytest.param(32, id="32_partitions")])
def test_your_split_kv_drives_a_real_model(impl, tiny_llama, num_partitions: int) -> None:
    # mini_vllm's seeded tiny Llama (float64) with every attention row computed by your
    # partitioned_attention, per request and head: the tokens must be the stock engine's.
    seen: list[int] = []
    backend = per_head_backend(row_by_row(split_kv_row(impl, num_partitions, seen)))
    mine = run_engine(tiny_llama, backend)
    stock = run_engine(tiny_llama)
    assert_same_outputs(stock, mine, labels=("stock attention", "your split-KV attention"))
    assert seen and min(seen) < num_partitions, (
        "workload check: some rows should attend to fewer keys than there are partitions"
    )
