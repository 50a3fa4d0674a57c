"""Adapter slots: which ``max_loras`` adapters are resident, and which may be evicted.

Upstream twins: ``vllm/lora/models.py: LRUCacheLoRAModelManager`` (an LRU over the GPU slots;
``activate_adapter`` evicts the oldest when every slot is taken) and the scheduler's ``max_loras``
check in ``vllm/v1/core/sched/scheduler.py: Scheduler.schedule`` (``scheduled_loras``: a waiting
request whose adapter would make one distinct adapter too many this step is skipped).

Two halves, one promise:

* **pins** are the scheduler's side. A running request pins its adapter (``pin`` at admission,
  ``unpin`` when it finishes, is preempted or aborted); ``can_admit(id)`` says whether a waiting
  request with that adapter may join: its adapter is pinned already, or fewer than ``max_loras``
  distinct adapters are. So the running requests never need more than ``max_loras`` adapters.
* **residency** is the cache's side. Each step the model runner calls ``ensure(id)`` for every
  adapter the step uses: a hit refreshes its recency; a miss loads it into a free slot or, when
  every slot is taken, evicts the least recently used adapter that no running request pins.
  Because of the scheduler's promise such an adapter always exists; if none does, ``ensure``
  raises ``RuntimeError`` instead of taking a slot a running request reads.

Upstream pins for one step (the LRU touches every adapter of the batch before loading), and its
scheduler counts the distinct adapters of the requests it schedules this step. In mini_vllm every
running request is scheduled in every step that admits anybody (admission needs token budget
left after all of them), so the two rules admit the same requests.

``LoRAConfig(slot_cache_cls=...)`` replaces this class (kata 11-04): the engine builds it as
``cls(max_loras)`` and calls only ``can_admit``, ``pin``, ``unpin``, ``ensure``, ``resident``.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Literal

Outcome = Literal["hit", "load", "evict+load"]


class AdapterSlotCache:
    """``max_loras`` slots, LRU among the adapters no running request pins."""

    def __init__(self, max_loras: int) -> None:
        if not isinstance(max_loras, numbers.Integral) or isinstance(max_loras, bool) or (
                max_loras < 1):
            raise ValueError(f"max_loras must be an int >= 1, got {max_loras!r}")
        self.max_loras = int(max_loras)
        self._lru: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self._pins: dict[int, int] = {}  # adapter id -> running requests holding it
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- the cache ------------------------------------------------------------------------------

    def ensure(self, adapter_id: int) -> Outcome:
        """Make ``adapter_id`` resident and most recently used; say how: ``"hit"``, ``"load"``
        (a free slot) or ``"evict+load"`` (the least recently used unpinned adapter made room)."""
        if adapter_id in self._lru:
            self._lru.move_to_end(adapter_id)
            self.hits += 1
            return "hit"
        outcome: Outcome = "load"
        if len(self._lru) >= self.max_loras:
            victim = next((a for a in self._lru if a not in self._pins), None)
            if victim is None:
                raise RuntimeError(
                    f"adapter {adapter_id} needs a slot, but all {self.max_loras} hold adapters "
                    f"pinned by running requests {list(self._lru)}: the scheduler admitted more "
                    f"distinct adapters than max_loras"
                )
            del self._lru[victim]
            self.evictions += 1
            outcome = "evict+load"
        self.misses += 1
        self._lru[adapter_id] = None
        return outcome

    def resident(self) -> list[int]:
        """The adapters in slots, least recently used first."""
        return list(self._lru)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions}

    # -- the scheduler's pins ------------------------------------------------------------------

    def can_admit(self, adapter_id: int) -> bool:
        """Whether a request using ``adapter_id`` may start running now."""
        return adapter_id in self._pins or len(self._pins) < self.max_loras

    def pin(self, adapter_id: int) -> None:
        """A request using ``adapter_id`` starts running; ``RuntimeError`` if it may not."""
        if not self.can_admit(adapter_id):
            raise RuntimeError(f"cannot pin adapter {adapter_id}: {len(self._pins)} distinct "
                               f"adapters are pinned already (max_loras={self.max_loras})")
        self._pins[adapter_id] = self._pins.get(adapter_id, 0) + 1

    def unpin(self, adapter_id: int) -> None:
        """A request using ``adapter_id`` stopped running; ``ValueError`` if none was."""
        count = self._pins.get(adapter_id, 0)
        if count < 1:
            raise ValueError(f"adapter {adapter_id} is not pinned by any running request")
        if count == 1:
            del self._pins[adapter_id]
        else:
            self._pins[adapter_id] = count - 1

    def pinned(self) -> dict[int, int]:
        """Adapter id -> how many running requests pin it."""
        return dict(self._pins)
