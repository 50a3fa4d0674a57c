"""Reference: adapter slots, the LRU cache the scheduler must obey (lab 11-04)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


class AdapterSlotCache:
    """``max_loras`` slots: LRU among the adapters that no running request pins."""

    def __init__(self, max_loras: int) -> None:
        if not isinstance(max_loras, int) or isinstance(max_loras, bool) or max_loras < 1:
            raise ValueError(f"max_loras must be an int >= 1, got {max_loras!r}")
        self.max_loras = max_loras
        self._lru: OrderedDict[int, None] = OrderedDict()  # coldest first
        self._pins: dict[int, int] = {}
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def ensure(self, adapter_id: int) -> str:
        if adapter_id in self._lru:
            self._lru.move_to_end(adapter_id)
            self._hits += 1
            return "hit"
        outcome = "load"
        if len(self._lru) >= self.max_loras:
            victim = next((a for a in self._lru if a not in self._pins), None)
            if victim is None:
                raise RuntimeError(f"adapter {adapter_id} needs a slot but every slot holds a "
                                   f"pinned adapter: {list(self._lru)}")
            del self._lru[victim]
            self._evictions += 1
            outcome = "evict+load"
        self._misses += 1
        self._lru[adapter_id] = None
        return outcome

    def resident(self) -> list[int]:
        return list(self._lru)

    def stats(self) -> dict[str, int]:
        return {"hits": self._hits, "misses": self._misses, "evictions": self._evictions}

    def can_admit(self, adapter_id: int) -> bool:
        return adapter_id in self._pins or len(self._pins) < self.max_loras

    def pin(self, adapter_id: int) -> None:
        if not self.can_admit(adapter_id):
            raise RuntimeError(f"cannot pin adapter {adapter_id}: {len(self._pins)} distinct "
                               f"adapters are pinned (max_loras={self.max_loras})")
        self._pins[adapter_id] = self._pins.get(adapter_id, 0) + 1

    def unpin(self, adapter_id: int) -> None:
        count = self._pins.get(adapter_id, 0)
        if count < 1:
            raise ValueError(f"adapter {adapter_id} is not pinned")
        if count == 1:
            del self._pins[adapter_id]
        else:
            self._pins[adapter_id] = count - 1


def max_schedulable(adapter_ids: Sequence[int | None], max_loras: int,
                    running: Iterable[int | None] = ()) -> list[int]:
    """Indices of the waiting requests one step admits, FCFS, by the adapter rule alone."""
    if max_loras < 1:
        raise ValueError(f"max_loras must be >= 1, got {max_loras}")
    claimed = {a for a in running if a is not None}
    if len(claimed) > max_loras:
        raise ValueError(f"running requests already use {len(claimed)} adapters "
                         f"{sorted(claimed)}, more than max_loras={max_loras}")
    admitted: list[int] = []
    for index, adapter in enumerate(adapter_ids):
        if adapter is None or adapter in claimed:
            admitted.append(index)
        elif len(claimed) < max_loras:
            claimed.add(adapter)
            admitted.append(index)
        # else: deferred to a later step; the walk goes on
    return admitted
