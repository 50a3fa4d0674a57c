"""One tolerance policy for every numeric comparison in the katas.

A tolerance is chosen by its *cause*, never picked per test: the same cause always means the same
bound, so a learner's float64 kernel is held to the same rule everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    why: str


TOLERANCES: dict[str, Tolerance] = {
    # Same dtype, same operations in the same order: only the last bit may differ.
    "float64-same-order": Tolerance(1e-12, 0.0, "float64, same op order"),
    # float64 with a different summation order (blocked vs dense reductions).
    "float64-reordered": Tolerance(1e-9, 1e-9, "float64, reordered reductions"),
    # Closed-form arithmetic on decimal constants (312e12 / 2.0e12 and friends).
    "arithmetic": Tolerance(0.0, 1e-12, "closed-form float arithmetic"),
    "float32": Tolerance(1e-5, 1e-5, "float32 accumulation"),
    # fp16 inputs, fp32 accumulators (Triton kernel vs torch reference): ~1e-3 seen, 1e-2 bound.
    "fp16-accumulated-in-fp32": Tolerance(1e-2, 0.0, "fp16 storage, fp32 accumulators"),
    # fp16 end to end vs an fp32/float64 dense reference: 11-bit mantissa, values of order 1.
    "fp16": Tolerance(2e-2, 2e-2, "fp16 arithmetic"),
    "bf16": Tolerance(5e-2, 5e-2, "bf16 arithmetic (8-bit mantissa)"),
}


def _as_array(value: Any) -> np.ndarray:
    # Torch tensors without importing torch: anything with .detach() is moved to a float64 array.
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    return np.asarray(value, dtype=np.float64)


def assert_close(actual: Any, expected: Any, *, cause: str, what: str = "result") -> None:
    """Assert ``actual`` matches ``expected`` within the tolerance ``cause`` implies.

    The failure message names the worst element, its two values, and the bound that was broken.
    """
    if cause not in TOLERANCES:
        raise KeyError(f"unknown tolerance cause {cause!r}; known: {', '.join(TOLERANCES)}")
    tol = TOLERANCES[cause]
    a, e = _as_array(actual), _as_array(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    if a.size == 0:
        return
    nan_mismatch = np.isnan(a) != np.isnan(e)
    assert not nan_mismatch.any(), (
        f"{what}: NaN at index {np.unravel_index(int(np.argmax(nan_mismatch)), a.shape)} "
        "where the expected value is a number (a masking bug lets garbage in?)"
    )
    diff = np.abs(np.nan_to_num(a - e, nan=0.0))
    bound = tol.atol + tol.rtol * np.abs(np.nan_to_num(e, nan=0.0))
    if np.all(diff <= bound):
        return
    worst = np.unravel_index(int(np.argmax(diff - bound)), a.shape)
    raise AssertionError(
        f"{what}: max |actual - expected| = {diff.max():.3g}; at index {tuple(map(int, worst))} "
        f"got {a[worst]!r}, expected {e[worst]!r} (allowed atol={tol.atol:g}, rtol={tol.rtol:g}: "
        f"{tol.why})"
    )
