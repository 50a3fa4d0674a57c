"""Spec for kata 04-03: a prefill chunk is M queries whose causal prefixes end at their own
positions; chunked prefill is a prefill whose queries do not start at zero.

Every expected value comes from this file's own per-row oracle (a causal prefix sliced out of
logically ordered K/V, a max-shifted softmax), never from the code under test. One head,
``head_dim`` 16 unless a test says otherwise, blocks of 4; physical block ids avoid 0 (mini_vllm's
null block) and are scattered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.attention import per_head_backend
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

BLOCK_SIZE = 4
HEAD_DIM = 16
# Paged (streamed block by block) vs the oracle (one softmax over the whole prefix): the same
# numbers summed in a different order, so only the last bits may move (~1e-15 at these sizes).
REORDERED = "float64-reordered"
# The same row computed twice from the same cache (chunked vs one-shot): a row's arithmetic does
# not depend on which chunk it came in, so a per-row kernel is bit-identical; 1e-12 still
# leaves room for a vectorised kernel whose reduction order follows the chunk's shape.
SAME_ORDER = "float64-same-order"


# -- the oracle and builders (independent of the code under test) -----------------------------


def attend(q: np.ndarray, keys: np.ndarray, values: np.ndarray, scale: float | None = None):
    scores = (keys @ q) * (1.0 / np.sqrt(len(q)) if scale is None else scale)
    weights = np.exp(scores - scores.max())
    return (weights @ values) / weights.sum()


def oracle(Q: np.ndarray, K: np.ndarray, V: np.ndarray, start_pos: int) -> np.ndarray:
    """Row ``i`` (position ``start_pos + i``) over positions ``0 .. start_pos + i``."""
    return np.array([attend(q, K[: start_pos + i + 1], V[: start_pos + i + 1])
                     for i, q in enumerate(Q)])


def write(k_cache: np.ndarray, v_cache: np.ndarray, table, first: int, K: np.ndarray,
          V: np.ndarray) -> None:
    """Store the K/V of positions ``first .. first + len(K) - 1`` where the table puts them
    (what the runner's slot mapping does before attention runs)."""
    block_size = k_cache.shape[1]
    for offset, (k, v) in enumerate(zip(K, V, strict=True)):
        pos = first + offset
        k_cache[table[pos // block_size], pos % block_size] = k
        v_cache[table[pos // block_size], pos % block_size] = v


@dataclass
class Chunk:
    """``M`` queries at positions ``start_pos ..``; the cache holds positions ``0 .. start_pos
    + M - 1`` (K/V the truth, in logical order) and ``fill`` in every other slot."""

    Q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    k_cache: np.ndarray
    v_cache: np.ndarray
    table: list[int]
    start_pos: int

    def args(self) -> tuple:
        return self.Q, self.k_cache, self.v_cache, self.table, self.start_pos

    def expected(self) -> np.ndarray:
        return oracle(self.Q, self.K, self.V, self.start_pos)


def make_chunk(num_tokens: int, start_pos: int, table: list[int], *, seed: int,
               block_size: int = BLOCK_SIZE, head_dim: int = HEAD_DIM, num_blocks: int = 12,
               fill: float = 0.0) -> Chunk:
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((num_tokens, head_dim))
    V = rng.standard_normal((num_tokens, head_dim))
    Q = rng.standard_normal((num_tokens - start_pos, head_dim))
    shape = (num_blocks, block_size, head_dim)
    k_cache, v_cache = np.full(shape, fill), np.full(shape, fill)
    write(k_cache, v_cache, table, 0, K, V)
    return Chunk(Q, K, V, k_cache, v_cache, list(table), start_pos)


def checked(got, rows: int, head_dim: int = HEAD_DIM, who: str = "paged_causal_prefill_attention"):
    got = np.asarray(got)
    assert got.shape == (rows, head_dim), (
        f"{who} returns one row per query, [M, head_dim] = ({rows}, {head_dim}); got {got.shape}"
    )
    return got


def run_paged(impl, chunk: Chunk) -> np.ndarray:
    return checked(impl.paged_causal_prefill_attention(*chunk.args()), len(chunk.Q),
                   chunk.Q.shape[1])


def explain_row(row: np.ndarray, q: np.ndarray, K: np.ndarray, V: np.ndarray, pos: int) -> str:
    """What a wrong row equals instead, when it equals something simple."""
    if not np.isfinite(row).all():
        return ("; it is not finite: an empty prefix (0 / 0: a row sees at least itself), a "
                "read past the context (those slots may hold NaN) or an exp() overflow (no max "
                "shift)")
    for n in range(1, len(K) + 1):
        if n != pos + 1 and np.allclose(row, attend(q, K[:n], V[:n]), rtol=0, atol=1e-9):
            if n == pos:
                return f"; it equals attention over 0..{pos - 1}: the row left out its own token"
            if n < pos:
                return (f"; it equals attention over 0..{n - 1}: the prefix stops short (is "
                        f"start_pos added to the row's position?)")
            return f"; it equals attention over 0..{n - 1}: it saw {n - pos - 1} future token(s)"
    for first in range(1, pos + 1):
        if np.allclose(row, attend(q, K[first:pos + 1], V[first:pos + 1]), rtol=0, atol=1e-9):
            return (f"; it equals attention over {first}..{pos} only: the cached positions "
                    f"before the chunk were skipped")
    if np.allclose(row, attend(q, K[:pos + 1], V[:pos + 1], scale=1.0), rtol=0, atol=1e-9):
        return "; it equals attention without the 1/sqrt(head_dim) scale"
    return ""


def assert_rows(got: np.ndarray, Q, K, V, start_pos: int, what: str,
                cause: str = REORDERED) -> None:
    """Row by row against the oracle; the message names the row, its position and prefix."""
    expected = oracle(Q, K, V, start_pos)
    for i in range(len(Q)):
        pos = start_pos + i
        try:
            assert_close(got[i], expected[i], cause=cause,
                         what=f"{what}: row {i} (position {pos}, attends over 0..{pos})")
        except AssertionError as error:
            raise AssertionError(f"{error}{explain_row(got[i], Q[i], K, V, pos)}") from None


# -- the course's four --------------------------------------------------------------------------


def test_full_prefill_from_position_zero(impl) -> None:
    # 13 tokens in 4 blocks of 4: three full blocks and one holding a single token.
    chunk = make_chunk(13, 0, [6, 2, 9, 4], seed=1)
    got = run_paged(impl, chunk)
    try:
        assert_close(got[0], chunk.V[0], cause=SAME_ORDER,
                     what="row 0 sits at position 0 and sees exactly one token, itself: its "
                          "output is V[0]")
    except AssertionError as error:
        raise AssertionError(
            f"{error}{explain_row(got[0], chunk.Q[0], chunk.K, chunk.V, 0)}") from None
    assert_rows(got, chunk.Q, chunk.K, chunk.V, 0, "full prefill of 13 tokens from position 0")


def test_mid_sequence_chunk(impl) -> None:
    # A 9-token cache; the chunk's queries are positions 5..8, starting mid-block (block 1,
    # offset 1) and ending alone in block 2.
    chunk = make_chunk(9, 5, [3, 7, 1], seed=2)
    got = run_paged(impl, chunk)
    assert_rows(got, chunk.Q, chunk.K, chunk.V, 5,
                "chunk of 4 queries at positions 5..8 (start_pos 5) over a 9-token cache")


def test_chunked_equals_one_shot(impl) -> None:
    # 12 positions prefilled in one chunk, then again as 5 + 7, each chunk's K/V written just
    # before its attention runs (so the 5-chunk runs while positions 5..11 are not yet written).
    rng = np.random.default_rng(3)
    K, V, Q = (rng.standard_normal((12, HEAD_DIM)) for _ in range(3))
    table = [5, 2, 8]
    shape = (10, BLOCK_SIZE, HEAD_DIM)

    k_cache, v_cache = np.zeros(shape), np.zeros(shape)
    write(k_cache, v_cache, table, 0, K, V)
    one_shot = checked(impl.paged_causal_prefill_attention(Q, k_cache, v_cache, table, 0), 12)

    k_cache, v_cache = np.zeros(shape), np.zeros(shape)
    write(k_cache, v_cache, table, 0, K[:5], V[:5])
    first = checked(impl.paged_causal_prefill_attention(Q[:5], k_cache, v_cache, table, 0), 5)
    write(k_cache, v_cache, table, 5, K[5:], V[5:])
    second = checked(impl.paged_causal_prefill_attention(Q[5:], k_cache, v_cache, table, 5), 7)
    chunked = np.concatenate([first, second])

    for pos in range(12):
        chunk = "first chunk (start_pos 0)" if pos < 5 else "second chunk (start_pos 5)"
        try:
            assert_close(chunked[pos], one_shot[pos], cause=SAME_ORDER,
                         what=f"position {pos}: chunked (5 + 7, here in the {chunk}) vs one-shot")
        except AssertionError as error:
            raise AssertionError(
                f"{error}; a query's output depends on its position and the cache, never on "
                f"where its chunk starts{explain_row(chunked[pos], Q[pos], K, V, pos)}"
            ) from None


def test_causality_future_tokens_are_invisible(impl) -> None:
    chunk = make_chunk(8, 0, [3, 6], seed=4)
    chunk.Q[7] = np.abs(chunk.Q[7])  # the last query scores the loud key high
    before = run_paged(impl, chunk).copy()
    # A "loud future": the last token's K and V become 1e3 in every component.
    chunk.K[7] = chunk.V[7] = 1e3
    write(chunk.k_cache, chunk.v_cache, chunk.table, 7, chunk.K[7:], chunk.V[7:])
    after = run_paged(impl, chunk)
    leaked = [i for i in range(7) if not np.array_equal(after[i], before[i])]
    assert not leaked, (
        f"position 7 is in the future of rows 0..6, so its K/V must not reach them; after "
        f"setting it to 1e3, rows {leaked} changed (max change "
        f"{np.abs(after[:7] - before[:7]).max():.3g}). Row i reads positions 0..start_pos + i "
        f"only, even though the whole chunk's K/V is already in the cache"
    )
    assert_rows(after[7:], chunk.Q[7:], chunk.K, chunk.V, 7,
                "the last row, which does see the loud token (its own)")


# -- ours -----------------------------------------------------------------------------------------


def test_poisoned_cache_beyond_the_context_is_never_read(impl) -> None:
    # Context 0..9 (start_pos 6, M 4) in blocks 7, 2, 5; block 5 has two valid slots. Every
    # other slot holds NaN: the rest of block 5, the spare block 9 the table lists after the
    # context, and every block the table does not list.
    chunk = make_chunk(10, 6, [7, 2, 5, 9], seed=5, fill=np.nan)
    assert np.isnan(chunk.k_cache[5, 2:]).all() and np.isnan(chunk.k_cache[9]).all(), "premise"
    got = run_paged(impl, chunk)
    bad = [i for i in range(4) if not np.isfinite(got[i]).all()]
    assert not bad, (
        f"rows {bad} are NaN: slots past the context (position start_pos + M - 1 = 9) hold NaN "
        f"here and must never be read, not even multiplied by a zero weight: read exactly the "
        f"valid rows of the last block and no block after it"
    )
    assert_rows(got, chunk.Q, chunk.K, chunk.V, 6, "chunk over a cache poisoned past position 9")


@pytest.mark.parametrize(("start_pos", "rows"), [
    pytest.param(8, 5, id="starts_at_a_block_start-positions_8_to_12"),
    pytest.param(4, 4, id="fills_exactly_one_block-positions_4_to_7"),
])
def test_chunk_on_a_block_boundary(impl, start_pos: int, rows: int) -> None:
    chunk = make_chunk(start_pos + rows, start_pos, [4, 10, 1, 6], seed=6 + start_pos)
    got = run_paged(impl, chunk)
    assert_rows(got, chunk.Q, chunk.K, chunk.V, start_pos,
                f"chunk at positions {start_pos}..{start_pos + rows - 1} (blocks of 4)")


def test_one_row_is_a_decode_step(impl) -> None:
    # Decode is the M = 1 prefill: the newest token (position 10) over all 11 cached tokens.
    chunk = make_chunk(11, 10, [2, 8, 5], seed=7)
    got = run_paged(impl, chunk)
    assert_close(got[0], attend(chunk.Q[0], chunk.K, chunk.V), cause=REORDERED,
                 what="one query at position 10 attends over all 11 cached tokens"
                      + explain_row(got[0], chunk.Q[0], chunk.K, chunk.V, 10))


def test_scattered_physical_blocks_do_not_change_the_result(impl) -> None:
    first = make_chunk(14, 3, [1, 2, 3, 4], seed=8)
    second = make_chunk(14, 3, [11, 4, 7, 2], seed=8)
    assert np.array_equal(first.K, second.K), "premise: the same logical tokens"
    a, b = run_paged(impl, first), run_paged(impl, second)
    assert_rows(a, first.Q, first.K, first.V, 3,
                "tokens in physical blocks [1, 2, 3, 4] (logical block b is block_table[b])")
    assert np.array_equal(a, b), (
        f"the same tokens in physical blocks [1, 2, 3, 4] and [11, 4, 7, 2] must give identical "
        f"rows: logical block b lives in physical block block_table[b]. Max difference "
        f"{np.abs(a - b).max():.3g}"
    )


def random_cases():
    rng = np.random.default_rng(2024)
    for case in range(30):
        block_size = int(rng.choice([1, 2, 3, 4, 5, 8, 16]))
        head_dim = int(rng.choice([1, 2, 8, 16]))
        start_pos = int(rng.integers(0, 41))
        rows = int(rng.integers(1, 17))
        needed = -(-(start_pos + rows) // block_size)
        spare = int(rng.integers(0, 3))  # table entries past the context
        num_blocks = needed + spare + 4
        table = [int(b) for b in rng.permutation(np.arange(1, num_blocks))[: needed + spare]]
        yield case, make_chunk(start_pos + rows, start_pos, table, seed=100 + case,
                               block_size=block_size, head_dim=head_dim,
                               num_blocks=num_blocks, fill=np.nan)


def test_matches_the_oracle_on_random_chunks(impl) -> None:
    for case, chunk in random_cases():
        label = (f"random case {case} (block_size {chunk.k_cache.shape[1]}, head_dim "
                 f"{chunk.Q.shape[1]}, start_pos {chunk.start_pos}, M {len(chunk.Q)}, table "
                 f"{chunk.table})")
        got = run_paged(impl, chunk)
        assert_rows(got, chunk.Q, chunk.K, chunk.V, chunk.start_pos, label)
        dense = checked(impl.dense_causal_attention(chunk.Q, chunk.K, chunk.V, chunk.start_pos),
                        len(chunk.Q), chunk.Q.shape[1], who="dense_causal_attention")
        assert_rows(dense, chunk.Q, chunk.K, chunk.V, chunk.start_pos,
                    f"dense_causal_attention, {label}")


def test_large_scores_stay_finite(impl) -> None:
    chunk = make_chunk(20, 6, [3, 9, 1, 5, 7], seed=9)
    chunk.Q *= 300.0  # scores in the hundreds to thousands: exp() overflows unless shifted
    got = run_paged(impl, chunk)
    finite = bool(np.isfinite(got).all())
    assert finite, (
        f"scores in the thousands: every exponent must be <= 0 (subtract the running max), or "
        f"exp overflows; {int((~np.isfinite(got)).sum())} of {got.size} outputs are inf or NaN"
    )
    assert_rows(got, chunk.Q, chunk.K, chunk.V, 6, "chunk with scores in the thousands")


def test_the_caches_are_read_not_written(impl) -> None:
    chunk = make_chunk(10, 4, [3, 1, 6], seed=10)
    k_before, v_before = chunk.k_cache.copy(), chunk.v_cache.copy()
    run_paged(impl, chunk)
    changed = int((chunk.k_cache != k_before).sum() + (chunk.v_cache != v_before).sum())
    assert changed == 0, f"attention reads the caches; {changed} cache values changed"


# -- the dense reference ------------------------------------------------------------------------


@pytest.mark.parametrize(("num_tokens", "start_pos"), [
    pytest.param(13, 0, id="full_prefill_13_tokens"),
    pytest.param(9, 5, id="mid_sequence_positions_5_to_8"),
    pytest.param(11, 10, id="one_row_decode"),
    pytest.param(30, 17, id="long_chunk"),
])
def test_dense_causal_attention_matches_the_oracle(impl, num_tokens: int, start_pos: int) -> None:
    chunk = make_chunk(num_tokens, start_pos, [1, 2, 3, 4, 5, 6, 7, 8], seed=num_tokens)
    got = checked(impl.dense_causal_attention(chunk.Q, chunk.K, chunk.V, start_pos),
                  len(chunk.Q), who="dense_causal_attention")
    assert_rows(got, chunk.Q, chunk.K, chunk.V, start_pos,
                f"dense_causal_attention, {num_tokens} tokens from start_pos {start_pos}")


def test_dense_future_tokens_are_invisible(impl) -> None:
    chunk = make_chunk(8, 0, [3, 6], seed=11)
    before = checked(impl.dense_causal_attention(chunk.Q, chunk.K, chunk.V, 0), 8,
                     who="dense_causal_attention").copy()
    # The loud last token (inside the chunk), then four more loud rows past the chunk: K and V
    # may be longer than the context.
    loud = np.full((5, HEAD_DIM), 1e3)
    K = np.concatenate([chunk.K[:7], loud])
    V = np.concatenate([chunk.V[:7], loud])
    after = checked(impl.dense_causal_attention(chunk.Q, K, V, 0), 8,
                    who="dense_causal_attention")
    leaked = [i for i in range(7) if not np.array_equal(after[i], before[i])]
    assert not leaked, (
        f"dense_causal_attention: row i sees K[:start_pos + i + 1] only; loud keys at position 7 "
        f"and past the chunk changed rows {leaked}"
    )
    assert_rows(after, chunk.Q, K, V, 0, "dense_causal_attention with loud future keys")


# -- errors ---------------------------------------------------------------------------------------


def test_negative_start_pos_is_rejected(impl) -> None:
    chunk = make_chunk(6, 2, [1, 2], seed=12)
    with expect_raises(ValueError, "a chunk cannot start before position 0", match="start_pos"):
        impl.paged_causal_prefill_attention(chunk.Q, chunk.k_cache, chunk.v_cache, chunk.table,
                                            -1)
    with expect_raises(ValueError, "a chunk cannot start before position 0", match="start_pos"):
        impl.dense_causal_attention(chunk.Q, chunk.K, chunk.V, -1)


def test_a_block_table_too_short_is_rejected(impl) -> None:
    # Positions 0..8 need 3 blocks of 4; a table of 2 holds only positions 0..7.
    chunk = make_chunk(9, 5, [3, 7, 1], seed=13)
    with expect_raises(ValueError, "positions 0..8 span 3 blocks of 4, the table lists 2",
                       match="block"):
        impl.paged_causal_prefill_attention(chunk.Q, chunk.k_cache, chunk.v_cache, [3, 7], 5)
    got = run_paged(impl, chunk)  # exactly enough blocks is fine
    assert_rows(got, chunk.Q, chunk.K, chunk.V, 5, "the same chunk with a table of 3 blocks")


def test_dense_with_too_few_keys_is_rejected(impl) -> None:
    chunk = make_chunk(9, 5, [3, 7, 1], seed=14)
    with expect_raises(ValueError, "4 queries from start_pos 5 need K and V for positions 0..8; "
                       "only 8 keys were given"):
        impl.dense_causal_attention(chunk.Q, chunk.K[:8], chunk.V[:8], 5)


# -- the engine -----------------------------------------------------------------------------------

SYSTEM = "You are terse. "  # 15 bytes: the second wave's prompts hit 3 cached blocks of 4


def run_engine(model, attn_backend=None) -> tuple[list[list[int]], int]:
    """A long prompt prefilled in chunks of 5 (chunks start mid-block), then two prompts that
    share its first 3 blocks (prefix-cache hits: their prefill starts at position 12), each
    decoding 6 tokens. Returns the tokens (prompt order) and the number of steps."""
    engine = LLMEngine(model=model, block_size=BLOCK_SIZE, num_blocks=64,
                       max_num_batched_tokens=16, long_prefill_token_threshold=5,
                       attn_backend=attn_backend)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    outputs: dict[str, list[int]] = {}
    ids = []
    for wave in ([SYSTEM + "Explain paging."], [SYSTEM + "Why?", SYSTEM + "Hi there"]):
        ids += [engine.add_request(prompt, params) for prompt in wave]
        for _ in range(100):  # bounded: a stuck engine fails here, not by hanging
            if not engine.has_unfinished_requests():
                break
            outputs.update({r.request_id: r.output_token_ids for r in engine.step()})
        assert not engine.has_unfinished_requests(), "the engine did not finish in 100 steps"
    return [outputs[i] for i in ids], engine.num_steps


def test_your_attention_drives_a_real_model(impl, tiny_llama) -> None:
    # mini_vllm's seeded tiny Llama (float64, 2 layers, 4 query heads over 2 KV heads) with your
    # function as its attention: one call per request, layer and head, on that head's slice of
    # the paged cache. The stock backend's tokens are the answer; there is no tolerance.
    calls: list[tuple[int, int]] = []

    def yours(Q, k_cache, v_cache, block_table, start_pos):  # type: ignore[no-untyped-def]
        calls.append((len(Q), start_pos))
        return impl.paged_causal_prefill_attention(Q, k_cache, v_cache, block_table, start_pos)

    mine, mine_steps = run_engine(tiny_llama, per_head_backend(yours))
    stock, steps = run_engine(tiny_llama)
    kinds = {
        "a chunk starting mid-block (chunked prefill)":
            any(m > 1 and s % BLOCK_SIZE for m, s in calls),
        "a chunk starting after a prefix-cache hit (start_pos 12)":
            any(m > 1 and s == 12 for m, s in calls),
        "a full prefill from position 0": any(m > 1 and s == 0 for m, s in calls),
        "one-row decodes": any(m == 1 for m, _ in calls),
    }
    missing = [kind for kind, seen in kinds.items() if not seen]
    assert not missing, f"workload premise: the engine never called your attention with {missing}"
    assert_same_outputs(stock, mine, labels=("stock attention", "your attention"))
    assert mine_steps == steps, f"same schedule expected: {steps} steps, yours took {mine_steps}"
