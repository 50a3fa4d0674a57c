"""Lab 11-04: adapter slots, the LRU cache the scheduler must obey.

Active adapters live in ``max_loras`` fixed slots. A request may start running only if its
adapter can have a slot while it runs; a running request pins its adapter, so it is never
evicted under it; among the adapters nobody pins, the least recently used makes room. Your
``AdapterSlotCache`` has the interface mini_vllm's scheduler and model runner call
(``LoRAConfig(slot_cache_cls=...)``), so when it passes it decides which requests a real engine
admits, step by step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class AdapterSlotCache:
    """``max_loras`` adapter slots (``ValueError`` unless ``max_loras`` is an int >= 1).

    Two books. *Residency*: which adapters hold slots and how recently each was used
    (``ensure``, ``resident``, ``stats``). *Pins*: how many running requests use each adapter
    (``pin``, ``unpin``, ``can_admit``). An adapter with at least one pin is never evicted.
    """

    def __init__(self, max_loras: int) -> None:
        raise NotImplementedError("AdapterSlotCache: empty slots and zeroed counters")

    def ensure(self, adapter_id: int) -> str:
        """Make ``adapter_id`` resident and the most recently used; return ``"hit"`` (it was
        resident), ``"load"`` (a slot was free) or ``"evict+load"`` (the least recently used
        adapter without a pin gave up its slot). A hit counts in ``hits``; a load or evict+load
        in ``misses`` (and the latter in ``evictions``). ``RuntimeError`` if every slot is taken
        by pinned adapters (nothing changes then)."""
        raise NotImplementedError("AdapterSlotCache.ensure: hit, load, or evict the coldest")

    def resident(self) -> list[int]:
        """The resident adapters, least recently used first."""
        raise NotImplementedError("AdapterSlotCache.resident: slotted adapters, coldest first")

    def stats(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ..., "evictions": ...}`` since construction."""
        raise NotImplementedError("AdapterSlotCache.stats: hit, miss and eviction counts")

    def can_admit(self, adapter_id: int) -> bool:
        """Whether a request using ``adapter_id`` may start running: its adapter is pinned
        already, or fewer than ``max_loras`` distinct adapters are pinned. Resident adapters
        without pins do not count: they can be evicted."""
        raise NotImplementedError("AdapterSlotCache.can_admit: may this adapter run now")

    def pin(self, adapter_id: int) -> None:
        """One more running request uses ``adapter_id``; ``RuntimeError`` if ``can_admit`` is
        false. Pinning does not load: the model runner's ``ensure`` does that."""
        raise NotImplementedError("AdapterSlotCache.pin: a running request holds the adapter")

    def unpin(self, adapter_id: int) -> None:
        """A request using ``adapter_id`` stopped running (finished, preempted, aborted); the
        adapter stays resident. ``ValueError`` if no running request pins it."""
        raise NotImplementedError("AdapterSlotCache.unpin: a running request let go")


def max_schedulable(adapter_ids: Sequence[int | None], max_loras: int,
                    running: Iterable[int | None] = ()) -> list[int]:
    """One step's admission walk by the adapter rule alone (no KV or token budget).

    ``adapter_ids``: the waiting requests' adapters in arrival order (``None``: base model);
    ``running``: the adapters of the requests already running. Returns the indices admitted,
    ascending. A base request is always admitted and claims nothing; an adapter already claimed
    (by a running request or earlier in this walk) is reused for free; a new adapter claims a
    slot if fewer than ``max_loras`` are claimed, else its request is deferred and the walk goes
    on. Example: ``[1, 2, 1, 3, 2, 4]`` with ``max_loras=2`` gives ``[0, 1, 2, 4]``.
    ``ValueError`` if ``max_loras < 1`` or ``running`` already uses more than ``max_loras``.
    """
    raise NotImplementedError("max_schedulable: the FCFS walk that defers, never blocks")
