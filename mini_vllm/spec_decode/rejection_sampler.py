"""RejectionSampler: keep the drafts the target agrees with, then add one token of its own.

Upstream twin: ``vllm/v1/sample/rejection_sampler.py: RejectionSampler`` (``forward``, the greedy
path, and ``rejection_sample`` with its random path and ``sample_recovered_tokens``).

One request, one verify step: ``target_logits`` has ``k + 1`` rows; row ``i`` is the target's
next-token scores after the context plus drafts ``0..i-1``. The output is the accepted drafts
followed by exactly one more token, so 1 to k + 1 tokens:

* greedy (``temperature == 0``): accept draft ``i`` while it equals ``argmax(row i)``; at the
  first mismatch emit that argmax instead (the **correction**) and stop; if all k match, emit
  ``argmax(row k)`` (the **bonus**). Token for token what greedy decoding would produce.
* temperature: ``p_i`` = the target's distribution from row ``i`` and ``q_i`` the draft's, both
  after the *same* temperature -> top-k -> top-p pipeline as :class:`mini_vllm.sampler.Sampler`.
  Draft ``x`` is accepted with probability ``min(1, p_i[x] / q_i[x])`` (``q_i[x] == 0``:
  rejected); on rejection the token is drawn from ``normalize(max(0, p_i - q_i))`` and the step
  ends; all accepted: the bonus is drawn from ``p_k``. Each emitted token is then distributed
  exactly as the target's own sample. A drafter with no probabilities (n-gram, or a greedy draft
  model) proposed ``x`` with certainty: ``q_i`` is one-hot on ``x`` (upstream's
  ``NO_DRAFT_PROBS``), so ``x`` is accepted with probability ``p_i[x]`` and a rejection draws from
  ``p_i`` with ``x`` removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mini_vllm.sampler import apply_top_k, apply_top_p, softmax


def target_probs(logits: np.ndarray, params: Any) -> np.ndarray:
    """The distribution ``Sampler`` would draw from for ``params`` (temperature > 0)."""
    x = np.asarray(logits, dtype=np.float64) / params.temperature
    return softmax(apply_top_p(apply_top_k(x, params.top_k), params.top_p))


class RejectionSampler:
    """``forward(draft_token_ids, target_logits, params, draft_probs=None, rng=None)``."""

    def forward(self, draft_token_ids: Sequence[int], target_logits: np.ndarray, params: Any,
                draft_probs: np.ndarray | None = None,
                rng: np.random.Generator | None = None) -> list[int]:
        drafts = [int(t) for t in draft_token_ids]
        logits = np.asarray(target_logits)
        if logits.ndim != 2 or logits.shape[0] != len(drafts) + 1:
            raise ValueError(f"target_logits must have k + 1 = {len(drafts) + 1} rows, got shape "
                             f"{logits.shape}")
        if params.temperature == 0.0:
            return self._greedy(drafts, logits)
        if draft_probs is not None and np.shape(draft_probs) != (len(drafts), logits.shape[1]):
            raise ValueError(f"draft_probs must have shape {(len(drafts), logits.shape[1])}, got "
                             f"{np.shape(draft_probs)}")
        if rng is None:
            rng = np.random.default_rng()
        return self._random(drafts, logits, params, draft_probs, rng)

    __call__ = forward

    @staticmethod
    def _greedy(drafts: list[int], logits: np.ndarray) -> list[int]:
        out: list[int] = []
        for i, draft in enumerate(drafts):
            choice = int(np.argmax(logits[i]))
            out.append(choice)
            if choice != draft:
                return out  # the correction ends the step
        out.append(int(np.argmax(logits[len(drafts)])))  # the bonus token
        return out

    @staticmethod
    def _random(drafts: list[int], logits: np.ndarray, params: Any,
                draft_probs: np.ndarray | None, rng: np.random.Generator) -> list[int]:
        out: list[int] = []
        for i, draft in enumerate(drafts):
            p = target_probs(logits[i], params)
            if draft_probs is None:
                q = np.zeros_like(p)
                q[draft] = 1.0
            else:
                q = np.asarray(draft_probs[i], dtype=np.float64)
            q_x = q[draft]
            if q_x > 0.0 and rng.random() < min(1.0, p[draft] / q_x):
                out.append(draft)
                continue
            residual = np.maximum(p - q, 0.0)
            total = residual.sum()
            # total is 0 only when p == q, where a rejection cannot happen (bar rounding).
            residual = residual / total if total > 0.0 else p
            out.append(int(rng.choice(residual.size, p=residual)))
            return out
        p = target_probs(logits[len(drafts)], params)
        out.append(int(rng.choice(p.size, p=p)))
        return out
