"""Kata 07-02: predict how often the fused-MoE op runs, read it off a real profile, and check
that vLLM routes every token the way your 07-01 router does.

``rows`` are profile rows (``scaffold.Row``: ``key``, ``count``, ``self_cpu_time_total``,
``cpu_time_total``, ``self_device_time_total``), as ``torch.profiler``'s
``prof.key_averages()`` gives them (``scaffold.rows_from_key_averages``). Times are in
microseconds; ``self_*`` times exclude the op's children, ``cpu_time_total`` includes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from katas.phase07.profile_fused_moe.scaffold import Row


def forward_steps(max_tokens: int) -> int:
    """How many model forward passes a ``generate`` of ``max_tokens`` greedy tokens per prompt
    takes, when the whole batch is prefilled in its first step and every request runs to
    ``max_tokens`` (``ignore_eos``). Each forward pass samples one token per request.
    ``ValueError`` for ``max_tokens < 1``."""
    raise NotImplementedError("forward_steps: forward passes of one generate call")


def predict_fused_moe_calls(num_layers: int, num_steps: int) -> int:
    """How many times the fused-MoE op runs in ``num_steps`` forward passes of a model with
    ``num_layers`` MoE layers (vLLM-CPU: one ``cpu_fused_moe`` call computes all of one layer's
    experts for the whole batch). ``ValueError`` for a negative count."""
    raise NotImplementedError("predict_fused_moe_calls: fused-MoE calls per generate")


def count_calls(rows: Sequence[Row], pattern: str) -> int:
    """Total calls (``count``) of every row whose ``key`` the regular expression ``pattern``
    matches anywhere (``re.search``); 0 if none does. Op names drift between versions and
    devices (``_C::cpu_fused_moe`` on CPU, ``fused_moe_kernel`` on CUDA): match a part."""
    raise NotImplementedError("count_calls: calls of the ops matching a pattern")


def time_share(rows: Sequence[Row], pattern: str, time_attr: str = "self_cpu_time_total"
               ) -> float:
    """The matching rows' share of ``time_attr`` summed over **all** rows: a number in
    ``[0, 1]``. Use self times, so that a parent op and its children are not counted twice.
    ``ValueError`` if the rows hold no time at all."""
    raise NotImplementedError("time_share: the matching ops' share of the total time")


def route(x: np.ndarray, W_gate: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Your 07-01 router, same contract: ``x (T, d)``, ``W_gate (E, d)`` ->
    ``(topk_ids, topk_weights)``, ``(T, k)`` each; experts by descending logit, the lower id
    first on ties; weights the softmax of the selected logits. Bring it over from
    ``katas/phase07/moe_routing`` (import it or copy it)."""
    raise NotImplementedError("route: your 07-01 router")
