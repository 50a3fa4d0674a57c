"""Spec for kata 10-04: the pipeline bubble, derived twice and reconciled exactly.

The algebra (ticks, bubble, the budget inversion) is pinned at the course's numbers; the grid
is checked cell by cell against the diagonal ``tick = stage + micro-batch``; the clock is an
event simulation that must land on the same cells with unit stage times, and must respect both
of a pipeline's rules (a stage waits for its input; a stage does one thing at a time) when one
stage is slow. Everything is counted; nothing is timed.
"""

from __future__ import annotations

import struct
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from katas.phase10.pipeline_bubble.scaffold import IDLE, PNG_SIZE, Slot
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = [(p, m) for p in range(1, 7) for m in range(1, 9)]


def diagonal(p: int, m: int) -> list[list[int | None]]:
    """The oracle: micro-batch b on stage s at tick s + b."""
    grid: list[list[int | None]] = [[None] * (p + m - 1) for _ in range(p)]
    for s in range(p):
        for b in range(m):
            grid[s][s + b] = b
    return grid


def show(grid) -> str:
    return "\n".join(" ".join("." if c is None else str(c) for c in row) for row in grid)


def rasterise(slots: list[Slot], p: int) -> list[list[int | None]]:
    """Unit-time slots as a grid (each slot covers tick ``start``)."""
    ticks = int(max(s.end for s in slots))
    grid: list[list[int | None]] = [[None] * ticks for _ in range(p)]
    for slot in slots:
        grid[slot.stage][int(slot.start)] = slot.microbatch
    return grid


def check_grid_shape(grid, p: int, m: int) -> None:
    ok = (isinstance(grid, list) and len(grid) == p
          and all(isinstance(row, list) and len(row) == p + m - 1 for row in grid))
    assert ok, (
        f"simulate_schedule({p}, {m}) is a list of {p} rows (one per stage), each a list of "
        f"{p + m - 1} ticks; got {grid!r}"
    )


# -- the algebra -----------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "m", "ticks"), [(4, 1, 4), (4, 8, 11), (1, 5, 5), (8, 63, 70),
                                               (2, 1, 2), (1, 1, 1)])
def test_total_ticks(impl, p: int, m: int, ticks: int) -> None:
    got = impl.pipeline_total_ticks(p, m)
    assert got == ticks, (
        f"{m} micro-batch(es) through {p} stage(s): {p - 1} ticks to fill, then one finishes per "
        f"tick: {ticks} ticks in all; got {got!r}"
    )


def test_bubble_formula(impl) -> None:
    corners = {
        "no pipeline (p=1, m=1)": ((1, 1), Fraction(0)),
        "no pipeline (p=1, m=7)": ((1, 7), Fraction(0)),
        "one micro-batch through 4 stages": ((4, 1), Fraction(3, 4)),
        "one micro-batch through 8 stages": ((8, 1), Fraction(7, 8)),
        "8 micro-batches through 4 stages": ((4, 8), Fraction(3, 11)),
    }
    for what, ((p, m), expected) in corners.items():
        got = impl.bubble_fraction(p, m)
        assert got == expected, f"{what}: bubble {expected} = (p-1)/(p+m-1), got {got!r}"
    deep = impl.bubble_fraction(4, 1000)
    assert 0 < deep < Fraction(1, 100), f"m >> p: the bubble vanishes (3/1003), got {deep!r}"


def test_bubble_fraction_is_an_exact_fraction(impl) -> None:
    got = impl.bubble_fraction(2, 2)
    assert isinstance(got, Fraction) and got == Fraction(1, 3), (
        f"2 stages, 2 micro-batches: 2 of 6 cells idle, exactly Fraction(1, 3); got {got!r} "
        f"({type(got).__name__})"
    )


# -- the grid --------------------------------------------------------------------------------


def test_schedule_grid_shape(impl) -> None:
    for p, m in [(1, 1), (3, 1), (2, 5), (4, 3)]:
        check_grid_shape(impl.simulate_schedule(p, m), p, m)


def test_schedule_grid_course_example(impl) -> None:
    got = impl.simulate_schedule(4, 3)
    check_grid_shape(got, 4, 3)
    expected = diagonal(4, 3)
    assert got == expected, (
        f"4 stages, 3 micro-batches: micro-batch b is on stage s at tick s + b, idle cells are "
        f"None.\nexpected:\n{show(expected)}\ngot:\n{show(got)}"
    )


