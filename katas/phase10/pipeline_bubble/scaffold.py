"""What the lab gives you: the record of one stage's work, a caption, and two renderers.

None of this is your work. ``Slot`` is one entry of the simulated clock's timeline.
A *schedule grid* is a list of ``p`` rows (stage 0 first), one column per clock tick; a cell
holds the micro-batch that stage works on during that tick, or ``None`` when it idles.
``render_text`` and ``render_png`` draw such a grid. matplotlib is optional: it is imported
inside ``render_png`` only, so importing this module never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

Grid = list[list[int | None]]
"""``grid[stage][tick]``: the micro-batch a stage works on during a tick, ``None`` when idle."""

PNG_SIZE = (800, 320)
"""Width and height, in pixels, of the picture ``render_png`` writes."""

IDLE = "."
"""The glyph of an idle cell in ``render_text``."""


@dataclass(frozen=True)
class Slot:
    """Stage ``stage`` works on micro-batch ``microbatch`` from time ``start`` to ``end``."""

    stage: int
    microbatch: int
    start: float
    end: float


def schedule_caption(p: int, m: int, bubble: Fraction) -> str:
    """One line naming the schedule and its bubble, e.g. for p = 4, m = 3:
    ``GPipe fill-drain: 4 stages, 3 micro-batches, 6 ticks; bubble 1/2 = 50.0%``."""
    ticks = p + m - 1
    return (f"GPipe fill-drain: {p} stages, {m} micro-batches, {ticks} ticks; "
            f"bubble {bubble} = {float(bubble):.1%}")


def render_text(grid: Grid, caption: str = "") -> str:
    """The grid as text: a header of tick numbers, then one line per stage.

    Each line is ``stage S`` followed by one space-separated cell per tick: the micro-batch id,
    or ``IDLE`` when the stage waits. Cells are right-aligned to a common width.
    """
    ticks = len(grid[0]) if grid else 0
    ids = [str(cell) for row in grid for cell in row if cell is not None]
    width = max([len(str(ticks - 1)), len(IDLE)] + [len(i) for i in ids])
    label = len(f"stage {len(grid) - 1}")
    lines = [caption] if caption else []
    lines.append(f"{'tick':<{label}}  " + " ".join(f"{t:>{width}}" for t in range(ticks)))
    for stage, row in enumerate(grid):
        cells = " ".join(f"{IDLE if c is None else c:>{width}}" for c in row)
        lines.append(f"{f'stage {stage}':<{label}}  {cells}")
    return "\n".join(lines)


def render_png(grid: Grid, path: str | os.PathLike[str], caption: str = "") -> Path:
    """The grid as a ``PNG_SIZE`` PNG at ``path``: a coloured cell per busy (stage, tick), the
    micro-batch id written in it, idle cells grey. Raises ImportError without matplotlib."""
    from matplotlib import colormaps  # lazy: matplotlib is optional (the dev extra)
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    width, height = PNG_SIZE
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0.10, 0.16, 0.86, 0.68))
    stages, ticks = len(grid), len(grid[0]) if grid else 0
    palette = colormaps["tab20"]
    for stage, row in enumerate(grid):
        for tick, cell in enumerate(row):
            colour = "#e0e0e0" if cell is None else palette(cell % 20)
            ax.add_patch(Rectangle((tick, stage), 1, 1, facecolor=colour, edgecolor="white"))
            if cell is not None and ticks <= 40:
                ax.text(tick + 0.5, stage + 0.5, str(cell), ha="center", va="center",
                        fontsize=7)
    ax.set_xlim(0, max(ticks, 1))
    ax.set_ylim(stages, 0)  # stage 0 on top
    ax.set_yticks([s + 0.5 for s in range(stages)], [f"stage {s}" for s in range(stages)])
    ax.set_xlabel("tick", fontsize=8)
    ax.tick_params(labelsize=7)
    if caption:
        ax.set_title(caption, fontsize=9)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out
