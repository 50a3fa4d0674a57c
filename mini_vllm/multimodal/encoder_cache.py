"""The encoder cache (the scheduler's view) and the rule that fits a prefill chunk to it.

Upstream twins: ``vllm/v1/core/encoder_cache_manager.py: EncoderCacheManager`` and
``vllm/v1/core/sched/scheduler.py: Scheduler._try_schedule_encoder_inputs``.

The encoder cache is a second cache next to the KV cache, in units of encoder embeddings (image
tokens) and keyed by content hash. ``cached[mm_hash]`` is the set of requests referencing an
entry (the block pool's ``ref_cnt``); an entry nobody references waits in ``freeable``, oldest
first (the free queue), and is evicted only when an allocation needs its room; what was evicted
is reported by ``get_freed_mm_hashes`` so that the runner drops the tensors. Here the
"tensors" live in ``ModelRunner.encoder_cache``.

:func:`plan_encoder_inputs` is the scheduling rule (kata 13-03's ``plan_chunk`` has its
signature and can replace it, ``MultiModalConfig.plan_chunk``): an image is encoded whole, paid
for in full out of the step's encoder budget, before any of its positions is computed; a chunk
that cannot get an image's encoding stops just before the image. Once the encoding exists (cached
or scheduled this step), a chunk may end anywhere inside the image's run.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any


class EncoderCacheError(AssertionError):
    """A step computes an image position whose encoding is not in the runner's encoder cache:
    a bug in the scheduling rule, never in the request (like ``KVCacheError``)."""


def _count(name: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def plan_encoder_inputs(
    num_computed_tokens: int,
    num_new_tokens: int,
    placeholders: Sequence[Any],
    encoder_budget: int,
    cached: Collection[str],
) -> tuple[int, list[str]]:
    """``(num_new_tokens, mm_hashes to encode)`` for the chunk ``[num_computed_tokens,
    num_computed_tokens + num_new_tokens)`` of a prompt whose images are ``placeholders``
    (``mm_hash``, ``offset``, ``length``; sorted, disjoint). See the module docstring."""
    num_computed_tokens = _count("num_computed_tokens", num_computed_tokens)
    num_new_tokens = _count("num_new_tokens", num_new_tokens)
    encoder_budget = _count("encoder_budget", encoder_budget)
    previous_end = 0
    for item in placeholders:
        if item.offset < previous_end:
            raise ValueError(f"placeholders must be sorted by offset and disjoint, got "
                             f"{item.mm_hash!r} at {item.offset} before position {previous_end}")
        previous_end = item.offset + item.length
    to_encode: list[str] = []
    end = num_computed_tokens + num_new_tokens
    for item in placeholders:
        start = item.offset
        if start >= end:
            break
        if start + item.length <= num_computed_tokens:
            continue
        if item.mm_hash in cached or item.mm_hash in to_encode:
            continue
        if item.length > encoder_budget:
            num_new_tokens = max(start - num_computed_tokens, 0)
            break
        encoder_budget -= item.length
        to_encode.append(item.mm_hash)
    return num_new_tokens, to_encode


class EncoderCacheManager:
    """Which encoder outputs exist, who references them, and room for more (``cache_size``
    embeddings). ``num_freeable_slots`` counts free slots plus those of unreferenced entries."""

    def __init__(self, cache_size: int) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"encoder cache_size must be an int >= 1, got {cache_size!r}")
        self.cache_size = cache_size
        self.num_free_slots = cache_size
        self.num_freeable_slots = cache_size
        self.cached: dict[str, set[str]] = {}
        self.freeable: OrderedDict[str, int] = OrderedDict()
        self.freed: list[str] = []
        self._sizes: dict[str, int] = {}
        self.num_evictions = 0

    def check_and_update_cache(self, request_id: str, mm_hash: str) -> bool:
        """Whether ``mm_hash`` is cached; if so ``request_id`` now references it (an
        unreferenced entry leaves ``freeable``: the block pool's ``touch``)."""
        refs = self.cached.get(mm_hash)
        if refs is None:
            return False
        if not refs:
            self.num_freeable_slots -= self.freeable.pop(mm_hash)
        refs.add(request_id)
        return True

    def can_allocate(self, num_embeds: int) -> bool:
        """Make room for ``num_embeds`` more, evicting unreferenced entries oldest first;
        ``False`` (nothing evicted) if even evicting all of them would not do."""
        if num_embeds > self.num_freeable_slots:
            return False
        while num_embeds > self.num_free_slots:
            mm_hash, size = self.freeable.popitem(last=False)
            del self.cached[mm_hash]
            del self._sizes[mm_hash]
            self.freed.append(mm_hash)
            self.num_free_slots += size
            self.num_evictions += 1
        return True

    def allocate(self, request_id: str, mm_hash: str, num_embeds: int) -> None:
        """Record a new entry referenced by ``request_id`` (after ``can_allocate``)."""
        if mm_hash in self.cached:
            raise ValueError(f"encoder output {mm_hash[:12]} is already cached")
        if num_embeds > self.num_free_slots:
            raise ValueError(f"no room for {num_embeds} embeddings: call can_allocate first")
        self.cached[mm_hash] = {request_id}
        self._sizes[mm_hash] = num_embeds
        self.num_free_slots -= num_embeds
        self.num_freeable_slots -= num_embeds

    def free_encoder_input(self, request_id: str, mm_hash: str) -> None:
        """``request_id`` no longer needs ``mm_hash``; the last reference makes it freeable."""
        refs = self.cached.get(mm_hash)
        if refs is None or request_id not in refs:
            return
        refs.discard(request_id)
        if not refs:
            size = self._sizes[mm_hash]
            self.freeable[mm_hash] = size
            self.num_freeable_slots += size

    def free(self, request_id: str, mm_hashes: Collection[str]) -> None:
        """Drop every reference of a finished, preempted or aborted request."""
        for mm_hash in mm_hashes:
            self.free_encoder_input(request_id, mm_hash)

    def get_freed_mm_hashes(self) -> list[str]:
        """Entries evicted since the last call (the runner deletes their outputs)."""
        freed, self.freed = self.freed, []
        return freed
