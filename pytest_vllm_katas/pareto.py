"""The Pareto picture of a tuning sweep: throughput against the latency an SLO caps.

Used by the phase 18 katas (``tune_the_knobs``, ``benchmark_and_tune``). Each configuration of
a sweep is one :class:`ParetoPoint`: ``x`` is its throughput (higher is better), ``y`` the
latency metric the SLO caps (lower is better). The picture marks the points on the Pareto front,
the ones that break the SLO, the SLO itself (a horizontal line at ``y = slo``) and the chosen
configuration.

:func:`render_text` needs nothing; :func:`render_png` needs matplotlib (the ``dev`` extra), which
it imports when called, so importing this module never does. :func:`draw` writes the PNG when it
can and returns the text otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PNG_SIZE = (800, 480)
"""Width and height, in pixels, of the picture ``render_png`` writes."""


@dataclass(frozen=True)
class ParetoPoint:
    """One configuration of a sweep, as the picture shows it."""

    label: str
    x: float
    y: float
    on_front: bool
    meets_slo: bool
    chosen: bool = False


def _marks(point: ParetoPoint) -> str:
    marks = []
    if point.chosen:
        marks.append("chosen")
    if point.on_front:
        marks.append("front")
    if not point.meets_slo:
        marks.append("breaks SLO")
    return ", ".join(marks)


def render_text(
    points: Sequence[ParetoPoint], *, x_label: str, y_label: str, slo: float, title: str = ""
) -> str:
    """The sweep as a table, best throughput first: one line per point with its label, ``x``,
    ``y`` and its marks (``chosen``, ``front``, ``breaks SLO``), then a line stating the SLO.

    ``*`` starts the chosen point's line, ``+`` another front point's, ``-`` any other's.
    """
    rows = sorted(points, key=lambda p: (-p.x, p.y, p.label))
    label_w = max([len("config")] + [len(p.label) for p in rows])
    x_w, y_w = max(len(x_label), 10), max(len(y_label), 10)
    lines = [title] if title else []
    lines.append(f"  {'config':<{label_w}}  {x_label:>{x_w}}  {y_label:>{y_w}}  marks")
    for p in rows:
        glyph = "*" if p.chosen else "+" if p.on_front else "-"
        lines.append(f"{glyph} {p.label:<{label_w}}  {p.x:>{x_w}.4g}  {p.y:>{y_w}.4g}  "
                     f"{_marks(p)}".rstrip())
    lines.append(f"SLO: {y_label} <= {slo:g}")
    return "\n".join(lines)


def render_png(
    points: Sequence[ParetoPoint],
    path: str | os.PathLike[str],
    *,
    x_label: str,
    y_label: str,
    slo: float,
    title: str = "",
) -> Path:
    """The sweep as a ``PNG_SIZE`` scatter plot at ``path``: front points filled and joined by a
    line, other points hollow, SLO breakers red, the chosen point a star, the SLO a dashed
    horizontal line. Raises ImportError without matplotlib."""
    from matplotlib.figure import Figure  # lazy: matplotlib is optional (the dev extra)

    width, height = PNG_SIZE
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0.10, 0.12, 0.86, 0.78))
    front = sorted((p for p in points if p.on_front), key=lambda p: p.x)
    if len(front) > 1:
        ax.plot([p.x for p in front], [p.y for p in front], color="#4c72b0", linewidth=1,
                zorder=1, label="Pareto front")
    labels: dict[tuple[float, float], list[str]] = {}  # points that coincide share one label
    for p in points:
        colour = "#4c72b0" if p.meets_slo else "#c44e52"
        ax.scatter([p.x], [p.y], s=60, zorder=2, edgecolors=colour,
                   facecolors=colour if p.on_front else "none")
        labels.setdefault((p.x, p.y), []).append(p.label)
    for (x, y), names in labels.items():
        ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(7, 3),
                    fontsize=7, va="bottom")
    chosen = [p for p in points if p.chosen]
    if chosen:
        ax.scatter([p.x for p in chosen], [p.y for p in chosen], s=260, marker="*",
                   color="#dd8452", edgecolors="black", zorder=3, label="chosen")
    ax.axhline(slo, color="#c44e52", linestyle="--", linewidth=1, label=f"SLO {slo:g}")
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=7)
    xs = [p.x for p in points]
    if xs:
        span = (max(xs) - min(xs)) or max(abs(max(xs)), 1.0)
        ax.set_xlim(min(xs) - 0.08 * span, max(xs) + 0.30 * span)  # room for the labels
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out


def draw(
    points: Sequence[ParetoPoint],
    path: str | os.PathLike[str],
    *,
    x_label: str,
    y_label: str,
    slo: float,
    title: str = "",
) -> Path | str:
    """The PNG at ``path`` (its ``Path``) with matplotlib; without it, the text table."""
    try:
        return render_png(points, path, x_label=x_label, y_label=y_label, slo=slo, title=title)
    except ImportError:
        return render_text(points, x_label=x_label, y_label=y_label, slo=slo, title=title)