def test_schedule_grid_matches_the_formula(impl) -> None:
    for p, m in SIZES:
        grid = impl.simulate_schedule(p, m)
        check_grid_shape(grid, p, m)
        idle = sum(cell is None for row in grid for cell in row)
        capacity = p * (p + m - 1)
        formula = impl.bubble_fraction(p, m)
        assert Fraction(idle, capacity) == formula == Fraction(p - 1, p + m - 1), (
            f"p={p}, m={m}: the grid has {idle} idle cells of {capacity} = "
            f"{Fraction(idle, capacity)}; bubble_fraction says {formula!r}; the closed form is "
            f"{Fraction(p - 1, p + m - 1)}. All three must agree exactly."
        )


def test_stage_never_runs_two_microbatches_at_once(impl) -> None:
    # A grid cell holds one micro-batch, so the rule shows up as: every stage runs every
    # micro-batch exactly once, in order. On the clock, with a slow stage, as intervals that
    # never overlap.
    for p, m in [(3, 4), (5, 2)]:
        grid = impl.simulate_schedule(p, m)
        check_grid_shape(grid, p, m)
        for s, row in enumerate(grid):
            busy = [c for c in row if c is not None]
            assert busy == list(range(m)), (
                f"p={p}, m={m}: stage {s} must run micro-batches 0..{m - 1} once each, in "
                f"order; its row is {row}"
            )
    slots = impl.simulate_clock(3, 4, stage_times=[1, 2, 1])
    for s in range(3):
        mine = sorted((slot for slot in slots if slot.stage == s), key=lambda x: x.start)
        overlaps = [(a, b) for a, b in zip(mine, mine[1:], strict=False) if b.start < a.end]
        assert not overlaps, (
            f"stage {s} takes its micro-batches one at a time; with stage times [1, 2, 1] these "
            f"overlap: {overlaps}"
        )


def test_microbatch_moves_one_stage_per_tick(impl) -> None:
    grid = impl.simulate_schedule(5, 4)
    check_grid_shape(grid, 5, 4)
    for b in range(4):
        ticks = [row.index(b) if b in row else None for row in grid]
        assert ticks == [b + s for s in range(5)], (
            f"micro-batch {b} enters stage 0 at tick {b} and each next stage one tick later "
            f"(ticks {[b + s for s in range(5)]}); got {ticks}:\n{show(grid)}"
        )


# -- the clock -------------------------------------------------------------------------------


def test_clock_reproduces_the_schedule(impl) -> None:
    for p, m in [(1, 1), (1, 3), (4, 1), (4, 3), (3, 7)]:
        slots = impl.simulate_clock(p, m)
        assert len(slots) == p * m and all(isinstance(s, Slot) for s in slots), (
            f"simulate_clock({p}, {m}) returns {p * m} Slot records (one per stage and "
            f"micro-batch), got {slots!r}"
        )
        order = [(s.start, s.stage) for s in slots]
        assert order == sorted(order), f"slots are sorted by (start, stage): got {order}"
        assert all(s.end - s.start == 1 for s in slots), (
            f"unit stage times: every slot lasts 1, got {[(s.start, s.end) for s in slots]}"
        )
        got = rasterise(slots, p)
        expected = diagonal(p, m)
        assert got == expected, (
            f"p={p}, m={m} with unit stage times: the clock lands on the fill-drain diagonal "
            f"({p + m - 1} ticks).\nexpected:\n{show(expected)}\nclock gave:\n{show(got)}"
        )


def test_stage_waits_for_its_input(impl) -> None:
    for times in ([1, 1, 1, 1], [1, 3, 1, 2]):
        slots = impl.simulate_clock(4, 3, stage_times=times)
        end = {(s.stage, s.microbatch): s.end for s in slots}
        early = [s for s in slots if s.stage > 0 and s.start < end[(s.stage - 1, s.microbatch)]]
        assert not early, (
            f"stage times {times}: a stage cannot start a micro-batch before the stage before it "
            f"has finished that micro-batch; these start early: {early}"
        )


def test_straggler_stage_sets_the_pace(impl) -> None:
    slots = impl.simulate_clock(3, 4, stage_times=[1, 2, 1])
    got = sorted((s.stage, s.microbatch, s.start, s.end) for s in slots)
    expected = sorted(
        [(0, b, b, b + 1) for b in range(4)]
        + [(1, b, 1 + 2 * b, 3 + 2 * b) for b in range(4)]
        + [(2, b, 3 + 2 * b, 4 + 2 * b) for b in range(4)]
    )
    assert got == expected, (
        f"stage times [1, 2, 1], 4 micro-batches: the slow middle stage starts one every 2 units "
        f"and the last stage follows it; (stage, micro-batch, start, end) should be {expected}, "
        f"got {got}"
    )
    makespan = max(s.end for s in slots)
    assert makespan == 10, (
        f"sum of stage times + (m - 1) x the slowest = 4 + 3 x 2 = 10, got {makespan}"
    )


