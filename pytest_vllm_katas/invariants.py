"""Invariant checkers shared by katas, mini_vllm's own tests and learners' code.

Pure functions: each returns ``None`` or raises ``AssertionError`` whose message says which rule
broke and where. They are duck-typed — a learner's ``BlockPool`` or scheduler is checked by the
same rules as mini_vllm's — and import nothing beyond the standard library, so importing this
module costs nothing.

Attribute names read (the mini_vllm / upstream vLLM names):

* block pool: ``free_queue`` (or ``free_block_queue``) with ``get_all_free_blocks()`` and
  ``num_free_blocks``; ``null_block``; ``cached_block_hash_to_block``; ``blocks`` when present
  (otherwise only blocks reachable from the free queue / index / given tables are checked);
  ``get_num_free_blocks()`` when present.
* block: ``block_id``, ``ref_cnt``, ``block_hash``, ``is_null``; ``prev_free``/``next_free`` when
  present.
* scheduler output: ``num_scheduled_tokens`` (dict id -> n) and ``scheduled_requests`` (rows).
* request: ``request_id``, ``num_computed_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "assert_same_outputs",
    "check_block_pool",
    "check_block_tables",
    "check_kv_covers_schedule",
    "check_scheduler_step",
]


def _fail(message: str) -> None:
    raise AssertionError(message)


def _free_queue(pool: Any) -> Any:
    for name in ("free_queue", "free_block_queue"):
        queue = getattr(pool, name, None)
        if queue is not None:
            return queue
    _fail("block pool has no free_queue (or free_block_queue) attribute")


def check_block_pool(pool: Any) -> None:
    """Raise AssertionError unless the pool's free queue, ref counts and cache index agree.

    Rules: every free-queue entry appears once, has ``ref_cnt == 0`` and is not the null block;
    the queue's links are consistent both ways; ``num_free_blocks`` (and ``get_num_free_blocks()``)
    equals the walked length; every non-null block with ``ref_cnt == 0`` is in the queue (I1,
    both directions); no ``ref_cnt`` is negative; every cache-index entry maps a hash to a
    non-null block that still carries that hash.
    """
    queue = _free_queue(pool)
    free = list(queue.get_all_free_blocks())
    free_ids = [b.block_id for b in free]
    if len(set(map(id, free))) != len(free):
        dupes = sorted({i for i in free_ids if free_ids.count(i) > 1})
        _fail(f"free queue holds blocks more than once: {dupes}")
    null = getattr(pool, "null_block", None)
    if null is not None:
        if not getattr(null, "is_null", True):
            _fail(f"null block {null.block_id} has is_null == False")
        if any(b is null for b in free):
            _fail(f"null block {null.block_id} is in the free queue; it must never be freed")
    for block in free:
        if block.ref_cnt != 0:
            _fail(f"block {block.block_id} is in the free queue with ref_cnt {block.ref_cnt} (I1)")
        if getattr(block, "is_null", False):
            _fail(f"null block {block.block_id} is in the free queue")
    for prev, nxt in zip(free, free[1:], strict=False):
        if hasattr(prev, "next_free") and (prev.next_free is not nxt or nxt.prev_free is not prev):
            _fail(
                f"free queue links broken between blocks {prev.block_id} and {nxt.block_id} "
                "(next_free/prev_free disagree)"
            )
    counted = getattr(queue, "num_free_blocks", len(free))
    if counted != len(free):
        _fail(f"free queue says num_free_blocks={counted} but holds {len(free)} blocks {free_ids}")
    if hasattr(pool, "get_num_free_blocks") and pool.get_num_free_blocks() != len(free):
        _fail(
            f"get_num_free_blocks() returned {pool.get_num_free_blocks()} but the free queue "
            f"holds {len(free)} blocks"
        )
    in_queue = {id(b) for b in free}
    for block in getattr(pool, "blocks", ()):
        if block.ref_cnt < 0:
            _fail(f"block {block.block_id} has negative ref_cnt {block.ref_cnt}")
        if block is null or getattr(block, "is_null", False):
            continue
        if block.ref_cnt == 0 and id(block) not in in_queue:
            _fail(f"block {block.block_id} has ref_cnt 0 but is not in the free queue (leaked, I1)")
    index = getattr(pool, "cached_block_hash_to_block", None)
    if index is None:
        return
    for block_hash, block in index.items():
        if getattr(block, "is_null", False):
            _fail(f"the null block is registered in the prefix-cache index under {block_hash!r}")
        if block.block_hash != block_hash:
            _fail(
                f"cache index maps hash {block_hash!r} to block {block.block_id}, which holds "
                f"hash {block.block_hash!r} (stale entry: evict must drop the index entry)"
            )


def check_block_tables(pool: Any, block_tables: Mapping[str, Sequence[Any]]) -> None:
    """Raise unless every block's ``ref_cnt`` equals the number of live tables holding it.

    ``block_tables`` maps request id to its blocks (``KVCacheManager.req_to_blocks``). Also
    checks that no table holds the null block or a block twice, and that no table holds a block
    sitting in the free queue. Blocks in no table must have ``ref_cnt == 0``.
    """
    holders: dict[int, list[str]] = {}
    blocks_by_id: dict[int, Any] = {}
    for rid, table in block_tables.items():
        seen: set[int] = set()
        for block in table:
            if getattr(block, "is_null", False):
                _fail(f"request {rid} holds the null block in its block table")
            if id(block) in seen:
                _fail(f"request {rid} holds block {block.block_id} twice")
            seen.add(id(block))
            holders.setdefault(id(block), []).append(rid)
            blocks_by_id[id(block)] = block
    for key, block in blocks_by_id.items():
        if block.ref_cnt != len(holders[key]):
            _fail(
                f"block {block.block_id} has ref_cnt {block.ref_cnt} but is held by "
                f"{len(holders[key])} request(s) {holders[key]}"
            )
    for block in getattr(pool, "blocks", ()):
        if id(block) not in holders and not getattr(block, "is_null", False) and block.ref_cnt:
            _fail(f"block {block.block_id} has ref_cnt {block.ref_cnt} but no request holds it")


def check_kv_covers_schedule(
    output: Any, block_tables: Mapping[str, Sequence[Any]], block_size: int
) -> None:
    """Raise unless every scheduled request has KV slots for the tokens it computes this step.

    Call it between ``schedule()`` and the step's ``update_from_output`` (while
    ``num_computed_tokens`` still counts the tokens computed *before* this step). A request
    scheduled for ``n`` tokens writes K/V for positions up to ``num_computed_tokens + n``, so its
    block table (``block_tables[request_id]``, e.g. ``KVCacheManager.req_to_blocks``) must hold
    at least ``ceil((num_computed_tokens + n) / block_size)`` blocks. A scheduler that forgets
    ``allocate_slots`` for a request computes into memory it never reserved; a toy model that
    never reads its KV would not notice, so this checks the reservation itself.
    """
    if block_size < 1:
        _fail(f"block_size must be >= 1, got {block_size}")
    counts: Mapping[str, int] = output.num_scheduled_tokens
    for request in getattr(output, "scheduled_requests", ()):
        rid = request.request_id
        n = counts.get(rid)
        if n is None:
            continue  # a rows/counts mismatch is check_scheduler_step's to report
        needed_tokens = request.num_computed_tokens + n
        needed_blocks = -(-needed_tokens // block_size)
        held = len(block_tables.get(rid, ()))
        if held < needed_blocks:
            _fail(
                f"request {rid} is scheduled for {n} tokens on top of num_computed_tokens="
                f"{request.num_computed_tokens}, so its KV must hold {needed_tokens} tokens "
                f"({needed_blocks} blocks of {block_size}), but its block table has {held} "
                f"block(s) ({held * block_size} slots): the scheduler computes tokens it never "
                "reserved KV slots for (a missing kv.allocate / allocate_slots call)"
            )


def check_scheduler_step(
    output: Any,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int | None = None,
    num_running: int | None = None,
    running_before: Sequence[str] | None = None,
    long_prefill_token_threshold: int = 0,
    lone_request_ignores_long_prefill_threshold: bool = False,
    num_requests_before: int | None = None,
) -> None:
    """Raise unless one ``schedule()`` result respects the budget and running-first order.

    * every scheduled count is >= 1 and their sum is <= ``max_num_batched_tokens``;
    * with ``long_prefill_token_threshold > 0``, no request gets more than the threshold —
      except, with ``lone_request_ignores_long_prefill_threshold`` (vLLM 0.32's rule, on under
      ``policy="vllm-0.32"``), in a step that began with ``num_requests_before`` (running plus
      waiting) at most 1: a lone request has nobody to starve and gets no cap;
    * ``num_running`` (``len(scheduler.running)`` after the step) is <= ``max_num_seqs``;
    * ``running_before`` (ids of ``scheduler.running`` *before* the step, in order): if anyone
      was admitted from the waiting queue this step, every request that was running and not
      preempted was scheduled, and all of them come before any admission in the row order.
    """
    if lone_request_ignores_long_prefill_threshold:
        if num_requests_before is None:
            raise TypeError("lone_request_ignores_long_prefill_threshold needs "
                            "num_requests_before (running + waiting before the step)")
        if num_requests_before <= 1:
            long_prefill_token_threshold = 0
    counts: Mapping[str, int] = output.num_scheduled_tokens
    for rid, n in counts.items():
        if n < 1:
            _fail(f"request {rid} scheduled for {n} tokens; scheduled requests get >= 1")
        if 0 < long_prefill_token_threshold < n:
            _fail(
                f"request {rid} scheduled for {n} tokens, above long_prefill_token_threshold="
                f"{long_prefill_token_threshold}"
            )
    total = sum(counts.values())
    if total > max_num_batched_tokens:
        _fail(f"step schedules {total} tokens > max_num_batched_tokens={max_num_batched_tokens}")
    rows = [r.request_id for r in getattr(output, "scheduled_requests", ())]
    if rows and sorted(rows) != sorted(counts):
        _fail(
            f"scheduled_requests rows {rows} do not match num_scheduled_tokens keys {list(counts)}"
        )
    if max_num_seqs is not None and num_running is not None and num_running > max_num_seqs:
        _fail(f"{num_running} requests running > max_num_seqs={max_num_seqs}")
    if running_before is None:
        return
    preempted = set(getattr(output, "preempted_req_ids", ()))
    was_running = [rid for rid in running_before if rid not in preempted]
    admitted = [rid for rid in (rows or counts) if rid not in set(running_before)]
    if admitted:
        skipped = [rid for rid in was_running if rid not in counts]
        if skipped:
            _fail(
                f"admitted {admitted} from waiting while running requests {skipped} got no "
                "tokens: running requests must be served first"
            )
        if preempted:
            _fail(f"admitted {admitted} in a step that preempted {sorted(preempted)}")
    if rows:
        order = [rid for rid in rows if rid in set(running_before)]
        first_admission = next(
            (i for i, rid in enumerate(rows) if rid not in set(running_before)), None
        )
        if first_admission is not None and first_admission < len(order):
            _fail(f"row order {rows}: running requests must come before this step's admissions")
        expected = [rid for rid in was_running if rid in counts]
        if order != expected:
            _fail(
                f"running requests scheduled in order {order}, expected admission order {expected}"
            )


def assert_same_outputs(
    expected: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    actual: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    *,
    labels: tuple[str, str] = ("expected", "actual"),
) -> None:
    """Exact token equality, per request; the message names the first difference.

    Accepts two mappings (request name -> token ids) or two sequences (prompt order). An
    optimisation (chunking, caching, paging, preemption) must change nothing, so there is no
    tolerance here.
    """
    left, right = labels
    if isinstance(expected, Mapping) != isinstance(actual, Mapping):
        _fail(f"{left} and {right} must both be mappings or both be sequences")
    if isinstance(expected, Mapping):
        keys_e, keys_a = list(expected), list(actual)  # type: ignore[arg-type]
        if set(keys_e) != set(keys_a):
            _fail(
                f"request sets differ: {left} has {sorted(map(str, keys_e))}, "
                f"{right} has {sorted(map(str, keys_a))}"
            )
        pairs = [(repr(k), expected[k], actual[k]) for k in keys_e]  # type: ignore[index]
    else:
        if len(expected) != len(actual):
            _fail(f"{left} has {len(expected)} requests, {right} has {len(actual)}")
        pairs = [(f"#{i}", e, a) for i, (e, a) in enumerate(zip(expected, actual, strict=True))]
    for name, exp, act in pairs:
        exp, act = [int(t) for t in exp], [int(t) for t in act]
        if exp == act:
            continue
        pos = next(
            (i for i, (x, y) in enumerate(zip(exp, act, strict=False)) if x != y),
            min(len(exp), len(act)),
        )
        lo = max(pos - 3, 0)
        if pos < min(len(exp), len(act)):
            what = f"{left} {exp[pos]}, {right} {act[pos]}"
        else:
            what = f"{left} has {len(exp)} tokens, {right} has {len(act)}"
        _fail(
            f"request {name} differs at token {pos}: {what}\n"
            f"  {left:>8}[{lo}:]: {exp[lo : pos + 4]}\n"
            f"  {right:>8}[{lo}:]: {act[lo : pos + 4]}"
        )


def first_step_difference(expected: list[dict], got: list[dict]) -> str:
    """Where a per-step trace (one dict per engine step) first departs from the stock engine's:
    "step 3 blocks: expected ..., got ...", or the step counts when one run is longer."""
    for step, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e != g:
            keys = [k for k in e if e[k] != g.get(k)]
            return "; ".join(f"step {step} {k}: expected {e[k]}, got {g.get(k)}" for k in keys)
    return f"the stock engine ran {len(expected)} steps, yours ran {len(got)}"
