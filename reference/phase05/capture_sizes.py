"""Reference for kata 05-05 — the capture-size ladder, the rung lookup and the padding bill.

A *ladder* is the list of batch sizes a CUDA graph is captured for. A batch replays the
graph of the smallest rung that holds it, padded up with rows whose outputs are thrown
away; a batch above the top rung runs eagerly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


def default_capture_sizes(max_size: int, coarse_from: int | None = None) -> list[int]:
    """1, 2, 4, then every multiple of 8, none above ``max_size`` (ascending).

    With ``coarse_from`` (a positive multiple of 16) the multiples of 8 stop below it and
    every multiple of 16 from it on takes over: vLLM's default ladder is ``coarse_from=256``.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1 (a graph holds one row or more), "
                         f"got {max_size}")
    if coarse_from is not None and (coarse_from < 16 or coarse_from % 16 != 0):
        raise ValueError(f"coarse_from must be a positive multiple of 16, got {coarse_from}")
    # Dense at the bottom, where one padded row is a large share of the batch.
    sizes = [size for size in (1, 2, 4) if size <= max_size]
    fine_limit = max_size if coarse_from is None else min(max_size, coarse_from - 1)
    sizes.extend(range(8, fine_limit + 1, 8))
    if coarse_from is not None:
        sizes.extend(range(coarse_from, max_size + 1, 16))
    return sizes


def select_capture_size(batch: int, sizes: Collection[int]) -> int | None:
    """The smallest rung that holds ``batch`` rows, or ``None``: no rung does, run eagerly."""
    if batch < 1:
        raise ValueError(f"a batch has at least one row, got batch={batch}")
    holding = [size for size in sizes if size >= batch]
    if not holding:
        return None  # above the top rung (or no ladder at all): the eager path, not an error
    return min(holding)


def padded_tokens(batch: int, sizes: Collection[int]) -> int:
    """Rows of padding ``batch`` costs: its rung minus itself, 0 when it runs eagerly."""
    rung = select_capture_size(batch, sizes)
    if rung is None:
        return 0  # eager: the batch runs at its own size, nothing is padded
    return rung - batch


def trace_waste(trace: Iterable[int], sizes: Collection[int]) -> int:
    """Padding rows summed over a trace of per-step batch sizes."""
    return sum(padded_tokens(batch, sizes) for batch in trace)
