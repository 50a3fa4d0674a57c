"""Provided for lab 11-04: the traffic the hit-rate tests replay, and a step loop that drives a
slot cache the way mini_vllm's scheduler and model runner do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def skewed_trace(num_requests: int = 2000, num_adapters: int = 16, hot: int = 3,
                 hot_share: float = 0.8, seed: int = 0) -> list[int]:
    """The course's "80/20" traffic, made exact: each request picks, with probability
    ``hot_share``, one of the ``hot`` adapters ``0 .. hot - 1`` uniformly, and otherwise one of
    all ``num_adapters`` uniformly (hot ones included). Drawn from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    is_hot = rng.random(num_requests) < hot_share
    hot_pick = rng.integers(0, hot, num_requests)
    any_pick = rng.integers(0, num_adapters, num_requests)
    return np.where(is_hot, hot_pick, any_pick).tolist()


def uniform_trace(num_requests: int = 2000, num_adapters: int = 8, seed: int = 0) -> list[int]:
    """Every request picks one of ``num_adapters`` adapters uniformly."""
    return np.random.default_rng(seed).integers(0, num_adapters, num_requests).tolist()


@dataclass
class TraceRequest:
    """A request of the step loop: arrives at step ``arrival``, runs ``steps`` steps with
    ``adapter`` (``None``: the base model)."""

    name: str
    arrival: int
    adapter: int | None
    steps: int


def run_trace(cache: Any, requests: list[TraceRequest], max_steps: int = 50
              ) -> list[list[str]]:
    """Drive ``cache`` for ``max_steps`` steps (or until every request is done); return the
    names admitted at each step.

    Each step, as mini_vllm: (1) the waiting requests, first come first served, are admitted if
    their adapter is ``None`` or ``cache.can_admit(adapter)`` (then ``cache.pin(adapter)``),
    else they stay waiting while later ones may go; (2) the model runner calls
    ``cache.ensure`` once for each distinct adapter of the running requests, in admission order;
    (3) every running request does one step, and those done leave (``cache.unpin``).
    """
    pending = sorted(requests, key=lambda r: r.arrival)
    waiting: list[TraceRequest] = []
    running: list[list[Any]] = []  # [request, steps left]
    admitted: list[list[str]] = []
    for step in range(max_steps):
        if not pending and not waiting and not running:
            break
        waiting += [r for r in pending if r.arrival == step]
        pending = [r for r in pending if r.arrival > step]
        now: list[str] = []
        for request in list(waiting):
            if request.adapter is None or cache.can_admit(request.adapter):
                if request.adapter is not None:
                    cache.pin(request.adapter)
                waiting.remove(request)
                running.append([request, request.steps])
                now.append(request.name)
        admitted.append(now)
        for adapter in dict.fromkeys(r.adapter for r, _ in running if r.adapter is not None):
            cache.ensure(adapter)
        for entry in running:
            entry[1] -= 1
        for request, _left in [e for e in running if e[1] == 0]:
            if request.adapter is not None:
                cache.unpin(request.adapter)
        running = [e for e in running if e[1] > 0]
    return admitted
