"""Kata 00-01 — the KV-cache speedup. Your work goes here.

Generate ``n_new`` tokens after a prompt twice: once with no cache, so that every step
recomputes the keys and values (K/V) of every token already in the sequence, and once with a
KV cache, so that each token's K/V is computed exactly once. Both runs must emit the same
tokens; only the work differs.

Provided by the lab (``scaffold.py``):

- ``next_token(tokens)`` is the model: the next token id for a context, a pure function of the
  whole list it is given.
- ``KVWork`` is the work meter: ``meter.compute_kv(token, position)`` costs one unit and logs
  the call; ``meter.units`` is the running total.

Worked example (the course's): a 5-token prompt and 10 new tokens cost 95 units without a
cache and 15 with one.
"""

from __future__ import annotations

from collections.abc import Sequence

# Provided by the lab; next_token is yours to call.
from katas.phase00.kv_cache_speedup.scaffold import KVWork, next_token  # noqa: F401


def generate_no_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate ``n_new`` tokens without a KV cache.

    Returns ``(tokens, work)``: ``tokens`` is a new list, the prompt followed by the
    ``n_new`` generated ids; ``work`` is the total K/V work charged to ``meter`` (an int).

    Contract:

    - No cache: before each new token is produced, the K/V of every token then in the
      sequence is computed again, so producing token ``P + i`` costs ``P + i`` units
      (``P = len(prompt)``).
    - Each token is the model's answer for the whole sequence before it.
    - Every ``compute_kv(token, position)`` call names a token of the returned sequence and
      its 0-based position in it.
    - Work is charged to ``meter`` when one is given, else to a fresh ``KVWork()``.
    - ``prompt`` is not modified.
    """
    raise NotImplementedError("generate_no_cache: recompute K/V for the whole sequence every step")


def generate_with_cache(
    prompt: Sequence[int], n_new: int, meter: KVWork | None = None
) -> tuple[list[int], int]:
    """Generate ``n_new`` tokens with a KV cache.

    Returns ``(tokens, work)`` exactly as :func:`generate_no_cache` does, and ``tokens`` must
    be identical to what it returns for the same arguments.

    Contract:

    - With a cache, the K/V of every position of the final sequence (prompt and generated
      tokens alike) is computed exactly once: ``work == len(prompt) + n_new``.
    - The cache saves K/V work only; the model still sees the whole sequence so far.
    - ``compute_kv`` calls, ``meter`` and ``prompt`` as in :func:`generate_no_cache`.
    """
    raise NotImplementedError("generate_with_cache: compute each token's K/V exactly once")
