"""Reference for kata 09-04: a sampler that keeps one random generator per request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PerRequestSampler:
    """Temperature sampling where every seeded request owns its random stream."""

    def __init__(self, seed: int = 0) -> None:
        self.generators: dict[str, np.random.Generator] = {}
        self.shared = np.random.default_rng(seed)
        self._seeds: dict[str, int] = {}

    def sample(self, request_id: str, logits: np.ndarray, temperature: float,
               seed: int | None = None) -> int:
        row = np.asarray(logits, dtype=np.float64)
        if row.ndim != 1:
            raise ValueError(f"logits must be one row (1-D), got shape {row.shape}")
        return self.sample_batch([request_id], row[None, :], [temperature], [seed])[0]

    def sample_batch(self, request_ids: Sequence[str], logits: np.ndarray,
                     temperatures: Sequence[float], seeds: Sequence[int | None]) -> list[int]:
        x = np.asarray(logits, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"logits must be a (batch, vocab) matrix, got shape {x.shape}")
        batch = x.shape[0]
        if not len(request_ids) == len(temperatures) == len(seeds) == batch:
            raise ValueError(
                f"request_ids, temperatures and seeds need one entry per logits row ({batch}); "
                f"got {len(request_ids)}, {len(temperatures)}, {len(seeds)}")
        if len(set(request_ids)) != batch:
            raise ValueError(f"a request samples at most once per batch: {list(request_ids)}")
        for rid, t, s in zip(request_ids, temperatures, seeds, strict=True):
            if t < 0:
                raise ValueError(f"temperature must be >= 0, got {t} for {rid!r}")
            known = self._seeds.get(rid)
            if t > 0 and s is not None and known is not None and known != s:
                raise ValueError(f"request {rid!r} already draws from seed {known}, not {s}; "
                                 "finish() it before reusing its id")

        tokens: list[int] = []
        for rid, row, t, s in zip(request_ids, x, temperatures, seeds, strict=True):
            if t == 0:
                tokens.append(int(np.argmax(row)))  # greedy: no generator made, no number drawn
                continue
            if s is None:
                gen = self.shared
            else:
                gen = self.generators.get(rid)
                if gen is None:
                    gen = self.generators[rid] = np.random.default_rng(s)
                    self._seeds[rid] = s
            z = row / t
            probs = np.exp(z - np.max(z))
            probs /= probs.sum()
            tokens.append(int(gen.choice(probs.size, p=probs)))
        return tokens

    def finish(self, request_id: str) -> None:
        self.generators.pop(request_id, None)
        self._seeds.pop(request_id, None)
