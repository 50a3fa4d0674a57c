"""Reference for kata 10-04: the pipeline-parallel bubble, as algebra, as a grid and on a clock.

``p`` stages each hold a contiguous slice of the layers; a step's batch is cut into ``m``
micro-batches that flow through the stages in order (GPipe's fill-drain schedule, forward
only, as in inference). Micro-batch ``b`` is on stage ``s`` during tick ``s + b``.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from katas.phase10.pipeline_bubble.scaffold import (
    Grid,
    Slot,
    render_png,
    render_text,
    schedule_caption,
)


def _check(p: int, m: int) -> None:
    for name, value in (("p", p), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} (the number of {'stages' if name == 'p' else 'micro-batches'}"
                             f") must be an integer >= 1, got {value!r}")


def pipeline_total_ticks(p: int, m: int) -> int:
    """Ticks from the first micro-batch entering stage 0 to the last leaving stage p - 1."""
    _check(p, m)
    return p + m - 1  # the last micro-batch (m - 1) reaches the last stage (p - 1) at p + m - 2


def bubble_fraction(p: int, m: int) -> Fraction:
    """Idle share of the p x ticks capacity, exactly."""
    _check(p, m)
    ticks = pipeline_total_ticks(p, m)
    capacity = p * ticks
    useful = p * m
    return 1 - Fraction(useful, capacity)  # = (p - 1) / (p + m - 1)


def simulate_schedule(p: int, m: int) -> Grid:
    """The fill-drain grid: ``grid[s][t]`` is the micro-batch on stage s at tick t, or None."""
    ticks = pipeline_total_ticks(p, m)
    grid: Grid = [[None] * ticks for _ in range(p)]
    for b in range(m):
        for s in range(p):
            tick = s + b  # one tick per stage behind the micro-batch before it
            grid[s][tick] = b
    return grid


def simulate_clock(p: int, m: int, stage_times: Sequence[float] | None = None) -> list[Slot]:
    """Run the pipeline on a simulated clock; return every (stage, micro-batch) slot."""
    _check(p, m)
    times = [1] * p if stage_times is None else list(stage_times)
    if len(times) != p or any(not t > 0 for t in times):
        raise ValueError(f"stage_times needs {p} positive durations, got {stage_times!r}")
    # Events: (time the input is ready, stage, micro-batch). All inputs of stage 0 are ready at
    # 0; a stage's output becomes the next stage's input the moment it ends.
    events = [(0, 0, b) for b in range(m)]
    heapq.heapify(events)
    free_at = [0] * p  # when each stage finishes the work it has taken on
    slots = []
    while events:
        ready, s, b = heapq.heappop(events)
        start = max(ready, free_at[s])  # wait for the input and for the stage
        end = start + times[s]
        free_at[s] = end
        slots.append(Slot(stage=s, microbatch=b, start=start, end=end))
        if s + 1 < p:
            heapq.heappush(events, (end, s + 1, b))
    return sorted(slots, key=lambda slot: (slot.start, slot.stage))


def _exact(budget: float | Fraction) -> Fraction:
    # A float budget means the decimal it prints as: 0.1 is 1/10, not 0.1000000000000000055...
    return Fraction(repr(budget)) if isinstance(budget, float) else Fraction(budget)


def min_microbatches_for_bubble(p: int, budget: float | Fraction) -> int:
    """Smallest m >= 1 whose bubble is at most ``budget``."""
    _check(p, 1)
    b = _exact(budget)
    if not 0 < b <= 1:
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")
    # (p - 1) / (p - 1 + m) <= b  <=>  m >= (p - 1) / b - (p - 1)
    need = Fraction(p - 1) / b - (p - 1)
    return max(1, math.ceil(need))


def draw_schedule(p: int, m: int, path: str | os.PathLike[str] | None = None) -> Path | str:
    """Picture the grid: a PNG at ``path`` when matplotlib imports (returns the path), else the
    text rendering (returns the text). No path: always text."""
    grid = simulate_schedule(p, m)
    caption = schedule_caption(p, m, bubble_fraction(p, m))
    if path is not None:
        try:
            return render_png(grid, path, caption)
        except ImportError:
            pass  # matplotlib is optional: fall back to the picture everyone can render
    return render_text(grid, caption)


if __name__ == "__main__":
    print(draw_schedule(4, 6))
    print(f"p=8 under a 10% budget needs {min_microbatches_for_bubble(8, 0.1)} micro-batches")
