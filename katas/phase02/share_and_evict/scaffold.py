"""What the lab gives you: mini_vllm's ``KVCacheManager`` with your three functions inside it.

``kv_cache_manager_cls(impl)`` is a ``KVCacheManager`` whose prefix-cache lookup
(``get_computed_blocks``), admission (``allocate_slots`` for a request that holds no blocks yet)
and release (``free``) call your ``find_longest_cache_hit``, ``share_and_allocate`` and
``release``. Everything else — the per-request block tables, registering newly full blocks in the
cache index, growing a running request by one block at a time — is mini_vllm's own code.

The class has the constructor ``LLMEngine`` expects from its ``kv_cache_manager_cls`` injection
point, so the same manager runs under the tests' hand-driven story and under the whole engine::

    LLMEngine(block_size=4, kv_cache_manager_cls=kv_cache_manager_cls(my_module))

The manager also checks what crosses the boundary (block types, table length, the hit blocks at
the head of the table, the caller's ``num_computed_tokens``) and fails with
``KVContractError``, naming the rule that was broken, instead of letting a bad table surface
later as an ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from mini_vllm import KVCacheBlock, KVCacheManager, Request
from mini_vllm.kv_cache import cdiv


class KVContractError(AssertionError):
    """A call across the scheduler / KV-manager boundary broke the contract.

    An ``AssertionError`` on purpose: it is a bug in the code under test, so pytest reports the
    message as a failed check.
    """


def _as_blocks(value: object, what: str) -> list[KVCacheBlock]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise KVContractError(f"{what} must be a list of KVCacheBlock, got {value!r}")
    blocks = list(value)
    bad = [b for b in blocks if not isinstance(b, KVCacheBlock)]
    if bad:
        raise KVContractError(f"{what} must hold KVCacheBlock objects, got {bad[0]!r}")
    return blocks


class KataKVCacheManager(KVCacheManager):
    """``KVCacheManager`` with the lookup, the admission and the release delegated to ``impl``."""

    impl: ModuleType  # the module under test; set by kv_cache_manager_cls

    # -- the lookup ---------------------------------------------------------------------------

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        if not self.enable_caching:  # like upstream: no lookup at all with caching off
            return [], 0
        found = self.impl.find_longest_cache_hit(
            self.block_pool, list(request.all_token_ids), self.block_size
        )
        hits = _as_blocks(found, "find_longest_cache_hit's result")
        return hits, len(hits) * self.block_size

    # -- the admission ------------------------------------------------------------------------

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: Sequence[KVCacheBlock] | None = None,
    ) -> list[KVCacheBlock] | None:
        rid = request.request_id
        if rid in self.req_to_blocks:  # a running request grows: mini_vllm's own path
            return super().allocate_slots(request, num_new_tokens, new_computed_blocks)
        hits = _as_blocks(list(new_computed_blocks or ()), "the hit blocks (new_computed_blocks)")
        computed = request.num_computed_tokens
        hit_tokens = len(hits) * self.block_size
        if num_new_tokens < 0:
            raise KVContractError(f"allocate_slots({rid}): num_new_tokens={num_new_tokens} < 0")
        if hits and computed == 0:
            raise KVContractError(
                f"allocate_slots({rid}) was handed {len(hits)} hit blocks ({hit_tokens} tokens) "
                f"for a request whose num_computed_tokens is still 0: adopt the hit "
                f"(request.num_computed_tokens = num_cached) *before* allocate_slots, which "
                f"sizes the request as num_computed_tokens + num_new_tokens "
                f"= 0 + {num_new_tokens} = {num_new_tokens} tokens"
            )
        if computed > hit_tokens:
            raise KVContractError(
                f"allocate_slots({rid}): num_computed_tokens={computed} claims K/V the request "
                f"does not have: only {len(hits)} hit blocks ({hit_tokens} tokens) were passed "
                f"as new_computed_blocks"
            )
        total = computed + num_new_tokens
        if total > request.num_tokens:
            raise KVContractError(
                f"allocate_slots({rid}, num_new_tokens={num_new_tokens}) with "
                f"num_computed_tokens={computed} would cover {total} tokens, but the request has "
                f"only {request.num_tokens}: num_new_tokens counts the tokens *after* the hit"
            )
        if hit_tokens > total:
            raise KVContractError(
                f"allocate_slots({rid}): {len(hits)} hit blocks ({hit_tokens} tokens) cannot fit "
                f"in a request of {total} tokens"
            )
        num_blocks = cdiv(total, self.block_size)
        table = self.impl.share_and_allocate(self.block_pool, hits, total, self.block_size)
        if table is None:
            return None
        table = _as_blocks(table, "share_and_allocate's table")
        if len(table) != num_blocks:
            raise KVContractError(
                f"share_and_allocate returned a table of {len(table)} block(s) for {total} "
                f"tokens at block_size {self.block_size}; a table that holds them has "
                f"{num_blocks}"
            )
        if any(t is not h for t, h in zip(table, hits, strict=False)):
            raise KVContractError(
                f"share_and_allocate's table must start with the hit blocks, in order: hits "
                f"{[b.block_id for b in hits]}, table {[b.block_id for b in table]}"
            )
        self.req_to_blocks[rid] = table
        # The hits are registered already; register whatever else is full now (eager caching).
        self.num_cached_blocks[rid] = len(hits)
        self._cache_full_blocks(request, total)
        return table[len(hits):]

    # -- the release --------------------------------------------------------------------------

    def free(self, request: Request) -> None:
        table = self.get_blocks(request.request_id)
        before = [block.ref_cnt for block in table]
        # mini_vllm's own bookkeeping on an empty table (it frees nothing), then yours.
        self.req_to_blocks[request.request_id] = []
        super().free(request)
        self.impl.release(self.block_pool, table)
        queued = {id(b) for b in self.block_pool.free_queue.get_all_free_blocks()}
        for block, was in zip(table, before, strict=True):
            if block.ref_cnt != was - 1:
                raise KVContractError(
                    f"release({request.request_id}): block {block.block_id} had ref_cnt {was} "
                    f"and must drop by exactly one, to {was - 1}; it is {block.ref_cnt}"
                )
            if (id(block) in queued) != (block.ref_cnt == 0):
                where = "is in" if id(block) in queued else "is not in"
                raise KVContractError(
                    f"release({request.request_id}): block {block.block_id} has ref_cnt "
                    f"{block.ref_cnt} and {where} the free queue; a block is free exactly when "
                    f"nobody holds it (ref_cnt 0)"
                )


def kv_cache_manager_cls(impl: ModuleType) -> Callable[..., KataKVCacheManager]:
    """A ``KataKVCacheManager`` class bound to ``impl`` (the module with your functions).

    Construct it like ``KVCacheManager``: ``(num_blocks, block_size=16, enable_caching=True)``.
    """
    return type("KataKVCacheManager", (KataKVCacheManager,), {"impl": impl})


def make_manager(impl: Any, num_blocks: int, block_size: int = 4,
                 enable_caching: bool = True) -> KataKVCacheManager:
    """A fresh manager running ``impl``'s lookup, admission and release."""
    return kv_cache_manager_cls(impl)(
        num_blocks=num_blocks, block_size=block_size, enable_caching=enable_caching
    )
