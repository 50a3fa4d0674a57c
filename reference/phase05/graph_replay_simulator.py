"""Reference for kata 05-01: CUDA-graph capture and replay, simulated with a launch counter.

The same mechanism as ``mini_vllm/cudagraph.py`` (which adds capture sizes, warmups and the
piecewise runner); upstream ``vllm/compilation/cuda_graph.py: CUDAGraphWrapper``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Op = Callable[[np.ndarray], np.ndarray]


class LaunchCounter:
    """How many kernel launches the whole process has paid for."""

    n: int = 0

    @classmethod
    def reset(cls) -> None:
        """Start counting from zero."""
        cls.n = 0

    @classmethod
    def bump(cls, k: int = 1) -> None:
        """Record ``k`` more launches."""
        cls.n += k


def run_eager(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    """Apply ``ops`` to ``x`` in order; one launch per op."""
    for op in ops:
        x = op(x)
        LaunchCounter.bump(1)
    return x


@dataclass
class GraphEntry:
    """One captured graph: what it was recorded for, and the memory it reads and writes."""

    shape: tuple[int, ...]
    static_input: np.ndarray
    output: np.ndarray
    num_ops: int


class GraphRunner:
    """Capture ``ops`` once per input shape and dtype; replay each later call as one launch."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = list(ops)
        if not self.ops:
            raise ValueError("a graph records at least one op; got an empty op list")
        self.graphs: dict[tuple[tuple[int, ...], np.dtype], GraphEntry] = {}

    @property
    def num_captured(self) -> int:
        """How many graphs have been captured (one per distinct shape and dtype)."""
        return len(self.graphs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Capture on a new shape and dtype, replay on a known one; return the entry's output."""
        key = (x.shape, x.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            # Capture (constraint 1: one recording per shape). The graph owns its input memory.
            static_input = x.copy()
            output = np.array(run_eager(self.ops, static_input))
            self.graphs[key] = GraphEntry(x.shape, static_input, output, len(self.ops))
            return output
        # Replay (constraint 2: the recording reads the captured buffer, so copy into it).
        np.copyto(entry.static_input, x)
        result = entry.static_input
        for op in self.ops:  # numpy cannot record: recompute, but pay for one launch
            result = op(result)
        np.copyto(entry.output, result)
        LaunchCounter.bump(1)
        return entry.output
