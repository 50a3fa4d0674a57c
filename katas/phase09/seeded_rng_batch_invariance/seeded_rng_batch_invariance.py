"""Kata 09-04: a sampler in which every seeded request owns its random stream."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PerRequestSampler:
    """Temperature sampling whose seeded rows never depend on the rest of the batch.

    Attributes the tests read:

    - ``generators``: ``dict[str, np.random.Generator]``, one entry per seeded request that has
      drawn at least once, keyed by request id (never by its row in a batch).
    - ``shared``: the one ``np.random.Generator`` every unseeded request draws from, created
      from the constructor's ``seed`` (the engine's seed).
    """

    def __init__(self, seed: int = 0) -> None:
        raise NotImplementedError("PerRequestSampler: set up the per-request and shared state")

    def sample(self, request_id: str, logits: np.ndarray, temperature: float,
               seed: int | None = None) -> int:
        """One token for one request: a 1-D ``logits`` row; the same as ``sample_batch`` on a
        batch holding only this row.

        ``ValueError`` when ``logits`` is not 1-D.
        """
        raise NotImplementedError("sample: one token for one request")

    def sample_batch(self, request_ids: Sequence[str], logits: np.ndarray,
                     temperatures: Sequence[float], seeds: Sequence[int | None]) -> list[int]:
        """One token per row of a ``(batch, vocab)`` ``logits`` matrix, as a list of ints.

        - ``temperature == 0``: the row's argmax (lowest index on ties). No generator is
          created and no number is drawn, from any generator; the seed is ignored.
        - otherwise exactly one draw from softmax(logits / temperature), made the way
          ``gen.choice(vocab, p=probs)`` makes it, where ``gen`` is:

          * for a seeded request, its own generator: ``np.random.default_rng(seed)`` created
            the first time the request draws and advanced by one draw per sampled token after
            that, whatever else is in the batch, in whatever order, and however many steps the
            request sits out;
          * for an unseeded request (``seed is None``), ``shared``.

        A request's tokens are therefore a function of its seed and its own logits only: the
        same alone, with seeded, unseeded or greedy neighbours, at any row.

        ``ValueError`` when ``logits`` is not 2-D, when ``request_ids`` / ``temperatures`` /
        ``seeds`` do not have one entry per row, when an id appears twice, when a temperature
        is negative, or when a request that owns a generator asks for a different seed.
        """
        raise NotImplementedError("sample_batch: one token per row, each from its own stream")

    def finish(self, request_id: str) -> None:
        """Forget the request's generator (ids are recycled); unknown ids are ignored."""
        raise NotImplementedError("finish: drop a finished request's state")
