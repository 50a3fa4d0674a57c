"""Reference for kata 02-01 — the paged KV block allocator.

A port of ``mini_vllm/block_pool.py`` (itself a small twin of vLLM's ``kv_cache_utils.py`` and
``block_pool.py``): the free queue threaded through the blocks, the chained block hash, and the
pool that hands blocks out, takes them back and remembers which full blocks hold which prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mini_vllm.block_pool import BlockHash, KVCacheBlock

# The parent of a sequence's first block. Not None: before Python 3.12, hash(None) is derived
# from None's address and changes from one process to the next (upstream has NONE_HASH too).
_NO_PARENT: BlockHash = 0


def hash_block_tokens(parent_hash: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """The hash of one full block, chained onto the hash of the block before it."""
    parent = _NO_PARENT if parent_hash is None else parent_hash
    # A tuple of ints hashes the same in every process; a str would not (its hash is salted).
    return hash((parent, tuple(int(t) for t in token_ids)))


class FreeKVCacheBlockQueue:
    """Every free block, front (evicted first) to back, linked through the blocks themselves."""

    def __init__(self, blocks: Iterable[KVCacheBlock]) -> None:
        # Two sentinels that are never handed out: every real block always has a real
        # neighbour on both sides, so no operation special-cases the ends or an empty queue.
        self._head = KVCacheBlock(block_id=-1)
        self._tail = KVCacheBlock(block_id=-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def popleft(self) -> KVCacheBlock:
        """Take the front block (the eviction candidate) out of the queue."""
        first = self._head.next_free
        if first is None or first is self._tail:
            raise ValueError("No free blocks available")
        self.remove(first)
        return first

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink ``block`` from wherever it sits, touching only its two neighbours."""
        before, after = block.prev_free, block.next_free
        if before is None or after is None:
            raise ValueError(f"block {block.block_id} is not in the free queue")
        before.next_free = after
        after.prev_free = before
        # Cleared links are how the queue knows a block is out (and how the checker sees it).
        block.prev_free = None
        block.next_free = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        """Put ``block`` at the back: it will be evicted after everything already queued."""
        if block.prev_free is not None or block.next_free is not None:
            raise ValueError(f"block {block.block_id} is already in the free queue")
        last = self._tail.prev_free
        assert last is not None  # the head sentinel at worst
        last.next_free = block
        block.prev_free = last
        block.next_free = self._tail
        self._tail.prev_free = block
        self.num_free_blocks += 1

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """The free blocks, front to back. A walk, O(n): for tests and checkers only."""
        found: list[KVCacheBlock] = []
        node = self._head.next_free
        while node is not None and node is not self._tail:
            found.append(node)
            node = node.next_free
        return found

    def __len__(self) -> int:
        return self.num_free_blocks


class BlockPool:
    """Owns every block: allocation, reference counts, lazy eviction, and the prefix index."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(block_id=i) for i in range(num_blocks)]
        self.free_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached_block_hash_to_block: dict[BlockHash, KVCacheBlock] = {}
        # Block 0 is the null block: a permanent placeholder for "no block here" inside block
        # tables. It leaves the queue now and is never allocated, freed, touched or cached.
        self.null_block = self.free_queue.popleft()
        self.null_block.is_null = True

    def get_num_free_blocks(self) -> int:
        return self.free_queue.num_free_blocks

    def get_usage(self) -> float:
        """Fraction of the usable blocks (all but the null block) that are held."""
        usable = self.num_blocks - 1
        return (usable - self.get_num_free_blocks()) / usable

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Hand out ``num_blocks`` blocks from the front of the queue, each with one reference."""
        if num_blocks > self.get_num_free_blocks():
            raise ValueError(f"Cannot get {num_blocks} free blocks from the pool")
        taken: list[KVCacheBlock] = []
        for _ in range(num_blocks):
            block = self.free_queue.popleft()
            # Lazy eviction: a free block kept its cached content until this very moment.
            self._maybe_evict(block)
            assert block.ref_cnt == 0, f"block {block.block_id} was free with refs"
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def _maybe_evict(self, block: KVCacheBlock) -> bool:
        """Forget ``block``'s cached content, if it has any. True if something was evicted."""
        if block.block_hash is None:
            return False
        # Drop the index entry only when it names this very block: a twin with the same hash
        # may own it (see cache_full_blocks).
        if self.cached_block_hash_to_block.get(block.block_hash) is block:
            del self.cached_block_hash_to_block[block.block_hash]
        block.reset_hash()
        return True

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take one more reference on each block; a free one leaves the queue (revival)."""
        for block in blocks:
            if block.is_null:
                continue
            if block.ref_cnt == 0:
                self.free_queue.remove(block)  # the O(1) middle removal the linked list is for
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference each; blocks reaching zero join the back of the queue, in order.

        The order given is the eviction order among them, and they keep their hashes (I4).
        """
        for block in ordered_blocks:
            if block.is_null:
                continue
            if block.ref_cnt <= 0:
                raise ValueError(f"block {block.block_id} freed more times than it was taken")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free_queue.append(block)

    def cache_full_blocks(
        self, blocks: Sequence[KVCacheBlock], block_hashes: Sequence[BlockHash]
    ) -> None:
        """Index each (full) block under its chained hash so later prompts can find it.

        The null block and blocks that already carry a hash (prefix hits) are skipped. When the
        hash is already indexed to another block (the same content computed twice), the index
        keeps the first block and this one stays unhashed: one block per hash, and nobody's
        block is swapped for its twin (I2).
        """
        if not self.enable_caching:
            return
        for block, block_hash in zip(blocks, block_hashes, strict=True):
            if block.is_null or block.block_hash is not None:
                continue
            if block_hash in self.cached_block_hash_to_block:
                continue
            block.block_hash = block_hash
            self.cached_block_hash_to_block[block_hash] = block

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        return self.cached_block_hash_to_block.get(block_hash)
