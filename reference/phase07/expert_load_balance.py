"""Reference for kata 07-04: expert load balance, the MoE serving problem, and an EPLB rebalance.

Loads are counts of (token, expert) assignments. Experts sit on devices (EP ranks); a step lasts
as long as the busiest rank. The second half rebalances: replicate hot experts into spare slots,
then pack the replicas onto ranks greedily (vLLM's default EPLB policy, global variant), and
adopt the result only when it lowers the busiest rank's load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EMPTY_SLOT = -1  # a physical slot that holds no expert


def _as_loads(loads: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(loads, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"loads must be a non-empty 1-D sequence, got shape {arr.shape}")
    if (arr < 0).any():
        raise ValueError(f"loads are counts and cannot be negative, got {arr.min():g}")
    return arr


def _check_positive(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# -- the course's diagnostics -----------------------------------------------------------------


def expert_loads(topk_ids: np.ndarray, num_experts: int) -> np.ndarray:
    """Per-expert histogram of (token, expert) assignments, int64 of length ``num_experts``."""
    _check_positive("num_experts", num_experts)
    ids = np.asarray(topk_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
        raise ValueError(
            f"expert ids must lie in [0, {num_experts}), got {ids.min()}..{ids.max()}"
        )
    return np.bincount(ids.ravel().astype(np.int64), minlength=num_experts).astype(np.int64)


def imbalance(loads: Sequence[float] | np.ndarray) -> float:
    """The busiest expert's load over the mean load: 1.0 is perfect balance."""
    arr = _as_loads(loads)
    mean = arr.mean()
    if mean == 0:
        raise ValueError("imbalance of all-zero loads is undefined: nothing was routed")
    return float(arr.max() / mean)


def device_loads(loads: Sequence[float] | np.ndarray, num_devices: int) -> np.ndarray:
    """Per-device load with expert ``e`` on device ``e % num_devices`` (round-robin)."""
    arr = _as_loads(loads)
    _check_positive("num_devices", num_devices)
    per_device = np.zeros(num_devices, dtype=np.float64)
    np.add.at(per_device, np.arange(arr.size) % num_devices, arr)
    return per_device


def ep_step_time(loads: Sequence[float] | np.ndarray, num_devices: int) -> float:
    """One EP step's duration in load units: the busiest device's load (the barrier)."""
    return float(device_loads(loads, num_devices).max())


def parallel_efficiency(loads: Sequence[float] | np.ndarray, num_devices: int) -> float:
    """Useful work over paid work: ``sum(loads) / (num_devices * step time)``, in (0, 1]."""
    step = ep_step_time(loads, num_devices)
    if step == 0:
        raise ValueError("efficiency of all-zero loads is undefined: nothing was routed")
    return float(np.sum(loads) / (num_devices * step))


def expert_capacity(num_assignments: int, num_experts: int, capacity_factor: float) -> int:
    """Per-expert buffer size: ``ceil(capacity_factor * num_assignments / num_experts)``."""
    _check_positive("num_experts", num_experts)
    if num_assignments < 0:
        raise ValueError(f"num_assignments cannot be negative, got {num_assignments}")
    if not capacity_factor > 0:
        raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
    exact = capacity_factor * num_assignments / num_experts
    # 1.1 * 100 / 10 is 11.000000000000002 in floating point: an exact product must stay exact.
    return math.ceil(round(exact, 9))


def dropped_tokens(loads: Sequence[float] | np.ndarray, capacity_factor: float) -> int:
    """Assignments over each expert's capacity (the overflow only), summed over experts."""
    arr = _as_loads(loads)
    capacity = expert_capacity(int(round(arr.sum())), arr.size, capacity_factor)
    return int(np.maximum(arr - capacity, 0).sum())


# -- beyond the course: EPLB-style rebalancing -------------------------------------------------


def _placement_rows(placement: Sequence[Sequence[int]] | np.ndarray) -> list[list[int]]:
    return [[int(e) for e in rank] for rank in placement]


