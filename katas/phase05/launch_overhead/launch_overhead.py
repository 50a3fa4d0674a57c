"""Kata 05-02 — launch overhead and the eager/graph crossover, as exact integer formulas.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase05/launch_overhead``.

The model (kata 05-01's accounting): a model is ``num_ops`` kernels. An eager call launches
every one of them. A graph's first call captures it at ``capture_cost_ops`` launches (default
``num_ops``: one pass; more models warmup runs before the recording); every later call replays
it at 1 launch. One launch stands for a few microseconds of CPU time; GPU compute is not
modelled.

Bad input raises ``ValueError`` naming the argument: ``num_ops`` below 1, a call count ``k``
below 0 (below 1 for :func:`launch_speedup`), or a ``capture_cost_ops`` below ``num_ops`` (a
capture runs every op at least once). ``None`` for ``capture_cost_ops`` means ``num_ops``.
"""

from __future__ import annotations


def eager_launches(num_ops: int, k: int) -> int:
    """Launches of ``k`` eager calls of a ``num_ops``-op model.

    ``eager_launches(3, 100) == 300``; no calls cost nothing.
    """
    raise NotImplementedError("eager_launches: launches of k eager calls")


def graph_launches(num_ops: int, k: int, capture_cost_ops: int | None = None) -> int:
    """Launches of ``k`` calls of the same shape through one graph: the first call captures,
    the others replay.

    ``graph_launches(3, 100) == 102``; no calls cost nothing (nothing is captured).
    """
    raise NotImplementedError("graph_launches: launches of k calls through a graph")


def crossover(num_ops: int, capture_cost_ops: int | None = None) -> int | None:
    """The break-even point: the smallest call count ``k >= 1`` at which the graph's total
    launches are strictly fewer than eager's, or ``None`` when no ``k`` ever gets there.

    With the default capture cost and more than one op, that is the second call; with one op,
    never. A dearer capture moves it later.
    """
    raise NotImplementedError("crossover: the first call count at which the graph is cheaper")


def launch_speedup(num_ops: int, k: int, capture_cost_ops: int | None = None) -> float:
    """Eager launches divided by graph launches after ``k >= 1`` calls (a float).

    After 100 calls of a 3-op model: ``300 / 102``. For more than one op it grows with every
    call and stays below ``num_ops``; for one op it is 1 at default capture cost.
    """
    raise NotImplementedError("launch_speedup: eager launches over graph launches after k calls")


def asymptotic_speedup(num_ops: int, capture_cost_ops: int | None = None) -> float:
    """The limit of :func:`launch_speedup` as the number of calls grows without bound (a
    float): the launch-overhead ceiling of capturing this model."""
    raise NotImplementedError("asymptotic_speedup: the ceiling of the launch speedup")
