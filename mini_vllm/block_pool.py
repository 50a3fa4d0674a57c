"""The paged KV block pool: blocks, the free queue (the eviction order), and the prefix-cache index.

Upstream twins (vLLM v0.22.1): ``vllm/v1/core/kv_cache_utils.py: KVCacheBlock,
FreeKVCacheBlockQueue, hash_block_tokens`` and ``vllm/v1/core/block_pool.py: BlockPool``.
Blocks hold metadata only; the K/V numbers would live in a big tensor indexed by ``block_id``.

The invariants every operation keeps (``pytest_vllm_katas.invariants.check_block_pool`` checks
them, for this pool and for a learner's):

I1. A non-null block is in the free queue exactly when its ``ref_cnt`` is 0.
I2. The pool never de-duplicates: a block id handed to a request stays that request's until it is
    freed, even if another block holds identical tokens.
I3. Only full blocks get a hash (the pool cannot know fullness; ``KVCacheManager`` only passes
    full ones).
I4. Free is not forgotten: a freed block keeps its hash and stays findable until it is popped for
    reuse (lazy eviction); ``touch`` revives it from the middle of the queue in O(1).

Two options follow vLLM 0.32 instead of the course (``mini_vllm/config.py`` explains both):
``free_unhashed_blocks_first`` and ``cache_duplicate_blocks``. Both are off by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BlockHash = int


# Stands in for "no parent" in the first block's hash (see hash_block_tokens).
_ROOT_PARENT_HASH = 0


def hash_block_tokens(parent_hash: BlockHash | None, token_ids: Sequence[int],
                      extra_keys: tuple[int | str, ...] | None = None) -> BlockHash:
    """Chain a block's tokens onto its parent's hash.

    Chaining makes a hit on block k imply blocks 0..k match too: ``ab|cd`` and ``xy|cd`` share the
    second block's tokens but not its hash. Python's ``hash`` of a tuple of ints is not salted,
    but before Python 3.12 ``hash(None)`` is derived from None's address, so the first block's
    missing parent is replaced by a fixed int: the hash is then stable across processes.
    Upstream uses SHA-256 by default; we keep the chain and ``extra_keys``: what else the
    block's K/V depends on (upstream: the LoRA adapter, multimodal hashes, cache salt). mini_vllm
    passes ``("lora", lora_int_id)`` for a request with an adapter (``KVCacheManager``), so KV
    computed under one adapter is never a hit for another or for the base model. ``None`` (every
    request without an adapter) hashes exactly as before.
    """
    parent = _ROOT_PARENT_HASH if parent_hash is None else parent_hash
    if extra_keys is None:
        return hash((parent, tuple(int(t) for t in token_ids)))
    return hash((parent, tuple(int(t) for t in token_ids), tuple(extra_keys)))


# eq=False: blocks compare by identity. A generated __eq__/__repr__ would walk prev/next links
# (recursing through the whole queue) and would call two distinct blocks with equal fields equal.
@dataclass(eq=False)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: BlockHash | None = None
    is_null: bool = False
    # Owned by FreeKVCacheBlockQueue; nothing else may touch them.
    prev_free: KVCacheBlock | None = field(default=None, repr=False)
    next_free: KVCacheBlock | None = field(default=None, repr=False)

    def reset_hash(self) -> None:
        self.block_hash = None


class FreeKVCacheBlockQueue:
    """A doubly linked list threaded through the blocks themselves.

    Why not ``collections.deque``: a prefix-cache hit must pull a block out of the *middle*
    (``touch``), which a deque does in O(n). Here it is O(1) and allocates nothing. The two
    sentinels mean no operation ever special-cases an empty list or an end.

    Order is the eviction policy: the front is evicted first.
    """

    def __init__(self, blocks: Iterable[KVCacheBlock]) -> None:
        self._head = KVCacheBlock(block_id=-1)
        self._tail = KVCacheBlock(block_id=-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def popleft(self) -> KVCacheBlock:
        first = self._head.next_free
        if first is self._tail or first is None:
            raise ValueError("No free blocks available")
        self.remove(first)
        return first

    def remove(self, block: KVCacheBlock) -> None:
        prev, nxt = block.prev_free, block.next_free
        if prev is None or nxt is None:
            raise ValueError(f"block {block.block_id} is not in the free queue")
        prev.next_free = nxt
        nxt.prev_free = prev
        block.prev_free = block.next_free = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        if block.prev_free is not None or block.next_free is not None:
            raise ValueError(f"block {block.block_id} is already in the free queue")
        last = self._tail.prev_free
        assert last is not None
        last.next_free = block
        block.prev_free = last
        block.next_free = self._tail
        self._tail.prev_free = block
        self.num_free_blocks += 1

    def prepend_n(self, blocks: Sequence[KVCacheBlock]) -> None:
        """Put ``blocks`` at the front, keeping their order: the first given is evicted first.

        Chains them first, then splices the chain in after the head (upstream's ``prepend_n``).
        """
        for block in blocks:  # all checked before any link changes
            if block.prev_free is not None or block.next_free is not None:
                raise ValueError(f"block {block.block_id} is already in the free queue")
        prev = self._head
        first_old = prev.next_free
        assert first_old is not None
        for block in blocks:
            prev.next_free = block
            block.prev_free = prev
            prev = block
        prev.next_free = first_old
        first_old.prev_free = prev
        self.num_free_blocks += len(blocks)

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """Front to back (first evicted first). O(n): for tests and invariant checks."""
        out: list[KVCacheBlock] = []
        node = self._head.next_free
        while node is not None and node is not self._tail:
            out.append(node)
            node = node.next_free
        return out

    def __len__(self) -> int:
        return self.num_free_blocks


class BlockPool:
    """Hands out blocks, takes them back, and remembers which full blocks hold which prefix.

    ``free_unhashed_blocks_first`` (vLLM 0.32's ``BlockPool.free_blocks``): a freed block without
    a hash goes to the *front* of the free queue, since no request can ever hit it; hashed blocks
    still join the back. Off (the course): every freed block joins the back.

    ``cache_duplicate_blocks`` (vLLM 0.32's ``BlockHashToBlockMap``): a block whose hash is
    already indexed to another block is registered too, as a twin, so the content survives the
    first block's eviction. Off (the course): the twin stays unhashed.
    """

    def __init__(
        self,
        num_blocks: int,
        enable_caching: bool = True,
        free_unhashed_blocks_first: bool = False,
        cache_duplicate_blocks: bool = False,
    ) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.free_unhashed_blocks_first = free_unhashed_blocks_first
        self.cache_duplicate_blocks = cache_duplicate_blocks
        self.blocks = [KVCacheBlock(block_id=i) for i in range(num_blocks)]
        self.free_queue = FreeKVCacheBlockQueue(self.blocks)
        # The block a lookup returns for each hash: the earliest registered that is still cached.
        self.cached_block_hash_to_block: dict[BlockHash, KVCacheBlock] = {}
        # Later twins per hash, oldest first (only with cache_duplicate_blocks). Upstream keeps
        # all of them in one {block_id: block} dict per hash and returns its first; splitting off
        # the first keeps the index above a plain hash -> block map (what the katas read).
        self.duplicate_cached_blocks: dict[BlockHash, dict[int, KVCacheBlock]] = {}
        # Block 0 is a placeholder that lets "no block here" live inside a block-table tensor
        # without -1 sentinels. It is never handed out, freed, queued or cached.
        self.null_block = self.free_queue.popleft()
        self.null_block.is_null = True

    def get_num_free_blocks(self) -> int:
        return self.free_queue.num_free_blocks

    def get_usage(self) -> float:
        """Fraction of usable blocks in use; the null block is excluded from the denominator."""
        return 1.0 - self.get_num_free_blocks() / (self.num_blocks - 1)

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        if num_blocks > self.get_num_free_blocks():
            raise ValueError(f"Cannot get {num_blocks} free blocks from the pool")
        out: list[KVCacheBlock] = []
        for _ in range(num_blocks):
            block = self.free_queue.popleft()
            # Lazy eviction: a free block keeps its cached content until the moment it is reused.
            self._maybe_evict(block)
            assert block.ref_cnt == 0, f"free block {block.block_id} had ref_cnt {block.ref_cnt}"
            block.ref_cnt = 1
            out.append(block)
        return out

    def _maybe_evict(self, block: KVCacheBlock) -> bool:
        block_hash = block.block_hash
        if block_hash is None:
            return False
        if self.duplicate_cached_blocks:  # filled only with cache_duplicate_blocks
            self._evict_among_twins(block, block_hash)
        # Drop the index entry only if it points at *this* block: another physical block may
        # carry the same chained hash (identical content) and own the entry.
        elif self.cached_block_hash_to_block.get(block_hash) is block:
            del self.cached_block_hash_to_block[block_hash]
        block.reset_hash()
        return True

    def _evict_among_twins(self, block: KVCacheBlock, block_hash: BlockHash) -> None:
        """Drop ``block``, and only it, from the index; its twins keep the content findable.

        If lookups returned ``block``, the oldest twin takes over, as the first entry of
        upstream's insertion-ordered ``{block_id: block}`` does.
        """
        twins = self.duplicate_cached_blocks.get(block_hash)
        if self.cached_block_hash_to_block.get(block_hash) is block:
            if twins:
                self.cached_block_hash_to_block[block_hash] = twins.pop(next(iter(twins)))
            else:
                del self.cached_block_hash_to_block[block_hash]
        elif twins is not None:
            twins.pop(block.block_id, None)
        if twins is not None and not twins:
            del self.duplicate_cached_blocks[block_hash]

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take a reference on cache-hit blocks, reviving free ones (the O(1) middle removal)."""
        for block in blocks:
            if block.ref_cnt == 0 and not block.is_null:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference each; blocks reaching 0 join the queue *in the order given*.

        The caller chooses eviction priority by that order (``KVCacheManager.free`` passes a
        table tail-first). Freed blocks keep their hash (I4). With
        ``free_unhashed_blocks_first``, the unhashed ones go to the front instead, still in the
        order given (upstream does the same with caching off, where no block has a hash).
        """
        front: list[KVCacheBlock] = []
        try:
            for block in ordered_blocks:
                if block.is_null:
                    continue
                if block.ref_cnt <= 0:
                    raise ValueError(f"block {block.block_id} freed more times than it was taken")
                block.ref_cnt -= 1
                if block.ref_cnt == 0:
                    if self.free_unhashed_blocks_first and block.block_hash is None:
                        front.append(block)
                    else:
                        self.free_queue.append(block)
        finally:  # a double free stops the loop: queue what was released before it (I1)
            if front:
                self.free_queue.prepend_n(front)

    def cache_full_blocks(
        self, blocks: Sequence[KVCacheBlock], block_hashes: Sequence[BlockHash]
    ) -> None:
        """Register full blocks under their chained hashes (caller guarantees fullness, I3).

        Skips the null block and blocks already hashed (prefix hits). If the hash is already
        indexed to another block — same content computed twice, e.g. two identical prompts'
        private tail blocks — the pool never swaps a request's block for the existing twin (I2):
        the course leaves this block unhashed; ``cache_duplicate_blocks`` registers it as a twin.
        """
        if not self.enable_caching:
            return
        for block, block_hash in zip(blocks, block_hashes, strict=True):
            if block.is_null or block.block_hash is not None:
                continue
            if block_hash not in self.cached_block_hash_to_block:
                self.cached_block_hash_to_block[block_hash] = block
            elif self.cache_duplicate_blocks:
                self.duplicate_cached_blocks.setdefault(block_hash, {})[block.block_id] = block
            else:
                continue
            block.block_hash = block_hash

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        return self.cached_block_hash_to_block.get(block_hash)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; refused (``False``, nothing changed) while any block is in use.

        Upstream ``BlockPool.reset_prefix_cache`` refuses the same way. A running request's
        manager counts its full blocks as registered already, so blocks unhashed under it would
        never be registered again.
        """
        if self.get_num_free_blocks() != self.num_blocks - 1:  # the null block is always "used"
            return False
        self.cached_block_hash_to_block.clear()
        self.duplicate_cached_blocks.clear()
        for block in self.blocks:
            block.reset_hash()
        return True

    def __repr__(self) -> str:
        return f"BlockPool(num_blocks={self.num_blocks}, free={self.get_num_free_blocks()})"
