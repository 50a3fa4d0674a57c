"""Kata 02-05 — share and evict: the life of a cached block.

You write the three places where a block's fate is decided, and the scheduler's dance that uses
them:

- ``find_longest_cache_hit``: which cached blocks a new prompt can reuse (the lookup);
- ``share_and_allocate``: the new request's block table, sharing those blocks (the admission);
- ``release``: handing a finished request's blocks back (which decides what is evicted first);
- ``prefill``: admitting one prompt through a ``KVCacheManager``, as ``Scheduler.schedule`` does;
- ``ref_counts``: the probe that makes sharing visible.

The tests run your first three inside mini_vllm's ``KVCacheManager`` (``scaffold.py``), so every
``kv`` they hand to ``prefill`` looks prompts up, admits and frees with your code — and so does a
whole ``LLMEngine`` in the last test. Grade it with
``pytest --impl=mine katas/phase02/share_and_evict``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm import BlockPool, KVCacheBlock, KVCacheManager, Request, hash_block_tokens  # noqa: F401


def find_longest_cache_hit(
    pool: BlockPool, token_ids: Sequence[int], block_size: int
) -> list[KVCacheBlock]:
    """The cached blocks that hold the longest prefix of ``token_ids``, in logical order.

    The cache index is ``pool.get_cached_block(block_hash)`` (``None`` for a miss), keyed by the
    chained hash of each full block: ``hash_block_tokens(parent_hash, that_block's_tokens)``,
    where ``parent_hash`` is the previous block's hash and ``None`` for the first block. These
    are the hashes mini_vllm registers blocks under.

    Contract:

    - the result is blocks ``0, 1, ..., k-1`` of the prompt, each the cached block for that
      block's hash — a contiguous run from the start, as long as possible;
    - only full blocks can hit, and the hit never covers the prompt's last token: the engine
      must compute that token anyway, because its forward pass yields the logits for the next
      one;
    - the pool is not changed (no reference taken: that is ``share_and_allocate``'s job).

    Examples, blocks of 4: a cached 32-token prompt looked up again hits 7 blocks (28 tokens),
    not 8; a 33-token prompt that extends it hits all 8; a prompt sharing only the first 16
    tokens hits 4; a cold cache hits nothing.
    """
    raise NotImplementedError("find_longest_cache_hit: the cached run of full blocks, capped")


def share_and_allocate(
    pool: BlockPool, hits: Sequence[KVCacheBlock], num_tokens: int, block_size: int
) -> list[KVCacheBlock] | None:
    """The block table of a new request that holds ``num_tokens`` tokens, or ``None``.

    ``hits`` are the cached blocks found for its prefix (``find_longest_cache_hit``), with
    ``len(hits) * block_size <= num_tokens``. They are the table's first blocks, *shared* with
    whoever else holds them; the rest of the table is fresh blocks from
    ``pool.get_new_blocks``. The table has just enough blocks for ``num_tokens`` tokens.

    After a successful call:

    - every block of the table has one reference more than before (a fresh block has 1);
    - a block sits in ``pool.free_queue`` exactly when its ``ref_cnt`` is 0: a hit that nobody
      held (freed, but still cached) has left the queue — it is revived, not recomputed;
    - no hit was evicted to make room for the fresh blocks.

    ``None`` when the pool cannot supply the fresh blocks — remember that reviving a hit takes
    it out of the free queue too. Then nothing has changed: no ref count, no queue position.

    Example, blocks of 4: a second copy of a 32-token prompt has 7 hits and needs 1 fresh
    block, so it fits in a pool whose only free block is that one.
    """
    raise NotImplementedError("share_and_allocate: share the hits, allocate the rest, or None")


def release(pool: BlockPool, table: Sequence[KVCacheBlock]) -> None:
    """Drop the table's reference on each of its blocks (the request is finished).

    A block that nobody holds any more goes back to ``pool.free_queue`` and keeps its hash: it
    stays cached until an allocation pops it from the queue's front. Blocks still shared stay
    out of the queue. The order is the eviction policy: this request's deepest blocks must be
    evicted first and its first block last, so that prefixes other prompts share (a system
    prompt) outlive the request-specific tails.
    """
    raise NotImplementedError("release: drop the table's references, in eviction order")


def prefill(kv: KVCacheManager, token_ids: Sequence[int]) -> tuple[Request, int]:
    """Admit a prompt the way ``Scheduler.schedule`` admits a waiting request.

    Make ``Request(token_ids)``, find its prefix-cache hit with ``kv.get_computed_blocks``
    (``(hit_blocks, num_cached_tokens)``) and give it blocks with ``kv.allocate_slots``
    (``None`` means no room). Return ``(request, num_cached)``.

    ``allocate_slots(request, num_new_tokens, new_computed_blocks)``'s caller contract: the
    hit blocks come as ``new_computed_blocks``, ``request.num_computed_tokens`` already counts
    the hit, and ``num_new_tokens`` are the tokens after it; the request then holds
    ``num_computed_tokens + num_new_tokens`` tokens.

    Afterwards the prompt counts as computed: ``request.num_computed_tokens ==
    request.num_tokens``. When the blocks do not fit, raise ``MemoryError`` and take nothing.
    """
    raise NotImplementedError("prefill: the scheduler's admission of one prompt")


def ref_counts(kv: KVCacheManager, request: Request) -> list[int]:
    """The ``ref_cnt`` of each block in the request's block table, in logical order.

    ``kv.get_blocks(request.request_id)`` is the table. After two identical 32-token prompts
    with blocks of 4, either request shows ``[2, 2, 2, 2, 2, 2, 2, 1]``.
    """
    raise NotImplementedError("ref_counts: ref_cnt of each block in the request's table")
