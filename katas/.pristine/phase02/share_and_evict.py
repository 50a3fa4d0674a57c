"""Kata 02-05 — share and evict: the life of a cached block.

You drive mini_vllm's ``KVCacheManager`` by hand (no scheduler, no engine): admit prompts with
``prefill``, look at sharing with ``ref_counts``, and let the tests free, evict and revive.
Grade it with ``pytest --impl=mine katas/phase02/share_and_evict``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm import KVCacheManager, Request


def prefill(kv: KVCacheManager, token_ids: Sequence[int]) -> tuple[Request, int]:
    """Admit a prompt the way ``Scheduler.schedule`` admits a waiting request.

    Return ``(request, num_cached)``: the new request and how many of its tokens were found in
    the prefix cache. The five steps, in this order:

    1. make the request: ``Request(token_ids)``;
    2. look up the cache: ``hits, num_cached = kv.get_computed_blocks(request)``;
    3. adopt the head start: ``request.num_computed_tokens = num_cached`` — before step 4,
       because ``allocate_slots`` sizes the request from ``num_computed_tokens`` and counts
       the hit blocks as already held;
    4. allocate the rest: ``kv.allocate_slots(request, request.num_tokens - num_cached, hits)``.
       ``None`` means not enough free blocks (nothing was taken): set
       ``num_computed_tokens`` back to 0 and raise ``MemoryError``;
    5. mark the prefill done: ``request.num_computed_tokens = request.num_tokens``.
    """
    raise NotImplementedError("prefill: get_computed_blocks, adopt, allocate_slots, mark done")


def ref_counts(kv: KVCacheManager, request: Request) -> list[int]:
    """The ``ref_cnt`` of each block in the request's block table, in logical order.

    ``kv.get_blocks(request.request_id)`` is the table. After two identical 32-token prompts
    with blocks of 4, either request shows ``[2, 2, 2, 2, 2, 2, 2, 1]``.
    """
    raise NotImplementedError("ref_counts: ref_cnt of each block in kv.get_blocks(request_id)")
