"""The batched multi-adapter LoRA matmul: every row of a batch with its own adapter, in one call.

Upstream twins: ``vllm/lora/punica_wrapper/punica_base.py`` (``add_shrink``, ``add_expand``,
``add_lora_linear``), the CPU wrapper ``punica_cpu.py`` and the torch reference kernels
``vllm/lora/ops/torch_ops/lora_ops.py`` (``sgmv_shrink``, ``sgmv_expand``, ``bgmv_*``).

A LoRA adapter adds ``scaling * (x @ A.T) @ B.T`` to a linear layer's output ``x @ W.T``, with
``A: [r, in]`` (the *shrink*, in -> r) and ``B: [out, r]`` (the *expand*, r -> out); ``B @ A`` is
never built. In a batch, row ``i`` uses the adapter in slot ``indices[i]`` of the stacked slot
buffers (``lora_a[s]``, ``lora_b[s]``, ``scalings[s]``), or none when ``indices[i] == -1``. The
rows are grouped by slot (a stable sort), and each group runs one shrink and one expand on its
gathered rows, scattered back with ``y[rows] += ...``: one small GEMM pair per adapter in the
batch (SGMV, "segmented gather matrix-vector"), never a Python loop over rows. A row belongs to
one group, so the fancy-indexed ``+=`` never meets a duplicate index.

The scaling multiplies the shrink's output (``[n, r]``, the smallest tensor), as upstream's
``sgmv_shrink(..., scaling)`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

#: The slot index of a row that uses no adapter (upstream's ``-1`` in ``token_lora_indices``).
NO_LORA = -1


def lora_segments(indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(slot, rows)`` for every slot used in ``indices``, slots ascending, rows in batch order;
    rows with ``NO_LORA`` are left out."""
    indices = np.asarray(indices)
    order = np.argsort(indices, kind="stable")
    sorted_slots = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    stops = np.r_[starts[1:], len(sorted_slots)]
    for start, stop in zip(starts, stops, strict=True):
        slot = int(sorted_slots[start])
        if slot != NO_LORA:
            yield slot, order[start:stop]


def sgmv_shrink(x: np.ndarray, lora_a: np.ndarray, rows: np.ndarray, scaling: float
                ) -> np.ndarray:
    """``scaling * x[rows] @ lora_a.T``: one group's rows into the rank-r bottleneck."""
    shrunk = x[rows] @ lora_a.T
    shrunk *= scaling
    return shrunk


def sgmv_expand(y: np.ndarray, shrunk: np.ndarray, lora_b: np.ndarray, rows: np.ndarray
                ) -> None:
    """``y[rows] += shrunk @ lora_b.T`` (in place): one group back out to the layer's width."""
    y[rows] += shrunk @ lora_b.T


def add_lora_linear(y: np.ndarray, x: np.ndarray, lora_a: Mapping[int, np.ndarray] | np.ndarray,
                    lora_b: Mapping[int, np.ndarray] | np.ndarray,
                    scalings: Mapping[int, float] | np.ndarray, indices: np.ndarray) -> None:
    """``y[i] += scalings[s] * (x[i] @ lora_a[s].T) @ lora_b[s].T`` for every row ``i`` whose slot
    ``s = indices[i]`` is not ``NO_LORA``; other rows are untouched. In place.

    ``lora_a[s]``: ``[r, in]``, ``lora_b[s]``: ``[out, r]`` (stacked arrays or mappings by slot).
    """
    for slot, rows in lora_segments(indices):
        sgmv_expand(y, sgmv_shrink(x, lora_a[slot], rows, float(scalings[slot])),
                    lora_b[slot], rows)


def apply_lora_linear(x: np.ndarray, W: np.ndarray,
                      adapters: Mapping[int, tuple[np.ndarray, np.ndarray]],
                      adapter_ids: np.ndarray, scalings: Mapping[int, float]) -> np.ndarray:
    """A LoRA-aware linear layer: ``x @ W.T`` once for the whole batch, plus each row's adapter
    delta. ``W``: ``[out, in]``; ``adapters[s] = (A, B)``; ``adapter_ids[i]``: row ``i``'s slot or
    ``NO_LORA``. The engine's default ``LoRAConfig.lora_linear`` (kata 11-01's
    ``apply_batched`` has this signature and may replace it).
    """
    y = x @ W.T
    for slot, rows in lora_segments(adapter_ids):
        lora_a, lora_b = adapters[slot]
        sgmv_expand(y, sgmv_shrink(x, lora_a, rows, float(scalings[slot])), lora_b, rows)
    return y