# -- the budget ------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "m"), [(8, 63), (2, 9), (4, 27), (16, 135)])
def test_min_microbatches_for_a_bubble_budget(impl, p: int, m: int) -> None:
    got = impl.min_microbatches_for_bubble(p, 0.1)
    assert got == m, (
        f"{p} stages under a 10% bubble: (p-1)/(p+m-1) <= 1/10 first holds at m = {m} "
        f"(deeper pipelines need proportionally more micro-batches); got {got!r}"
    )
    exact = impl.min_microbatches_for_bubble(p, Fraction(1, 10))
    assert exact == m, f"the same budget as Fraction(1, 10) gives m = {m}, got {exact!r}"


@pytest.mark.parametrize(("p", "budget", "m"), [(10, 0.072, 116), (22, 0.35, 39), (4, 0.3, 7)])
def test_a_budget_met_exactly_is_within_it(impl, p: int, budget: float, m: int) -> None:
    # At these budgets the bound is hit on the nose: (p-1)/(p+m-1) == budget. A float
    # computation of (p-1)/budget lands a hair above the integer and rounds up one too many.
    got = impl.min_microbatches_for_bubble(p, budget)
    assert got == m, (
        f"p={p}, budget {budget}: at m = {m} the bubble is {Fraction(p - 1, p + m - 1)} = "
        f"{budget} exactly, which is within the budget; got {got!r}"
    )


def test_a_budget_already_met_needs_one_microbatch(impl) -> None:
    for p, budget in [(1, 0.01), (2, 0.5), (4, 1)]:
        got = impl.min_microbatches_for_bubble(p, budget)
        assert got == 1, (
            f"p={p}: one micro-batch already has a bubble of {Fraction(p - 1, p)} <= {budget}; "
            f"m = 1, got {got!r}"
        )


def test_bad_sizes_raise(impl) -> None:
    with expect_raises(ValueError, "a pipeline needs at least one stage"):
        impl.bubble_fraction(0, 4)
    with expect_raises(ValueError, "a step needs at least one micro-batch"):
        impl.simulate_schedule(4, 0)
    with expect_raises(ValueError, "no number of micro-batches meets a zero budget"):
        impl.min_microbatches_for_bubble(8, 0)
    with expect_raises(ValueError, "stage_times needs one positive time per stage"):
        impl.simulate_clock(3, 2, stage_times=[1, 1])


# -- the picture -----------------------------------------------------------------------------


def parse_text(text: str) -> list[list[int | None]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("stage "):
            cells = line.split()[2:]
            rows.append([None if c == IDLE else int(c) for c in cells])
    return rows


def test_draw_without_a_path_returns_text(impl) -> None:
    text = impl.draw_schedule(3, 4)
    assert isinstance(text, str), f"draw_schedule with no path returns the text, got {text!r}"
    assert parse_text(text) == diagonal(3, 4), (
        f"the text picture of 3 stages x 4 micro-batches shows the fill-drain grid:\n{text}"
    )
    assert "bubble 1/3" in text, f"the caption carries the exact bubble (2/6 = 1/3):\n{text}"


def test_text_picture_when_matplotlib_is_missing(impl, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # `import matplotlib...` now fails, even if an earlier test imported it for real.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "schedule.png"
    try:
        text = impl.draw_schedule(4, 3, target)
    except ImportError as exc:
        pytest.fail(f"matplotlib is missing, so draw_schedule(p, m, path) must fall back to the "
                    f"text picture; it raised {type(exc).__name__}: {exc}", pytrace=False)
    assert isinstance(text, str), f"without matplotlib draw_schedule returns the text, got {text!r}"
    assert not target.exists(), "without matplotlib no PNG can be written"
    assert parse_text(text) == diagonal(4, 3), f"the text grid of 4 x 3 is the diagonal:\n{text}"


def test_png_picture_when_matplotlib_is_installed(impl, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib: pip install -e '.[dev]'")
    target = tmp_path / "schedule.png"
    got = impl.draw_schedule(4, 6, target)
    assert Path(got) == target and target.is_file(), (
        f"draw_schedule(4, 6, path) writes {target} and returns it, got {got!r}"
    )
    data = target.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", (
        f"the file is not a PNG: it starts {data[:16]!r}"
    )
    size = struct.unpack(">II", data[16:24])
    assert size == PNG_SIZE, f"the PNG should be {PNG_SIZE[0]}x{PNG_SIZE[1]} px, got {size}"
