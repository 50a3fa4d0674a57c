"""Reference for kata 00-01 — generation with and without a KV cache, with exact work counts."""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase00.kv_cache_speedup.scaffold import KVWork, next_token


def generate_no_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate ``n_new`` tokens, recomputing every token's K/V at every step."""
    meter = KVWork() if meter is None else meter
    tokens = list(prompt)
    for _ in range(n_new):
        # Without a cache the model re-reads the whole sequence: every K/V is produced again,
        # although causality guarantees each one is identical to the last time.
        for position, token in enumerate(tokens):
            meter.compute_kv(token, position)
        tokens.append(next_token(tokens))
    return tokens, meter.units


def generate_with_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate ``n_new`` tokens, computing each token's K/V exactly once."""
    meter = KVWork() if meter is None else meter
    tokens = list(prompt)
    # Prefill: the prompt's K/V, once.
    for position, token in enumerate(tokens):
        meter.compute_kv(token, position)
    for _ in range(n_new):
        # The model still sees the whole context (next_token takes the full list); the cache
        # changes what is recomputed, never what the model knows.
        tokens.append(next_token(tokens))
        meter.compute_kv(tokens[-1], len(tokens) - 1)
    return tokens, meter.units
