"""Reference for kata 02-02 — contiguous max-length reservation vs paged allocation.

Run it (``python -m reference.phase02.fragmentation``) for the course's report and the text
picture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from katas.phase02.fragmentation.scaffold import (
    COURSE_WORKLOAD,
    Admission,
    Bar,
    Workload,
    render_png,
    render_text,
)


def contiguous_admit(used_lengths: Sequence[int], total_slots: int, max_len: int) -> Admission:
    """Reserve ``max_len`` contiguous slots per arrival, first fit; count what is wasted."""
    # Free extents as [start, length], in address order. With no frees in this model they
    # never split into more than one, but first fit is written for the general case.
    extents: list[list[int]] = [[0, total_slots]] if total_slots > 0 else []
    admitted = rejected = wasted = used = 0
    for length in used_lengths:
        extent = next((e for e in extents if e[1] >= max_len), None)
        if extent is None:
            rejected += 1  # total free space may still exceed max_len: no single run does
            continue
        extent[0] += max_len
        extent[1] -= max_len
        if extent[1] == 0:
            extents.remove(extent)
        admitted += 1
        used += length
        wasted += max_len - length  # internal fragmentation: reserved for the worst case
    return Admission(admitted=admitted, rejected=rejected, wasted=wasted, used=used)


def paged_admit(used_lengths: Sequence[int], total_slots: int, block_size: int) -> Admission:
    """Give each arrival ceil(used / block_size) blocks from anywhere; count the tail waste."""
    free_blocks = total_slots // block_size
    admitted = rejected = wasted = used = 0
    for length in used_lengths:
        need = -(-length // block_size)  # ceil without floats
        if need > free_blocks:
            rejected += 1
            continue
        free_blocks -= need
        admitted += 1
        used += length
        wasted += need * block_size - length  # only the last block can be partly empty
    return Admission(admitted=admitted, rejected=rejected, wasted=wasted, used=used)


def _both(workload: Workload) -> tuple[Admission, Admission]:
    lengths = workload.used_lengths
    return (
        contiguous_admit(lengths, workload.total_slots, workload.max_len),
        paged_admit(lengths, workload.total_slots, workload.block_size),
    )


def report(workload: Workload = COURSE_WORKLOAD) -> str:
    """The course's two lines: admitted / rejected / wasted for each strategy."""
    contiguous, paged = _both(workload)
    return "\n".join(
        f"{name:<11} admitted={a.admitted} rejected={a.rejected} wasted={a.wasted}"
        for name, a in (("contiguous:", contiguous), ("paged:", paged))
    )


def waste_bars(workload: Workload = COURSE_WORKLOAD) -> list[Bar]:
    """Split the whole pool, per strategy, into slots holding KV, wasted slots and free ones."""
    bars = []
    for label, admission in zip(("contiguous", "paged"), _both(workload), strict=True):
        free = workload.total_slots - admission.held
        bars.append(Bar(label, used=admission.used, wasted=admission.wasted, free=free))
    return bars


def draw(
    path: str | os.PathLike[str] | None = None, workload: Workload = COURSE_WORKLOAD
) -> Path | str:
    """Picture the pool under both strategies: a PNG at ``path`` when matplotlib is installed
    (returns the path), else the text rendering (returns the text). No path: always text.
    """
    bars, caption = waste_bars(workload), workload.describe()
    if path is not None:
        try:
            return render_png(bars, path, caption)
        except ImportError:
            pass  # matplotlib is optional: fall back to the picture everyone can render
    return render_text(bars, caption)


if __name__ == "__main__":
    print(report())
    print()
    print(draw())
