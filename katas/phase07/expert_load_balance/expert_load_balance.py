"""Kata 07-04 — expert load balance: what a router's decisions cost, and an EPLB rebalance.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase07/expert_load_balance``.

Vocabulary. A *load* is a count of (token, expert) assignments: a top-k router sends each token
to k experts, so T tokens make T * k assignments. ``loads[e]`` is expert e's count. With expert
parallelism (EP) experts live on *devices* (EP ranks); a step ends when the busiest one does.

A *placement* (second half) lists, per rank, the experts held in that rank's slots:
``[[0, 4], [1, 5], [2, 6], [3, 7]]`` is 8 experts round-robin over 4 ranks. An expert may sit in
several slots (replicas); ``-1`` marks an empty slot. Every bad argument raises one
``ValueError`` that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMPTY_SLOT = -1  # a physical slot that holds no expert


# -- the course's diagnostics -----------------------------------------------------------------


def expert_loads(topk_ids: np.ndarray, num_experts: int) -> np.ndarray:
    """Per-expert count of (token, expert) assignments.

    ``topk_ids`` is any integer array of expert ids (usually ``(T, k)``); returns an int64
    array of length exactly ``num_experts`` whose sum is ``topk_ids.size``. A token routed to
    the same expert twice counts twice (it costs two expert rows of compute). An id outside
    ``[0, num_experts)`` or ``num_experts < 1`` is a ``ValueError``.

    Example: ``[[1, 1], [0, 2], [2, 1]]`` over 4 experts -> ``[1, 3, 2, 0]``.
    """
    raise NotImplementedError("expert_loads: histogram of (token, expert) assignments")


def imbalance(loads: Sequence[float] | np.ndarray) -> float:
    """The imbalance factor: how many times its fair share the busiest expert carries.

    1.0 is perfect balance; E means one expert took everything. The course: 60% of the traffic
    on one of 8 experts gives an imbalance above 3 (about 5x its fair share). Empty, negative or
    all-zero loads are a ``ValueError``.
    """
    raise NotImplementedError("imbalance: the busiest expert against its fair share")


def device_loads(loads: Sequence[float] | np.ndarray, num_devices: int) -> np.ndarray:
    """Per-device load (float64, length ``num_devices``) under round-robin placement.

    Expert ``e`` lives on device ``e % num_devices``; a device's load is the sum of its experts'
    loads (co-located experts add up). With more devices than experts, the extra devices idle
    at 0. ``num_devices < 1`` is a ``ValueError``.
    """
    raise NotImplementedError("device_loads: per-device load, experts placed round-robin")


def ep_step_time(loads: Sequence[float] | np.ndarray, num_devices: int) -> float:
    """Duration of one EP step, in load units, under round-robin placement.

    Every step ends in an all-to-all barrier, so the step lasts as long as the busiest device.
    Example: loads 1..8 on 4 devices -> device loads ``[6, 8, 10, 12]`` -> 12.
    """
    raise NotImplementedError("ep_step_time: how long the all-to-all barrier waits")


def parallel_efficiency(loads: Sequence[float] | np.ndarray, num_devices: int) -> float:
    """The fraction of paid device time that does useful work, in ``(0, 1]``.

    The course's formula: ``sum(loads) / (num_devices * max(device_load))``. 1.0 when every
    device is equally busy; the example above (``[6, 8, 10, 12]``) gives 0.75. All-zero loads
    are a ``ValueError``.
    """
    raise NotImplementedError("parallel_efficiency: useful work over paid device time")


def expert_capacity(num_assignments: int, num_experts: int, capacity_factor: float) -> int:
    """A training-era per-expert buffer size, in assignments.

    The fair share ``num_assignments / num_experts`` scaled by ``capacity_factor`` and rounded
    UP to a whole assignment (a buffer never holds a fraction). A product that is a whole number
    in exact arithmetic (``1.1 * 100 / 10 = 11``) must give that number, not the next one.
    Examples: ``(128, 8, 1.0) -> 16``, ``(128, 8, 1.1) -> 18``. ``capacity_factor <= 0``,
    ``num_experts < 1`` or negative ``num_assignments`` is a ``ValueError``.
    """
    raise NotImplementedError("expert_capacity: the per-expert buffer for a capacity factor")


def dropped_tokens(loads: Sequence[float] | np.ndarray, capacity_factor: float) -> int:
    """Assignments a fixed-capacity MoE would drop: each expert's overflow, summed.

    Capacity is ``expert_capacity(sum(loads), len(loads), capacity_factor)``; an expert over it
    drops only what does not fit (``load - capacity``), an expert under it drops nothing.
    Example: ``[20, 10, 2, 0]`` at factor 1.0 -> capacity 8 -> 12 + 2 = 14 dropped.
    (Inference never drops: this is the training-era trade it refuses.)
    """
    raise NotImplementedError("dropped_tokens: overflow beyond each expert's capacity")


# -- beyond the course: EPLB-style rebalancing -------------------------------------------------


def rank_loads(
    loads: Sequence[float] | np.ndarray, placement: Sequence[Sequence[int]] | np.ndarray
) -> np.ndarray:
    """Per-rank load (float64, one entry per rank) of a placement with replicas.

    An expert with r replicas has its traffic split evenly: each slot holding it carries
    ``loads[e] / r``. A rank's load is the sum over its slots; empty slots (``-1``) carry
    nothing; ranks may hold different numbers of slots. Round-robin placement gives the same
    numbers as ``device_loads``. An expert id outside ``[0, len(loads))``, or an expert that
    has no slot at all (its tokens would have nowhere to go), is a ``ValueError``.

    Example: loads ``[10, 3, 4]``, placement ``[[0, 1], [0, 2]]`` -> ``[5 + 3, 5 + 4] = [8, 9]``.
    """
    raise NotImplementedError("rank_loads: per-rank load, replicas splitting the traffic")


def replicate_experts(loads: Sequence[float] | np.ndarray, num_slots: int) -> np.ndarray:
    """Replica count per expert (int64, length ``len(loads)``, summing to ``num_slots``).

    Every expert gets one slot; each of the ``num_slots - len(loads)`` spare slots, one at a
    time, goes to the expert whose load per replica is then the highest (ties: the lowest
    expert id). This is vLLM's rule: it minimises the heaviest single replica. Example: loads
    ``[10, 6, 1, 1]`` and 6 slots -> ``[2, 2, 1, 1]``. Fewer slots than experts is a
    ``ValueError``.
    """
    raise NotImplementedError("replicate_experts: spare slots to the hottest experts")


def rebalance(
    loads: Sequence[float] | np.ndarray,
    num_ranks: int,
    num_slots: int,
    current: Sequence[Sequence[int]] | np.ndarray | None = None,
) -> np.ndarray:
    """An EPLB placement: an int64 array ``(num_ranks, num_slots // num_ranks)`` of expert ids.

    The proposal: replicas as ``replicate_experts`` counts them, packed onto ranks greedily the
    way vLLM's default EPLB policy packs them (heaviest replica first, each onto the currently
    lightest rank that still has a free slot, ties to the lowest rank), every rank filling
    exactly its ``num_slots // num_ranks`` slots.

    The guarantee: the busiest rank (``rank_loads``) never gets busier. The proposal is adopted
    only if its max rank load is strictly lower than that of ``current`` (default: round-robin,
    expert ``e`` on rank ``e % num_ranks``); otherwise ``current`` is returned, its unused slots
    filled with ``-1``. Moving expert weights costs bandwidth, so a tie keeps what is there.

    Fewer slots than experts, slots that do not split evenly over the ranks, or a ``current``
    that does not fit (wrong number of ranks, a rank with too many slots) is a ``ValueError``.
    """
    raise NotImplementedError("rebalance: replicate hot experts and pack them onto ranks")
