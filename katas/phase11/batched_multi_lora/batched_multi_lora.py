"""Lab 11-01: batched multi-adapter LoRA.

A LoRA adapter changes a linear layer ``y = x @ W.T`` (``W: [out, in]``) by a low-rank update
``scaling * B @ A`` with ``A: [r, in]`` and ``B: [out, r]``. Many adapters share one ``W``: a
batch whose rows belong to different tenants runs the base layer once and adds each row's own
adapter delta. Your ``apply_batched`` has the signature of mini_vllm's LoRA-aware linear
(``LoRAConfig(lora_linear=...)``), so when it passes it computes every targeted projection of a
real model serving several adapters at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The adapter id of a row that runs the base model only.
NO_ADAPTER = -1


def lora_scaling(lora_alpha: float, r: int) -> float:
    """The factor an adapter's delta is multiplied by, from its peft config (``lora_alpha``, the
    rank ``r``). Example: ``lora_alpha=16, r=8`` gives ``2.0``. ``ValueError`` if ``r < 1``.
    """
    raise NotImplementedError("lora_scaling: the factor a LoRA's delta is scaled by")


def lora_delta(x: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """The adapter's contribution for every row of ``x``.

    ``x``: ``[rows, in]``; ``A``: ``[r, in]``; ``B``: ``[out, r]``. Returns ``[rows, out]``,
    equal to ``x @ (scaling * B @ A).T`` but never forming the ``[out, in]`` product: the work
    is ``r * (in + out)`` multiplies per row. The result has rank at most ``r``.
    ``ValueError`` if the shapes do not chain.
    """
    raise NotImplementedError("lora_delta: one adapter's low-rank delta for a batch of rows")


def apply_single(x: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray,
                 scaling: float) -> np.ndarray:
    """The adapted layer for a batch that all uses one adapter: ``[rows, out]``, the base output
    ``x @ W.T`` plus ``lora_delta``."""
    raise NotImplementedError("apply_single: the base layer plus one adapter's delta")


def apply_batched(x: np.ndarray, W: np.ndarray,
                  adapters: Mapping[int, tuple[np.ndarray, np.ndarray]],
                  adapter_ids: Sequence[int] | np.ndarray,
                  scalings: Mapping[int, float]) -> np.ndarray:
    """A mixed batch: row ``i`` gets the adapter ``adapter_ids[i]`` names, or only the base
    layer when the id is ``NO_ADAPTER`` (-1). Returns ``[rows, out]``.

    ``adapters[id] = (A, B)`` and ``scalings[id]`` are keyed by adapter id (any ints >= 0, in
    any order; ranks may differ between adapters). Row ``i`` of the result equals
    ``apply_single`` on that row with its adapter, to float64 rounding (1e-12). ``W`` is read by
    exactly one product covering every row (use it as given: the tests count the products it
    enters), and each adapter in the batch does one shrink/expand over its rows together, not
    one per row. ``ValueError`` if ``adapter_ids`` does not have one id per row, or names an id
    missing from ``adapters`` or ``scalings``.
    """
    raise NotImplementedError("apply_batched: one base matmul plus each row's adapter delta")
