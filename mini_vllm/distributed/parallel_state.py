"""The tensor-parallel group, in one process: world size, ranks, and the two collectives.

Upstream twins: ``vllm/distributed/parallel_state.py`` (``GroupCoordinator``, ``get_tp_group``,
``get_tensor_model_parallel_world_size`` / ``_rank``) and ``vllm/distributed/communication_op.py``
(``tensor_model_parallel_all_reduce``, ``tensor_model_parallel_all_gather``), and
``vllm/distributed/utils.py: divide``.

Upstream, every rank is a worker process on its own GPU; each calls ``all_reduce(its_tensor)`` and
NCCL (or gloo on CPU) hands every rank the element-wise sum. Here all ranks live in one Python
process and run one after another, so a collective takes *all ranks' tensors at once*, as a list
in rank order, and returns the one result every rank would receive:

* ``all_reduce(partials)``: the element-wise sum, added in rank order (rank 0 + rank 1 + ...),
  so the result is deterministic; NCCL's ring adds in another order, which is why real TP = 2
  and TP = 1 outputs differ in the last bits.
* ``all_gather(parts, axis)``: the concatenation along ``axis``, in rank order.

The group counts the collectives it runs (``num_all_reduces``, ``num_all_gathers``): tests count
communication instead of timing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def divide(numerator: int, denominator: int, what: str) -> int:
    """``numerator // denominator``, or ``ValueError`` naming ``what`` when it does not divide.

    Upstream's ``divide`` asserts; a tensor-parallel size that does not split a dimension is a
    configuration error the user must see, so here it is a ``ValueError``.
    """
    if denominator < 1 or numerator % denominator:
        raise ValueError(f"{what} ({numerator}) is not divisible by the tensor-parallel size "
                         f"({denominator}): every rank must get an equal share")
    return numerator // denominator


class TensorParallelGroup:
    """``world_size`` ranks, numbered ``0 .. world_size - 1``, and their collectives."""

    def __init__(self, world_size: int) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int | np.integer) \
                or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        self.world_size = int(world_size)
        self.num_all_reduces = 0
        self.num_all_gathers = 0

    @property
    def ranks(self) -> range:
        return range(self.world_size)

    def _check(self, tensors: Sequence[np.ndarray], op: str) -> list[np.ndarray]:
        tensors = list(tensors)
        if len(tensors) != self.world_size:
            raise ValueError(f"{op}: expected one tensor per rank ({self.world_size}), got "
                             f"{len(tensors)}")
        return [np.asarray(t) for t in tensors]

    def all_reduce(self, partials: Sequence[np.ndarray]) -> np.ndarray:
        """The element-wise sum of every rank's tensor (all the same shape), in rank order."""
        partials = self._check(partials, "all_reduce")
        shapes = {p.shape for p in partials}
        if len(shapes) != 1:
            raise ValueError(f"all_reduce: every rank must contribute the same shape, got "
                             f"{[p.shape for p in partials]}")
        self.num_all_reduces += 1
        out = partials[0].copy()
        for partial in partials[1:]:
            out += partial
        return out

    def all_gather(self, parts: Sequence[np.ndarray], axis: int = -1) -> np.ndarray:
        """Every rank's tensor concatenated along ``axis``, in rank order."""
        parts = self._check(parts, "all_gather")
        self.num_all_gathers += 1
        return np.concatenate(parts, axis=axis)

    def reset_counters(self) -> None:
        self.num_all_reduces = 0
        self.num_all_gathers = 0

    def __repr__(self) -> str:
        return (f"TensorParallelGroup(world_size={self.world_size}, all_reduces="
                f"{self.num_all_reduces}, all_gathers={self.num_all_gathers})")
