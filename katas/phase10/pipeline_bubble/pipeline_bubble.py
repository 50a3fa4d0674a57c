"""Kata 10-04 — the pipeline-parallel bubble: the formula, the grid, the clock, the budget.

Fill in the six bodies; grade them with ``pytest --impl=mine katas/phase10/pipeline_bubble``.

``p`` stages each hold a slice of the model's layers, in order; a step's batch is cut into ``m``
micro-batches that go through every stage, one stage at a time (GPipe's fill-drain schedule,
forward passes only, as in inference). One tick is the time a stage takes for one micro-batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from katas.phase10.pipeline_bubble.scaffold import (  # noqa: F401  (given: draw needs them)
    Grid,
    Slot,
    render_png,
    render_text,
    schedule_caption,
)


def pipeline_total_ticks(p: int, m: int) -> int:
    """Ticks from the moment micro-batch 0 enters stage 0 until the last micro-batch leaves
    the last stage. Course corners: 1 micro-batch through 4 stages takes 4 ticks (a pipeline's
    latency is its depth); 63 micro-batches through 8 stages take 70.

    Raises ValueError when ``p`` or ``m`` is not an integer >= 1.
    """
    raise NotImplementedError("pipeline_total_ticks: fill, stream, drain")


def bubble_fraction(p: int, m: int) -> Fraction:
    """The share of the pipeline's capacity (``p`` stages x the total ticks) spent idle.

    Returned as an exact ``fractions.Fraction`` (two stages, two micro-batches: exactly 1/3).
    Course corners: no pipeline (``p = 1``) wastes nothing; one micro-batch through 4 stages
    wastes 3/4; the bubble vanishes as ``m`` grows.

    Raises ValueError when ``p`` or ``m`` is not an integer >= 1.
    """
    raise NotImplementedError("bubble_fraction: idle cells over all cells, exactly")


def simulate_schedule(p: int, m: int) -> Grid:
    """The fill-drain schedule as a grid: ``p`` rows (stage 0 first), one column per tick.

    ``grid[s][t]`` is the micro-batch stage ``s`` works on during tick ``t``, or ``None`` when
    it idles. Micro-batches enter stage 0 in order 0, 1, ..., one per tick; each moves to the
    next stage on the tick after it finishes. A stage works on one micro-batch at a time and
    never before that micro-batch has left the stage before it.

    Raises ValueError when ``p`` or ``m`` is not an integer >= 1.
    """
    raise NotImplementedError("simulate_schedule: which micro-batch each stage runs per tick")


def simulate_clock(p: int, m: int, stage_times: Sequence[float] | None = None) -> list[Slot]:
    """Run the pipeline on a simulated clock and return what every stage did.

    Stage ``s`` needs ``stage_times[s]`` time units per micro-batch (all 1 when None). All
    ``m`` inputs are ready at stage 0 at time 0. A stage takes micro-batches in order, works on
    one at a time, and starts micro-batch ``b`` as soon as both are true: it has finished
    micro-batch ``b - 1``, and stage ``s - 1`` has finished ``b``. Return the ``p * m``
    ``Slot(stage, microbatch, start, end)`` records sorted by ``(start, stage)``. With unit
    times they are the cells of ``simulate_schedule``; with a slow stage they are not.

    Raises ValueError for bad ``p`` / ``m``, or ``stage_times`` not ``p`` positive numbers.
    """
    raise NotImplementedError("simulate_clock: an event simulation of the stages")


def min_microbatches_for_bubble(p: int, budget: float | Fraction) -> int:
    """The smallest number of micro-batches ``m >= 1`` whose bubble is at most ``budget``.

    A bubble exactly equal to the budget is within it. A float budget means the decimal it
    prints as (``0.1`` is exactly 1/10), so the answer never depends on binary rounding; a
    ``Fraction`` is taken as it is. Course number: 8 stages under a 10% budget need 63.

    Raises ValueError when ``p`` is not an integer >= 1 or ``budget`` is not in (0, 1].
    """
    raise NotImplementedError("min_microbatches_for_bubble: invert the bubble formula exactly")


def draw_schedule(p: int, m: int, path: str | os.PathLike[str] | None = None) -> Path | str:
    """Picture the schedule of ``p`` stages and ``m`` micro-batches.

    The picture is ``simulate_schedule(p, m)`` captioned with
    ``schedule_caption(p, m, bubble_fraction(p, m))``. With a ``path``, write it there with
    ``render_png`` and return that ``Path``. Without a path, or when ``render_png`` raises
    ImportError (matplotlib is optional), return ``render_text(grid, caption)`` instead.
    """
    raise NotImplementedError("draw_schedule: render_png when a path is given and it imports, "
                              "else text")


if __name__ == "__main__":
    print(draw_schedule(4, 6))
    print(f"p=8 under a 10% budget needs {min_microbatches_for_bubble(8, 0.1)} micro-batches")