def rank_loads(
    loads: Sequence[float] | np.ndarray, placement: Sequence[Sequence[int]] | np.ndarray
) -> np.ndarray:
    """Per-rank load of a placement; an expert's load splits evenly over its replicas."""
    arr = _as_loads(loads)
    rows = _placement_rows(placement)
    if not rows:
        raise ValueError("a placement needs at least one rank")
    flat = [e for rank in rows for e in rank if e != EMPTY_SLOT]
    bad = sorted({e for e in flat if not 0 <= e < arr.size})
    if bad:
        raise ValueError(f"placement names experts {bad} outside [0, {arr.size})")
    replicas = np.bincount(np.asarray(flat, dtype=np.int64), minlength=arr.size)
    unplaced = np.flatnonzero(replicas == 0).tolist()
    if unplaced:
        raise ValueError(f"experts {unplaced} have no slot: their tokens have nowhere to go")
    per_replica = arr / replicas
    return np.array([sum(per_replica[e] for e in rank if e != EMPTY_SLOT) for rank in rows],
                    dtype=np.float64)


def replicate_experts(loads: Sequence[float] | np.ndarray, num_slots: int) -> np.ndarray:
    """Replica count per expert (int64): every expert once, spare slots to the hottest."""
    arr = _as_loads(loads)
    _check_positive("num_slots", num_slots)
    if num_slots < arr.size:
        raise ValueError(f"{arr.size} experts need at least {arr.size} slots, got {num_slots}")
    counts = np.ones(arr.size, dtype=np.int64)
    for _ in range(num_slots - arr.size):
        counts[int(np.argmax(arr / counts))] += 1  # the heaviest load per replica gets a copy
    return counts


def _round_robin(num_experts: int, num_ranks: int) -> list[list[int]]:
    return [list(range(rank, num_experts, num_ranks)) for rank in range(num_ranks)]


def _greedy_pack(arr: np.ndarray, counts: np.ndarray, num_ranks: int) -> np.ndarray:
    """Heaviest replica first, each onto the lightest rank that still has a free slot."""
    slots_per_rank = int(counts.sum()) // num_ranks
    experts = np.repeat(np.arange(arr.size), counts)
    weight = (arr / counts)[experts]
    order = np.argsort(-weight, kind="stable")
    placement = np.full((num_ranks, slots_per_rank), EMPTY_SLOT, dtype=np.int64)
    load = np.zeros(num_ranks)
    used = np.zeros(num_ranks, dtype=np.int64)
    for i in order:
        rank = int(np.argmin(np.where(used < slots_per_rank, load, np.inf)))
        placement[rank, used[rank]] = experts[i]
        load[rank] += weight[i]
        used[rank] += 1
    return placement


def rebalance(
    loads: Sequence[float] | np.ndarray,
    num_ranks: int,
    num_slots: int,
    current: Sequence[Sequence[int]] | np.ndarray | None = None,
) -> np.ndarray:
    """A placement ``(num_ranks, num_slots // num_ranks)`` that never raises the max rank load."""
    arr = _as_loads(loads)
    _check_positive("num_ranks", num_ranks)
    _check_positive("num_slots", num_slots)
    if num_slots < arr.size:
        raise ValueError(f"{arr.size} experts need at least {arr.size} slots, got {num_slots}")
    if num_slots % num_ranks:
        raise ValueError(f"{num_slots} slots do not split evenly over {num_ranks} ranks")
    slots_per_rank = num_slots // num_ranks
    current_rows = _round_robin(arr.size, num_ranks) if current is None else (
        _placement_rows(current))
    if len(current_rows) != num_ranks or any(len(r) > slots_per_rank for r in current_rows):
        raise ValueError(f"the current placement must have {num_ranks} ranks of at most "
                         f"{slots_per_rank} slots")
    proposal = _greedy_pack(arr, replicate_experts(arr, num_slots), num_ranks)
    # Moving expert weights costs bandwidth: adopt the proposal only if it actually helps.
    if rank_loads(arr, proposal).max() < rank_loads(arr, current_rows).max():
        return proposal
    kept = np.full((num_ranks, slots_per_rank), EMPTY_SLOT, dtype=np.int64)
    for rank, experts in enumerate(current_rows):
        kept[rank, : len(experts)] = experts
    return kept
