"""Reference for kata 07-02: predict and read the fused-MoE op off a profile."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from katas.phase07.profile_fused_moe.scaffold import Row
from reference.phase07 import moe_routing


def forward_steps(max_tokens: int) -> int:
    """One prefill step (it samples the first token), then one decode step per further token."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return 1 + (max_tokens - 1)


def predict_fused_moe_calls(num_layers: int, num_steps: int) -> int:
    """One fused-MoE call per MoE layer per forward step."""
    if num_layers < 0 or num_steps < 0:
        raise ValueError(f"counts must be >= 0, got {num_layers} layers, {num_steps} steps")
    return num_layers * num_steps


def count_calls(rows: Sequence[Row], pattern: str) -> int:
    """Calls of every op whose name matches ``pattern``."""
    regex = re.compile(pattern)
    return sum(row.count for row in rows if regex.search(row.key))


def time_share(rows: Sequence[Row], pattern: str, time_attr: str = "self_cpu_time_total"
               ) -> float:
    """The matching ops' share of the total ``time_attr`` over all rows."""
    regex = re.compile(pattern)
    total = sum(getattr(row, time_attr) for row in rows)
    if total <= 0:
        raise ValueError(f"the rows hold no {time_attr}: nothing to take a share of")
    return sum(getattr(row, time_attr) for row in rows if regex.search(row.key)) / total


def route(x: np.ndarray, W_gate: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Kata 07-01's router."""
    return moe_routing.route(x, W_gate, k)
