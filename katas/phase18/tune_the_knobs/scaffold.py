"""What the lab gives you: the knobs a run is made with, and the arrival format.

None of this is your work. A workload is a list of arrivals ``(arrival_step, prompt,
max_tokens)``: the request lands on the engine's clock at step ``arrival_step`` (0 is the first
step), its prompt is a ``str`` for mini_vllm's byte tokenizer (one token per byte, so ``"A" * 64``
is 64 tokens), and it decodes ``max_tokens`` tokens, greedily, ignoring EOS.

The Pareto picture is drawn by :mod:`pytest_vllm_katas.pareto` (the next lab draws with it too):
:func:`pareto_points` turns this lab's results into its points, :func:`draw_pareto` draws them (a
PNG with matplotlib, a text table without). ``results`` there maps each ``Config`` to your
``Metrics`` (anything with ``total_steps``, ``max_step_tokens`` and ``worst_ttft``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_katas.pareto import ParetoPoint, draw

Arrival = tuple[int, str, int]
"""``(arrival_step, prompt, max_tokens)``."""


@dataclass(frozen=True)
class Config:
    """One point of the search space: the three scheduler knobs of ``LLMEngine``.

    ``long_prefill_token_threshold=0`` means no per-request chunk cap (mini_vllm's default), as
    upstream's ``SchedulerConfig``.
    """

    max_num_batched_tokens: int
    long_prefill_token_threshold: int = 0
    max_num_seqs: int = 256

    def engine_kwargs(self) -> dict[str, int]:
        """The keywords ``LLMEngine(**config.engine_kwargs())`` takes."""
        return {
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "long_prefill_token_threshold": self.long_prefill_token_threshold,
            "max_num_seqs": self.max_num_seqs,
        }

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``budget=40 thr=32``."""
        text = f"budget={self.max_num_batched_tokens} thr={self.long_prefill_token_threshold}"
        return text if self.max_num_seqs == 256 else f"{text} seqs={self.max_num_seqs}"


X_LABEL = "tokens per step (throughput proxy)"
Y_LABEL = "max_step_tokens (ITL spike)"

def workload_tokens(arrivals: Sequence[Arrival]) -> int:
    """Every token the workload makes the engine compute: prompts plus outputs."""
    return sum(len(prompt.encode("utf-8")) + max_tokens for _, prompt, max_tokens in arrivals)


def pareto_points(
    arrivals: Sequence[Arrival],
    results: Mapping[Config, Any],
    front: Sequence[Config],
    chosen: Config | None,
    spike_slo: int,
) -> list[ParetoPoint]:
    """One point per config: x = tokens per step (the throughput proxy: the workload's tokens
    over ``total_steps``), y = ``max_step_tokens`` (the spike the SLO caps), labelled with the
    config and its worst TTFT."""
    tokens = workload_tokens(arrivals)
    return [
        ParetoPoint(
            label=f"{config.label} ttft<={metrics.worst_ttft}",
            x=tokens / metrics.total_steps,
            y=float(metrics.max_step_tokens),
            on_front=config in front,
            meets_slo=metrics.max_step_tokens <= spike_slo,
            chosen=config == chosen,
        )
        for config, metrics in results.items()
    ]


def draw_pareto(
    arrivals: Sequence[Arrival],
    results: Mapping[Config, Any],
    front: Sequence[Config],
    chosen: Config | None,
    spike_slo: int,
    path: str | os.PathLike[str],
) -> Path | str:
    """The sweep's Pareto picture: a PNG at ``path`` (its ``Path``) with matplotlib, else the
    text table (see :func:`pytest_vllm_katas.pareto.render_text`)."""
    points = pareto_points(arrivals, results, front, chosen, spike_slo)
    return draw(points, path, x_label=X_LABEL, y_label=Y_LABEL, slo=spike_slo,
                title=f"budget x threshold grid, spike SLO: max_step_tokens <= {spike_slo}")
