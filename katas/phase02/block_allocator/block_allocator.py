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
    """Return the ``int`` hash of one full block, chained onto its parent block's hash.

    ``parent_hash`` is the hash of the block before this one, or None for the first block of
    a sequence; ``token_ids`` are this block's tokens (a list or a tuple: the same tokens give
    the same hash either way).

    Contract:

    - chained: the same tokens under a different parent hash to a different value, so a hit
      on block k means blocks 0..k all match (``cd`` after ``ab`` is not ``cd`` after ``xy``);
    - order matters inside a block: ``[3, 4]`` and ``[4, 3]`` differ;
    - the same in every Python process. Python salts the hash of a ``str`` (and ``bytes``) per
      process, and before 3.12 ``hash(None)`` changes from run to run too.
    """
    raise NotImplementedError("hash_block_tokens: the chained hash of one full block")


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
        """Remove and return the front block (the next eviction candidate).

        Raises ``ValueError`` when the queue is empty. The returned block is unlinked: its
        ``prev_free`` and ``next_free`` are None.
        """
        raise NotImplementedError("popleft: take the front block out of the queue")

    def remove(self, block: KVCacheBlock) -> None:
        """Take ``block`` out of the queue, wherever it sits, in O(1).

        The cost must not depend on the queue's length (no walk). Afterwards the other blocks
        keep their order, ``block.prev_free`` and ``block.next_free`` are None ("not in the
        queue"), and ``num_free_blocks`` is one less.
        """
        raise NotImplementedError("remove: take a block out of the middle of the queue, O(1)")

    def append(self, block: KVCacheBlock) -> None:
        """Put ``block`` at the back: it is evicted after every block already queued.

        ``num_free_blocks`` is one more afterwards.
        """
        raise NotImplementedError("append: put a block at the back of the queue")

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """Every block in the queue, front to back, as a list; never the sentinels.

        For tests and checkers: this one may be O(n).
        """
        raise NotImplementedError("get_all_free_blocks: list the queued blocks, front to back")

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
        """How many blocks sit in the free queue, in O(1)."""
        raise NotImplementedError("get_num_free_blocks: count the free blocks")

    def get_usage(self) -> float:
        """Fraction of the usable blocks in use: 0.0 when all are free, 1.0 when none are.

        The null block is not usable and never counts. With 4 usable blocks, holding 2 reads
        0.5 and holding 3 reads 0.75.
        """
        raise NotImplementedError("get_usage: the fraction of usable blocks in use")

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Hand out ``num_blocks`` blocks from the front of the free queue, in queue order.

        Each comes back with ``ref_cnt`` 1 and no cached content: a block that was still a
        prefix-cache entry while it waited in the queue is evicted now (lazy eviction), so no
        later lookup finds it. Raises ``ValueError``, and changes nothing, when fewer than
        ``num_blocks`` blocks are free.
        """
        raise NotImplementedError("get_new_blocks: hand out blocks from the free queue")

    def _maybe_evict(self, block: KVCacheBlock) -> bool:
        """Forget ``block``'s cached content; return True if it had any.

        Afterwards the block has no hash and no index entry points at it. An entry for the
        same hash that belongs to another block (a twin) is not this block's to drop.
        """
        raise NotImplementedError("_maybe_evict: forget what this block caches")

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take one more reference on each block (a prefix-cache hit adopting it).

        A block nobody held was waiting in the free queue as an eviction candidate; once
        touched it is held, so it must no longer be in the queue (I1), and getting it out
        costs O(1). It keeps its hash. The null block is ignored.
        """
        raise NotImplementedError("touch: take a reference on each block (revive free ones)")

    def free_blocks(self, ordered_blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference on each block, in the order given.

        A block still held by someone else stays out of the queue. A block nobody holds any
        more joins the back of the free queue; blocks freed together join in the order given,
        which makes the caller's order the eviction order. A freed block keeps its hash and
        stays findable until it is reused (I4). The null block is ignored; a block whose
        ``ref_cnt`` is already 0 raises ``ValueError``.
        """
        raise NotImplementedError("free_blocks: drop a reference on each block")

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
        raise NotImplementedError("cache_full_blocks: register full blocks in the index")

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        """The block indexed under ``block_hash``, or None."""
        raise NotImplementedError("get_cached_block: find the block cached under a hash")
