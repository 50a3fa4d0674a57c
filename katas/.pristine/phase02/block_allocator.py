"""Kata 02-01 — build the paged KV block allocator.

Fill in every body that raises ``NotImplementedError``. Suggested order, each layer testable
before the next: the free queue, then ``hash_block_tokens``, then the pool.

Given: ``KVCacheBlock`` (mini_vllm's metadata record: ``block_id``, ``ref_cnt``, ``block_hash``,
``is_null``, the two link fields ``prev_free`` / ``next_free`` and ``reset_hash()``), the queue's
two sentinels, and the pool's constructor (which reserves block 0 as the null block).

Grade it with ``pytest --impl=mine katas/phase02/block_allocator``. When it is green, your pool
also drives the whole mini_vllm engine (``LLMEngine(block_pool_cls=BlockPool)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mini_vllm.block_pool import BlockHash, KVCacheBlock


def hash_block_tokens(parent_hash: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """Return the hash of one full block, chained onto its parent block's hash.

    Hash the pair ``(parent_hash, the block's tokens as a tuple of ints)`` with Python's
    ``hash``. Putting the parent inside is what makes a hit on block k mean that blocks
    0..k all match: ``ab|cd`` and ``xy|cd`` must give the second block different hashes.

    ``parent_hash`` is None for the first block of a sequence: hash a fixed int (say 0) in
    its place. The result must be the same in every process, and Python salts the hash of a
    ``str`` per process, and before 3.12 derives ``hash(None)`` from None's memory address.
    """
    raise NotImplementedError("hash_block_tokens: hash((parent_hash, tuple(token_ids)))")


class FreeKVCacheBlockQueue:
    """A doubly linked list of the free blocks, threaded through their ``prev_free`` /
    ``next_free`` fields. The front is evicted first, so the order *is* the eviction policy.

    Why not ``collections.deque``: a prefix-cache hit must pull its block out of the middle of
    the queue, and a deque does that in O(n). Here ``remove`` relinks two neighbours, O(1).
    """

    def __init__(self, blocks: Iterable[KVCacheBlock]) -> None:
        # Given: two sentinels that are never handed out. With them, every real block always
        # has a neighbour on each side, so you never special-case an end or an empty queue.
        self._head = KVCacheBlock(block_id=-1)
        self._tail = KVCacheBlock(block_id=-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def popleft(self) -> KVCacheBlock:
        """Remove and return the front block (the one after ``_head``).

        Raise ``ValueError`` when the queue is empty (the front is ``_tail``).
        """
        raise NotImplementedError("popleft: unlink and return the block after _head")

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink ``block`` from anywhere in the queue in O(1).

        Point its two neighbours at each other, set the block's own ``prev_free`` and
        ``next_free`` to None (None links mean "not in the queue"), and keep
        ``num_free_blocks`` exact. Never walk the list.
        """
        raise NotImplementedError("remove: relink the block's two neighbours, O(1)")

    def append(self, block: KVCacheBlock) -> None:
        """Link ``block`` in at the back, just before ``_tail``; count it."""
        raise NotImplementedError("append: link the block in just before _tail")

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """Every block in the queue, front to back (walk from ``_head`` to ``_tail``)."""
        raise NotImplementedError("get_all_free_blocks: walk next_free from _head to _tail")

    def __len__(self) -> int:
        return self.num_free_blocks


class BlockPool:
    """Hands out blocks, takes them back, and remembers which full blocks hold which prefix.

    The constructor is given; it is called as ``BlockPool(num_blocks=..., enable_caching=...)``
    by mini_vllm's ``KVCacheManager``, so the engine can run on your pool.
    """

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(block_id=i) for i in range(num_blocks)]
        self.free_queue = FreeKVCacheBlockQueue(self.blocks)
        # The prefix-cache index: chained hash -> the one block registered under it.
        self.cached_block_hash_to_block: dict[BlockHash, KVCacheBlock] = {}
        # Block 0 is the null block, a placeholder for "no block here" in block tables. It
        # leaves the queue now and must never be handed out, freed, re-queued, touched or cached.
        self.null_block = self.free_queue.popleft()
        self.null_block.is_null = True

    def get_num_free_blocks(self) -> int:
        """How many blocks sit in the free queue (O(1): read the queue's counter)."""
        raise NotImplementedError("get_num_free_blocks: the free queue's num_free_blocks")

    def get_usage(self) -> float:
        """Fraction of the usable blocks in use: 0.0 when all are free, 1.0 when none are.

        The null block is not usable: leave it out of the denominator (``num_blocks - 1``).
        """
        raise NotImplementedError("get_usage: 1 - free / (num_blocks - 1)")

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Hand out ``num_blocks`` blocks from the front of the free queue.

        First, if fewer are free, raise ``ValueError`` and change nothing. Then for each: pop
        it, evict whatever it still caches (``_maybe_evict``), check its ``ref_cnt`` is 0, set
        it to 1. Return them in the order popped.
        """
        raise NotImplementedError("get_new_blocks: popleft, _maybe_evict, ref_cnt = 1")

    def _maybe_evict(self, block: KVCacheBlock) -> bool:
        """Forget ``block``'s cached content; return True if it had any.

        If it has a hash: delete the index entry *only if the index maps that hash to this
        very block* (a twin block may own the entry), then ``block.reset_hash()``.
        """
        raise NotImplementedError("_maybe_evict: drop this block's index entry and its hash")

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take one more reference on each block (a prefix-cache hit adopting it).

        A block with ``ref_cnt == 0`` is sitting in the free queue as an eviction candidate:
        ``remove`` it first (revival, O(1)). Skip the null block.
        """
        raise NotImplementedError("touch: remove free blocks from the queue, then ref_cnt += 1")

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference on each block, in the order given.

        A block that reaches 0 is appended to the back of the free queue, so the caller's order
        becomes the eviction order. It keeps its hash: it stays findable until it is reused.
        Skip the null block; raise ``ValueError`` for a block whose ``ref_cnt`` is already 0.
        """
        raise NotImplementedError("free_blocks: ref_cnt -= 1; at 0, append to the free queue")

    def cache_full_blocks(
        self, blocks: Sequence[KVCacheBlock], block_hashes: Sequence[BlockHash]
    ) -> None:
        """Register each block under its hash in ``cached_block_hash_to_block``.

        The caller passes only full blocks, with one hash each. Do nothing when
        ``enable_caching`` is False. Skip the null block and blocks that already carry a hash.
        If the hash is already indexed to another block (same content computed twice), keep
        the existing entry and leave this block unhashed: the pool never swaps a request's
        block for its twin. Otherwise set ``block.block_hash`` and add the index entry.
        """
        raise NotImplementedError("cache_full_blocks: set block_hash and index hash -> block")

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        """The block indexed under ``block_hash``, or None."""
        raise NotImplementedError("get_cached_block: look the hash up in the index")
