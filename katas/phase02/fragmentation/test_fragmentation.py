"""Spec for kata 02-02: on the same memory, paging admits more and wastes at most a block tail."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from katas.phase02.fragmentation.scaffold import (
    COURSE_WORKLOAD,
    GLYPHS,
    PNG_SIZE,
    TEXT_WIDTH,
    Admission,
    Workload,
)

pytestmark = pytest.mark.cpu_ok

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def counts(a: Admission) -> tuple[int, int, int]:
    return a.admitted, a.rejected, a.wasted


def course(**changes) -> Workload:
    return Workload(**{**COURSE_WORKLOAD.__dict__, **changes})


def run_both(impl, w: Workload) -> tuple[Admission, Admission]:
    return (
        impl.contiguous_admit(w.used_lengths, w.total_slots, w.max_len),
        impl.paged_admit(w.used_lengths, w.total_slots, w.block_size),
    )


# -- the course's numbers ---------------------------------------------------------------------


def test_course_workload_contiguous_admits_8_and_wastes_3840(impl) -> None:
    got = impl.contiguous_admit([32] * 64, total_slots=4096, max_len=512)
    assert counts(got) == (8, 56, 3840), (
        f"4096 slots / 512 per reservation = 8 admitted, 56 rejected, 8 x (512 - 32) = 3840 "
        f"wasted; got admitted={got.admitted} rejected={got.rejected} wasted={got.wasted}"
    )
    assert got.used == 256, f"8 requests x 32 slots = 256 slots hold KV, got used={got.used}"
    assert round(got.wasted / 4096, 2) == 0.94, (
        f"the course's headline: 94% of the pool wasted, got {got.wasted / 4096:.0%}"
    )


def test_course_workload_paged_admits_all_64_and_wastes_nothing(impl) -> None:
    got = impl.paged_admit([32] * 64, total_slots=4096, block_size=16)
    assert counts(got) == (64, 0, 0), (
        f"64 x ceil(32/16) = 128 of 256 blocks: all 64 admitted, nothing wasted (32 fills two "
        f"blocks exactly); got admitted={got.admitted} rejected={got.rejected} "
        f"wasted={got.wasted}"
    )
    assert got.used == 2048, f"64 x 32 = 2048 slots hold KV, got used={got.used}"


def test_report_prints_the_course_lines(impl) -> None:
    assert impl.report() == (
        "contiguous: admitted=8 rejected=56 wasted=3840\n"
        "paged:      admitted=64 rejected=0 wasted=0"
    ), f"report() should print the course's two lines exactly, got:\n{impl.report()}"


def test_one_token_past_a_block_boundary_wastes_960(impl) -> None:
    contiguous, paged = run_both(impl, course(used_len=33))
    assert counts(paged) == (64, 0, 960), (
        f"33 tokens need 3 blocks of 16, stranding 15 slots each: 64 x 15 = 960 wasted, all 64 "
        f"admitted (192 of 256 blocks); got {counts(paged)}"
    )
    assert counts(contiguous) == (8, 56, 3832), (
        f"contiguous at used=33: 8 admitted, 8 x (512 - 33) = 3832 wasted; got {counts(contiguous)}"
    )


@pytest.mark.parametrize(
    ("arrivals", "paged_admitted"),
    [
        pytest.param(64, 64, id="64_arrivals-the_course_report-8x"),
        pytest.param(120, 120, id="120_arrivals-the_course_prose-15x"),
        pytest.param(128, 128, id="128_arrivals-paged_pool_exactly_full"),
        pytest.param(129, 128, id="129_arrivals-one_too_many"),
        pytest.param(200, 128, id="200_arrivals-paging_saturates_at_128"),
    ],
)
def test_paged_admits_until_the_pool_is_full(impl, arrivals: int, paged_admitted: int) -> None:
    contiguous, paged = run_both(impl, course(arrivals=arrivals))
    assert (contiguous.admitted, paged.admitted) == (8, paged_admitted), (
        f"{arrivals} arrivals using 32 slots: contiguous always admits 8 (4096 / 512); paged "
        f"admits min({arrivals}, 256 blocks / 2) = {paged_admitted}; got "
        f"{contiguous.admitted} and {paged.admitted}"
    )
    assert paged.admitted + paged.rejected == arrivals, (
        f"every one of the {arrivals} arrivals is admitted or rejected, got "
        f"{paged.admitted} + {paged.rejected}"
    )


# -- the waste arithmetic, on other workloads ------------------------------------------------

LENGTHS = [1, 16, 17, 100, 250, 512, 31, 64, 300, 7, 129, 2]


@pytest.mark.parametrize("max_len", [512, 600])
def test_contiguous_waste_is_exactly_over_reservation(impl, max_len: int) -> None:
    got = impl.contiguous_admit(LENGTHS, total_slots=8192, max_len=max_len)
    admitted = LENGTHS[: got.admitted]
    expected = sum(max_len - u for u in admitted)
    assert got.admitted == min(len(LENGTHS), 8192 // max_len), (
        f"8192 slots hold {8192 // max_len} reservations of {max_len}; got {got.admitted} admitted"
    )
    assert (got.wasted, got.used) == (expected, sum(admitted)), (
        f"contiguous waste is sum(max_len - used) over the admitted requests = {expected} (used "
        f"{sum(admitted)}); got wasted={got.wasted} used={got.used}"
    )


@pytest.mark.parametrize("block_size", [1, 4, 16, 64])
def test_paged_waste_is_under_one_block_per_request(impl, block_size: int) -> None:
    got = impl.paged_admit(LENGTHS, total_slots=4096, block_size=block_size)
    expected = sum(-(-u // block_size) * block_size - u for u in LENGTHS)
    assert (got.admitted, got.wasted) == (len(LENGTHS), expected), (
        f"blocks of {block_size}: each request wastes ceil(u/{block_size})*{block_size} - u, "
        f"{expected} in all, and all {len(LENGTHS)} fit; got admitted={got.admitted} "
        f"wasted={got.wasted}"
    )
    assert got.wasted < block_size * got.admitted or got.wasted == 0, (
        f"paged waste is below one block per admitted request: under {block_size} x "
        f"{got.admitted}, got {got.wasted}"
    )


def test_rejections_are_counted_not_raised(impl) -> None:
    contiguous, paged = run_both(impl, Workload(total_slots=100, max_len=64, used_len=40,
                                                block_size=16, arrivals=5))
    assert counts(contiguous) == (1, 4, 24), (
        f"100 slots hold one 64-slot reservation: (admitted, rejected, wasted) = (1, 4, 24); "
        f"got {counts(contiguous)}"
    )
    assert counts(paged) == (2, 3, 16), (
        f"100 slots = 6 blocks of 16; 40 tokens need 3: (admitted, rejected, wasted) = (2, 3, 16); "
        f"got {counts(paged)}"
    )


def test_each_arrival_is_judged_on_its_own(impl) -> None:
    got = impl.paged_admit([200, 100, 40], total_slots=256, block_size=16)
    assert (got.admitted, got.rejected, got.used) == (2, 1, 240), (
        f"16 blocks: 200 tokens take 13, 100 tokens (7 blocks) do not fit, 40 tokens (3) still "
        f"do; got admitted={got.admitted} rejected={got.rejected} used={got.used}"
    )


def test_slots_short_of_a_whole_block_hold_nothing(impl) -> None:
    got = impl.paged_admit([16] * 7, total_slots=100, block_size=16)
    assert (got.admitted, got.rejected) == (6, 1), (
        f"100 slots make 6 whole blocks of 16 (the last 4 slots are no block): 7 one-block "
        f"arrivals admit 6 and reject 1; got admitted={got.admitted} rejected={got.rejected}"
    )


def test_a_leftover_run_shorter_than_max_len_admits_nothing(impl) -> None:
    got = impl.contiguous_admit([32] * 64, total_slots=4000, max_len=512)
    assert counts(got) == (7, 57, 7 * 480), (
        f"4000 slots hold 7 reservations of 512; the last 416 slots are free but too short: "
        f"(7, 57, 3360) expected, got {counts(got)}"
    )


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param(COURSE_WORKLOAD, id="reserve_512-use_32"),
        pytest.param(course(used_len=33), id="reserve_512-use_33"),
        pytest.param(course(used_len=500, arrivals=10), id="reserve_512-use_500"),
        pytest.param(course(used_len=512, arrivals=10), id="reserve_512-use_all_of_it"),
    ],
)
def test_paged_never_admits_fewer_than_contiguous(impl, workload: Workload) -> None:
    contiguous, paged = run_both(impl, workload)
    assert paged.admitted >= contiguous.admitted and paged.wasted <= contiguous.wasted, (
        f"on {workload.describe()}: paged admitted {paged.admitted} (wasted {paged.wasted}), "
        f"contiguous admitted {contiguous.admitted} (wasted {contiguous.wasted})"
    )


# -- the picture ------------------------------------------------------------------------------


def test_waste_bars_split_the_pool_into_used_wasted_free(impl) -> None:
    bars = impl.waste_bars()
    got = [(b.label, b.used, b.wasted, b.free) for b in bars]
    assert got == [("contiguous", 256, 3840, 0), ("paged", 2048, 0, 2048)], (
        f"contiguous: 256 slots hold KV, 3840 are reserved but empty, 0 free; paged: 2048 hold "
        f"KV, 0 wasted, 2048 free. Got {got}"
    )
    assert all(b.total == 4096 for b in bars), (
        f"each bar accounts for the whole pool of 4096 slots, got {[b.total for b in bars]}"
    )


def bar_cells(text: str, label: str) -> dict[str, int]:
    """How many cells of each kind the bar labelled ``label`` has in the text picture."""
    lines = [line for line in text.splitlines() if line.startswith(label) and "[" in line
             and "]" in line]
    assert lines, f"the text picture has no bar labelled {label!r}:\n{text}"
    line = lines[0]
    cells = line[line.index("[") + 1 : line.index("]")]
    return {kind: cells.count(glyph) for kind, glyph in GLYPHS.items()}


def test_text_picture_when_matplotlib_is_missing(impl, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # `import matplotlib...` now fails, even if an earlier test imported it for real.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "fragmentation.png"
    try:
        text = impl.draw(target)
    except ImportError as exc:
        pytest.fail(f"matplotlib is missing, so draw(path) must fall back to the text picture; "
                    f"it raised {type(exc).__name__}: {exc}", pytrace=False)
    assert isinstance(text, str), f"without matplotlib draw() returns the text, got {text!r}"
    assert not target.exists(), "without matplotlib no PNG can be written"
    assert bar_cells(text, "contiguous") == {"used": 4, "wasted": 60, "free": 0}, (
        f"the contiguous bar ({TEXT_WIDTH} cells for 4096 slots) should be 4 used, 60 wasted:\n"
        f"{text}"
    )
    assert bar_cells(text, "paged") == {"used": 32, "wasted": 0, "free": 32}, (
        f"the paged bar should be 32 used, 32 free:\n{text}"
    )


def test_draw_without_a_path_returns_text(impl) -> None:
    text = impl.draw(workload=course(used_len=33))
    assert isinstance(text, str) and "each using 33" in text, (
        f"draw() with no path returns the text picture of the workload it was given (33 slots "
        f"used each), got {text!r}"
    )
    assert bar_cells(text, "paged") == {"used": 33, "wasted": 15, "free": 16}, (
        f"at used=33 the paged bar shows 2112 used, 960 wasted, 1024 free (33/15/16 cells):\n{text}"
    )


def test_png_picture_when_matplotlib_is_installed(impl, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib: pip install -e '.[dev]'")
    target = tmp_path / "fragmentation.png"
    got = impl.draw(target)
    assert Path(got) == target and target.is_file(), f"draw(path) writes {target}, got {got!r}"
    data = target.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", (
        f"the file is not a PNG: it starts {data[:16]!r}"
    )
    size = struct.unpack(">II", data[16:24])
    assert size == PNG_SIZE, f"the PNG should be {PNG_SIZE[0]}x{PNG_SIZE[1]} px, got {size}"
    assert len(data) < 100_000, f"the PNG should stay small (< 100 KB), got {len(data):,} bytes"
