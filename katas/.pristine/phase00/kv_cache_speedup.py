"""Kata 00-01 — the KV-cache speedup. Your work goes here.

Generate ``n_new`` tokens after a prompt twice: once recomputing every token's K/V at every
step, once computing each token's K/V exactly once. Pay for every K/V with
``meter.compute_kv(token, position)`` and ask the model for the next token with
``next_token(tokens)``, passing the whole sequence so far.
"""

from __future__ import annotations

from collections.abc import Sequence

# Provided by the lab; next_token is yours to call.
from katas.phase00.kv_cache_speedup.scaffold import KVWork, next_token  # noqa: F401


def generate_no_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate without a cache; return ``(prompt + generated tokens, total K/V work)``.

    Recipe: start from a copy of the prompt; use ``meter`` (a fresh ``KVWork()`` when it is
    None). For each of the ``n_new`` steps, first compute K/V for *every* token currently in
    the sequence (``meter.compute_kv(token, position)``, positions from 0), then append
    ``next_token(tokens)``. Step ``i`` costs ``len(prompt) + i`` units. Return the full list
    and ``meter.units``. Do not modify ``prompt``.
    """
    raise NotImplementedError("generate_no_cache: recompute K/V for the whole sequence every step")


def generate_with_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate with a KV cache; return ``(prompt + generated tokens, total K/V work)``.

    Recipe: start from a copy of the prompt; use ``meter`` (a fresh ``KVWork()`` when it is
    None). Prefill: compute K/V once for each prompt token at its position. Then for each of
    the ``n_new`` steps, append ``next_token(tokens)`` and compute K/V for that new token
    only. Total ``len(prompt) + n_new`` units. Return the full list and ``meter.units``.
    """
    raise NotImplementedError("generate_with_cache: prefill once, then one K/V per new token")
