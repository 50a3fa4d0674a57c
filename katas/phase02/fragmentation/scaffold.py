"""What the lab gives you: the result and workload records, and two renderers for the picture.

None of this is your work. ``Admission`` is what both allocators return; ``Workload`` is the
course's experiment (its defaults are the numbers the course reports); ``render_text`` and
``render_png`` draw bars that ``waste_bars`` produces. matplotlib is optional: it is imported
inside ``render_png`` only, so importing this module never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PNG_SIZE = (800, 240)
"""Width and height, in pixels, of the picture ``render_png`` writes."""

TEXT_WIDTH = 64
"""Cells per bar in ``render_text``: one cell is ``total_slots / TEXT_WIDTH`` slots."""

GLYPHS = {"used": "#", "wasted": "x", "free": "."}
COLOURS = {"used": "#2e7d32", "wasted": "#c62828", "free": "#e0e0e0"}
LEGEND = {"used": "holds KV", "wasted": "reserved, holds nothing", "free": "free"}


@dataclass(frozen=True)
class Admission:
    """What one allocator did with one wave of arrivals.

    ``used`` counts the slots that hold real KV (the admitted requests' lengths, summed);
    ``wasted`` counts slots that admitted requests hold but do not fill.
    """

    admitted: int
    rejected: int
    wasted: int
    used: int

    @property
    def held(self) -> int:
        """Slots taken from the pool: filled or not."""
        return self.used + self.wasted


@dataclass(frozen=True)
class Workload:
    """One admission wave: ``arrivals`` requests, each really using ``used_len`` slots.

    The defaults are the course's experiment: a 4,096-slot pool, a 512-slot worst-case
    reservation, 32 slots used, blocks of 16, 64 arrivals.
    """

    total_slots: int = 4096
    max_len: int = 512
    used_len: int = 32
    block_size: int = 16
    arrivals: int = 64

    @property
    def used_lengths(self) -> list[int]:
        return [self.used_len] * self.arrivals

    def describe(self) -> str:
        return (
            f"{self.total_slots:,} KV slots; {self.arrivals} requests, each using "
            f"{self.used_len} of a {self.max_len}-slot reservation; blocks of {self.block_size}"
        )


COURSE_WORKLOAD = Workload()


@dataclass(frozen=True)
class Bar:
    """One strategy's view of the whole pool: slots holding KV, wasted, and free."""

    label: str
    used: int
    wasted: int
    free: int

    @property
    def total(self) -> int:
        return self.used + self.wasted + self.free

    def segments(self) -> list[tuple[str, int]]:
        return [("used", self.used), ("wasted", self.wasted), ("free", self.free)]


def _cells(bar: Bar, width: int) -> list[tuple[str, int]]:
    """Split ``width`` cells among the segments, rounding cumulative edges (so they add up)."""
    out, edge, done = [], 0, 0
    for kind, slots in bar.segments():
        edge += slots
        right = round(edge * width / bar.total) if bar.total else 0
        out.append((kind, right - done))
        done = right
    return out


def render_text(bars: list[Bar], caption: str = "", width: int = TEXT_WIDTH) -> str:
    """The picture as text: one bar of ``width`` cells per strategy, then a legend."""
    pad = max(len(b.label) for b in bars)
    lines = [caption] if caption else []
    for bar in bars:
        cells = "".join(GLYPHS[kind] * n for kind, n in _cells(bar, width))
        counts = "  ".join(f"{kind} {n:,}" for kind, n in bar.segments())
        lines.append(f"{bar.label:<{pad}}  [{cells}]  {counts}")
    legend = "   ".join(f"{GLYPHS[k]} {LEGEND[k]}" for k in GLYPHS)
    lines.append(f"{'':<{pad}}   {legend}")
    return "\n".join(lines)


def render_png(bars: list[Bar], path: str | os.PathLike[str], caption: str = "") -> Path:
    """The picture as a ``PNG_SIZE`` PNG at ``path``. Raises ImportError without matplotlib."""
    from matplotlib.figure import Figure  # lazy: matplotlib is optional (the dev extra)
    from matplotlib.patches import Patch

    width, height = PNG_SIZE
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0.14, 0.30, 0.82, 0.52))
    for row, bar in enumerate(reversed(bars)):
        left = 0
        for kind, slots in bar.segments():
            if slots:
                ax.barh(row, slots, left=left, height=0.6, color=COLOURS[kind])
                if slots / bar.total >= 0.05:
                    ax.text(left + slots / 2, row, f"{slots:,}", ha="center", va="center",
                            fontsize=8, color="white" if kind != "free" else "black")
            left += slots
    ax.set_yticks(range(len(bars)), [b.label for b in reversed(bars)])
    ax.set_xlim(0, max(b.total for b in bars))
    ax.set_xlabel("KV slots", fontsize=8)
    ax.tick_params(labelsize=8)
    if caption:
        ax.set_title(caption, fontsize=8)
    handles = [Patch(color=COLOURS[k], label=LEGEND[k]) for k in GLYPHS]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out
