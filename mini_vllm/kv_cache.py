"""KVCacheManager: per-request block tables on top of the block pool; the scheduler's only KV API.

Upstream twin: ``vllm/v1/core/kv_cache_manager.py: KVCacheManager`` (``get_computed_blocks``,
``allocate_slots``, ``free``), with the single-attention-type logic of
``single_type_kv_cache_manager.py`` folded in.

The seam: the scheduler decides policy (who runs, who is preempted); this class knows the truth
about memory and answers "can this request grow by n tokens?" with blocks or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mini_vllm.block_pool import BlockHash, BlockPool, KVCacheBlock, hash_block_tokens
from mini_vllm.request import Request


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _mm_extra_keys(mm_features: Sequence[Any], start: int, stop: int,
                   extra: tuple[int | str, ...] | None) -> tuple[int | str, ...] | None:
    """``extra`` plus the content hash (as an int: Python salts ``str`` hashes per process) of
    every image whose placeholder run overlaps the block ``[start, stop)``."""
    keys = tuple(int(f.mm_hash[:16], 16) for f in mm_features
                 if f.mm_position.overlaps(start, stop))
    if not keys:
        return extra
    return (*(extra or ()), "mm", *keys)


class KVCacheManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        enable_caching: bool = True,
        block_pool: Any | None = None,
        block_pool_cls: Callable[..., Any] | None = None,
        **block_pool_options: bool,
    ) -> None:
        """``block_pool`` (an instance) or ``block_pool_cls`` (called as
        ``block_pool_cls(num_blocks=..., enable_caching=...)``) swaps in another pool, e.g. a
        learner's from kata 02-01. Anything with BlockPool's public methods works.

        ``block_pool_options`` (``free_unhashed_blocks_first``, ``cache_duplicate_blocks``; see
        ``mini_vllm/config.py``) are passed on to the pool's constructor as keywords; a pool
        class that does not take them refuses them there.
        """
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        if block_pool is None:
            factory = block_pool_cls or BlockPool
            block_pool = factory(num_blocks=num_blocks, enable_caching=enable_caching,
                                 **block_pool_options)
        elif block_pool_options:
            raise ValueError(
                f"block pool options {sorted(block_pool_options)} only apply to a pool built "
                f"here; set them on the block_pool instance passed in"
            )
        self.block_pool = block_pool
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        # How many leading blocks of each table are already registered in the cache index,
        # so each allocation hashes only the blocks that just became full.
        self.num_cached_blocks: dict[str, int] = {}
        self._req_to_hashes: dict[str, list[BlockHash]] = {}

    @property
    def num_usable_blocks(self) -> int:
        return self.num_blocks - 1  # block 0 is the null block

    def max_tokens_that_fit(self) -> int:
        """KV slots in the whole pool: a request needing more can never run (deadlock guard)."""
        return self.num_usable_blocks * self.block_size

    def get_block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.req_to_blocks.get(request_id, [])]

    def get_blocks(self, request_id: str) -> list[KVCacheBlock]:
        return list(self.req_to_blocks.get(request_id, []))

    def get_usage(self) -> float:
        return self.block_pool.get_usage()

    def _block_hashes(self, request: Request, num_full_blocks: int) -> list[BlockHash]:
        """Chained hashes of the request's first ``num_full_blocks`` blocks, memoised.

        Token lists only grow (outputs are appended, preemption keeps them), so a hash once
        computed for a request stays right.
        """
        hashes = self._req_to_hashes.setdefault(request.request_id, [])
        if len(hashes) < num_full_blocks:
            tokens = request.all_token_ids
            parent = hashes[-1] if hashes else None
            bs = self.block_size
            # A LoRA request's K/V depends on its adapter: its id goes into every block's hash
            # (upstream's extra keys). Without one, the hash is unchanged.
            lora_request = getattr(request, "lora_request", None)
            extra = None if lora_request is None else ("lora", lora_request.lora_int_id)
            # An image's placeholder tokens are all the same id: the K/V of a block its run
            # overlaps depends on the image, so its hash goes in too (upstream's
            # _gen_mm_extra_hash_keys). Without images, the hash is unchanged.
            mm_features = getattr(request, "mm_features", None)
            for i in range(len(hashes), num_full_blocks):
                block_extra = extra
                if mm_features:
                    block_extra = _mm_extra_keys(mm_features, i * bs, (i + 1) * bs, extra)
                parent = hash_block_tokens(parent, tokens[i * bs : (i + 1) * bs], block_extra)
                hashes.append(parent)
        return hashes[:num_full_blocks]

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """The longest cached prefix of full blocks, as (blocks, number of tokens they cover).

        Capped at ``num_tokens - 1`` tokens: the last token must be computed anyway, because its
        forward pass is what yields the logits for the next token. Walks from the front and stops
        at the first miss (the chained hash makes a later hit meaningless without the earlier).
        """
        if not self.enable_caching:
            return [], 0
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        hits: list[KVCacheBlock] = []
        for block_hash in self._block_hashes(request, max_hit_blocks):
            block = self.block_pool.get_cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: Sequence[KVCacheBlock] | None = None,
        full_sequence_must_fit: bool = False,
    ) -> list[KVCacheBlock] | None:
        """Make room for ``num_new_tokens`` more tokens; return the new blocks, or ``None``.

        ``None`` (not enough free blocks) is ordinary control flow: the scheduler preempts or stops
        admitting. An empty list means "fits in blocks it already has" — test with ``is None``.

        Caller contract: for an admission with prefix hits, ``request.num_computed_tokens`` must
        already equal the hit count and ``new_computed_blocks`` be the hit blocks. The accounting
        below trusts that counter; passing hits without adopting them over-allocates.

        Free hit blocks (ref 0) are counted against the free pool before we commit: touching them
        takes them out of the free queue. Forgetting that makes an exactly-sized pool fail
        half-way through an allocation.

        ``full_sequence_must_fit`` (the scheduler's ``scheduler_reserve_full_isl`` admission
        gate, as upstream): return ``None`` unless blocks for *all* ``request.num_tokens`` fit
        now, counting the hits the same way; then allocate only for ``num_new_tokens`` as usual.
        Nothing is reserved for the later chunks: a request admitted after this one may still
        take those blocks (upstream alike).
        """
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        hits = list(new_computed_blocks) if new_computed_blocks else []
        rid = request.request_id
        table = self.req_to_blocks.get(rid)
        total_tokens = request.num_computed_tokens + num_new_tokens
        if total_tokens > request.num_tokens:
            raise ValueError(
                f"{rid}: cannot compute {total_tokens} tokens, only {request.num_tokens} exist"
            )
        if table and not hits and not full_sequence_must_fit and (
                total_tokens <= len(table) * self.block_size):
            # The common decode step: the token fits in a block already held. Only the caching
            # of a block that just filled is left to do.
            num_full = total_tokens // self.block_size
            if self.enable_caching and num_full > self.num_cached_blocks[rid]:
                self._cache_full_blocks(request, total_tokens)
            return []
        if table is None:
            table = []
        if hits and table:
            raise ValueError(f"{rid}: prefix hits can only be adopted by a request with no blocks")
        num_reviving = sum(1 for b in hits if b.ref_cnt == 0)
        num_free = self.block_pool.get_num_free_blocks() - num_reviving
        if full_sequence_must_fit:
            num_full = cdiv(request.num_tokens, self.block_size) - len(table) - len(hits)
            if num_full > num_free:
                return None
        num_needed = cdiv(total_tokens, self.block_size) - len(table) - len(hits)
        num_needed = max(num_needed, 0)
        if num_needed > num_free:
            return None

        if hits:
            self.block_pool.touch(hits)
        new_blocks = self.block_pool.get_new_blocks(num_needed) if num_needed else []
        if rid not in self.req_to_blocks:
            self.req_to_blocks[rid] = table
            self.num_cached_blocks[rid] = 0
        table.extend(hits)
        table.extend(new_blocks)
        if hits:
            self.num_cached_blocks[rid] = max(self.num_cached_blocks[rid], len(hits))
        self._cache_full_blocks(request, total_tokens)
        return new_blocks

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Register blocks that are full once ``num_tokens`` tokens are computed — *now*.

        Eager: hashed at allocation time, not when the forward pass finishes, so a request
        admitted later in the same ``schedule()`` call already hits them (lab 03-06's 96).
        Safe because the toy model is deterministic and a step's forward pass always completes.
        """
        if not self.enable_caching:
            return
        rid = request.request_id
        num_full = num_tokens // self.block_size
        start = self.num_cached_blocks[rid]
        if num_full <= start:
            return
        hashes = self._block_hashes(request, num_full)
        table = self.req_to_blocks[rid]
        self.block_pool.cache_full_blocks(table[start:num_full], hashes[start:num_full])
        self.num_cached_blocks[rid] = num_full

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix; ``False`` (and nothing forgotten) while blocks are in use.

        Upstream ``KVCacheManager.reset_prefix_cache``. Per-request hash memos stay: hashes
        depend only on tokens.
        """
        return self.block_pool.reset_prefix_cache()

    def allocate_lookahead(self, request: Request, num_tokens: int) -> bool:
        """Grow ``request``'s table to cover ``num_tokens`` slots — its verified tokens plus
        this step's speculative drafts — or return ``False`` with nothing taken.

        Upstream passes ``num_lookahead_tokens`` to ``allocate_slots``; here it is a separate
        call so that ``allocate_slots`` keeps the course's signature (a learner's KV manager
        implements it). The new blocks hold no verified token yet, so nothing hashes them until
        verified tokens fill them, and ``free`` returns them with the rest.
        """
        table = self.req_to_blocks[request.request_id]
        missing = cdiv(num_tokens, self.block_size) - len(table)
        if missing <= 0:
            return True
        if missing > self.block_pool.get_num_free_blocks():
            return False
        table.extend(self.block_pool.get_new_blocks(missing))
        return True

    def free(self, request: Request) -> None:
        """Release a request's blocks tail first.

        The free queue evicts from the front, so the tail (private to this request) goes first and
        the shared prefix (likely to be hit again) survives longest.
        """
        rid = request.request_id
        table = self.req_to_blocks.pop(rid, [])
        self.num_cached_blocks.pop(rid, None)
        self._req_to_hashes.pop(rid, None)
        self.block_pool.free_blocks(reversed(table))
