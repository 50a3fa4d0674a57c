"""Kata 02-02 — measure fragmentation: contiguous reservation vs paged allocation.

Fill in every body that raises ``NotImplementedError``; grade it with
``pytest --impl=mine katas/phase02/fragmentation``. Run it with
``python -m katas.phase02.fragmentation.fragmentation`` to see the report and the picture.

The scaffold gives you ``Admission`` (what an allocator returns), ``Workload`` (one wave of
arrivals; its defaults are the course's experiment), ``Bar`` (one strategy's split of the pool)
and the two renderers ``render_text`` / ``render_png``.
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
    render_png,  # noqa: F401  (given: draw needs it)
    render_text,  # noqa: F401  (given: draw needs it)
)


def contiguous_admit(used_lengths: Sequence[int], total_slots: int, max_len: int) -> Admission:
    """The pre-vLLM way: every arrival reserves ``max_len`` *contiguous* slots.

    Walk the arrivals in order. Each one needs one free run (extent) of at least ``max_len``
    slots; take the first such run (first fit) from its start, or reject the arrival if there
    is none — even when the free slots add up to more than ``max_len``. An admitted request
    uses ``length`` slots and wastes ``max_len - length``. Rejecting is counting, not raising.
    Return ``Admission(admitted, rejected, wasted, used)`` with ``used`` the admitted lengths'
    sum.
    """
    raise NotImplementedError("contiguous_admit: admit arrivals with max_len reservations")


def paged_admit(used_lengths: Sequence[int], total_slots: int, block_size: int) -> Admission:
    """vLLM's way: every arrival takes just enough whole blocks for its length, from anywhere.

    The pool is ``total_slots`` cut into whole blocks of ``block_size`` slots (slots short of a
    whole block are no block). Walk the arrivals in order; admit one if enough blocks remain,
    else reject it and go on (a later, smaller arrival may still fit). An admitted request
    wastes the slots of its blocks that it does not fill. On the course's workload (4,096
    slots, blocks of 16, 64 arrivals of 32) all 64 are admitted and nothing is wasted; at 33
    slots each, 960 are wasted. Return ``Admission(admitted, rejected, wasted, used)``.
    """
    raise NotImplementedError("paged_admit: admit arrivals with blocks from a shared pool")


def report(workload: Workload = COURSE_WORKLOAD) -> str:
    """Both strategies on the same wave, as two lines (no trailing newline)::

        contiguous: admitted=8 rejected=56 wasted=3840
        paged:      admitted=64 rejected=0 wasted=0

    Each label is left-aligned in 11 characters, then a space, then the three counts.
    """
    raise NotImplementedError("report: run both allocators on the workload; format two lines")


def waste_bars(workload: Workload = COURSE_WORKLOAD) -> list[Bar]:
    """Split the whole pool, for each strategy, into three kinds of slot.

    Return ``[Bar("contiguous", used, wasted, free), Bar("paged", used, wasted, free)]``:
    ``used`` and ``wasted`` come from the admission, and ``free`` is everything neither
    holds, so each bar adds up to ``workload.total_slots``.
    """
    raise NotImplementedError("waste_bars: used / wasted / free slots for each strategy")


def draw(
    path: str | os.PathLike[str] | None = None, workload: Workload = COURSE_WORKLOAD
) -> Path | str:
    """Picture the pool under both strategies.

    With a ``path`` and matplotlib installed, write a PNG there with
    ``render_png(bars, path, workload.describe())`` and return its ``Path``. Without a path,
    or when ``render_png`` raises ``ImportError`` (no matplotlib), return
    ``render_text(bars, workload.describe())`` instead.
    """
    raise NotImplementedError("draw: render_png when a path is given and it imports, else text")


if __name__ == "__main__":
    print(report())
    print()
    print(draw())
