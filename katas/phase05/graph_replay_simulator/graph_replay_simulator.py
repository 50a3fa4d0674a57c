"""Kata 05-01 — CUDA-graph capture and replay, simulated: count launches, never time them.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase05/graph_replay_simulator``.

An *op* is a callable taking one numpy array and returning a new one: one GPU kernel. A model
is a list of ops applied in order. Every kernel launch the simulated CPU pays for is one
``LaunchCounter.bump``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Op = Callable[[np.ndarray], np.ndarray]


class LaunchCounter:
    """How many kernel launches the whole process has paid for.

    One tally for the process, not one per runner: ``n`` is an attribute of the class itself, and
    ``reset`` and ``bump`` are class methods, so ``LaunchCounter.bump()`` anywhere adds to the
    same ``LaunchCounter.n`` everyone reads.
    """

    n: int = 0

    @classmethod
    def reset(cls) -> None:
        """Set the tally back to 0."""
        raise NotImplementedError("LaunchCounter.reset: start counting from zero")

    @classmethod
    def bump(cls, k: int = 1) -> None:
        """Add ``k`` launches to the tally."""
        raise NotImplementedError("LaunchCounter.bump: record k more launches")


def run_eager(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    """Run the model eagerly: apply ``ops`` to ``x`` in list order and return the result.

    Costs one launch per op, on every call (a 3-op model: 3 launches per call, 300 over 100
    calls). An empty list returns ``x`` and costs nothing.
    """
    raise NotImplementedError("run_eager: apply the ops in order, one launch each")


@dataclass
class GraphEntry:
    """One captured graph (upstream ``CUDAGraphEntry``).

    ``shape``: the input shape it was recorded for. ``static_input``: the input buffer the
    recording reads, owned by the graph. ``output``: the output buffer the recording writes.
    ``num_ops``: how many ops were recorded.
    """

    shape: tuple[int, ...]
    static_input: np.ndarray
    output: np.ndarray
    num_ops: int


class GraphRunner:
    """Run ``ops`` through captured graphs: capture once per input shape and dtype, then replay.

    ``graphs`` is a dict with one :class:`GraphEntry` per captured graph, keyed by
    ``(x.shape, x.dtype)``: a recording holds for exactly one shape and dtype. ``GraphRunner([])``
    raises ``ValueError`` (a graph records at least one op).
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        """Keep the ops; no graph is captured yet (``graphs`` is empty)."""
        raise NotImplementedError("GraphRunner.__init__: keep the ops, start with no graphs")

    @property
    def num_captured(self) -> int:
        """How many graphs have been captured so far."""
        raise NotImplementedError("GraphRunner.num_captured: how many graphs exist")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The ops applied to ``x``: equal to ``run_eager(ops, x)``, at a different price.

        - **Capture** (no graph for ``x``'s shape and dtype yet): costs one launch per op, like
          an eager call; adds a ``GraphEntry`` whose ``static_input`` is a copy of ``x`` in
          memory the graph owns (never the caller's array) and whose ``output`` holds the result.
        - **Replay** (a graph exists): costs exactly one launch, whatever the number of ops. The
          recording reads the memory it was captured from, so the new input must end up *in*
          the entry's ``static_input`` array: that same array object, at the same address, on
          every replay. The result is written into the entry's ``output`` array.

        Either way the value returned is the entry's ``output`` array itself, as upstream returns
        ``entry.output``: every call with one shape returns the same array, overwritten by the
        next replay (copy a result to keep it).

        The caller's ``x`` is never modified. Capture with ones of shape (4,) through ops that
        multiply by 10, then replay with fives: the replay returns fifties.
        """
        raise NotImplementedError("GraphRunner.__call__: capture a new shape, replay a known one")
