"""Reference for kata 08-03 — rejection sampling: speculation that samples exactly from the target.

A drafter proposes ``x ~ q``; the target keeps it with probability ``min(1, p[x] / q[x])`` and
otherwise samples the residual ``normalize(max(p - q, 0))``. Whatever ``q`` is, the token that
comes out is distributed exactly as ``p``. Upstream the same rule runs for every drafted position
of a batch at once (``vllm/v1/sample/rejection_sampler.py``: ``rejection_sample``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# How far from 1 a distribution's sum may be (softmax outputs are off by ~1e-16).
_SUM_ATOL = 1e-6


def _distribution(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"{name} must be a 1-D probability vector, got shape {d.shape}")
    if (d < 0).any() or not np.isfinite(d).all() or abs(d.sum() - 1.0) > _SUM_ATOL:
        raise ValueError(
            f"{name} must be a probability distribution (finite, non-negative, summing to 1); "
            f"got sum {d.sum()!r} and minimum {d.min()!r}")
    return d


def _pair(p: Sequence[float] | np.ndarray,
          q: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must cover the same vocabulary, got {p.size} and {q.size} "
                         "entries")
    return p, q


def accept_prob(p_x: float, q_x: float) -> float:
    """Probability of keeping a drafted token with target probability ``p_x`` and draft ``q_x``."""
    if not q_x > 0:
        raise ValueError(f"q_x must be > 0 (a drafter never proposes a token it gives probability "
                         f"0), got {q_x!r}")
    if p_x < 0:
        raise ValueError(f"p_x must be >= 0, got {p_x!r}")
    return min(1.0, p_x / q_x)


def residual_distribution(p: Sequence[float] | np.ndarray,
                          q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Where a rejected draft resamples from: the target's surplus over the draft, normalized."""
    p, q = _pair(p, q)
    surplus = np.maximum(p - q, 0.0)
    total = surplus.sum()
    if total == 0.0:
        # p == q: no draft is ever rejected, so nobody samples this. Returning p keeps the
        # result a distribution (0 / 0 would be NaN).
        return p.copy()
    return surplus / total


def expected_acceptance_rate(p: Sequence[float] | np.ndarray,
                             q: Sequence[float] | np.ndarray) -> float:
    """P(the draft is kept) = Σ_x q[x] min(1, p[x]/q[x]) = Σ_x min(p[x], q[x]): the overlap."""
    p, q = _pair(p, q)
    return float(np.minimum(p, q).sum())


def speculative_token(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray,
                      rng: np.random.Generator) -> tuple[int, bool]:
    """One speculative step: ``(token, accepted)``, the token distributed exactly as ``p``."""
    p, q = _pair(p, q)
    draft = int(rng.choice(p.size, p=q))
    if rng.random() < accept_prob(p[draft], q[draft]):
        return draft, True
    return int(rng.choice(p.size, p=residual_distribution(p, q))), False


def speculative_tokens(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray,
                       rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` independent speculative steps at once: ``(tokens, accepted)``, both of length ``n``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p, q = _pair(p, q)
    drafts = rng.choice(p.size, size=n, p=q)
    # Like upstream, one uniform per position, all drawn before any comparison.
    uniforms = rng.random(n)
    accepted = uniforms < np.minimum(1.0, p[drafts] / q[drafts])
    tokens = drafts.copy()
    rejected = ~accepted
    tokens[rejected] = rng.choice(p.size, size=int(rejected.sum()),
                                  p=residual_distribution(p, q))
    return tokens, accepted


def speculative_sequence(
    target: Callable[[tuple[int, ...]], np.ndarray],
    draft: Callable[[tuple[int, ...]], np.ndarray],
    prefix: Sequence[int],
    k: int,
    rng: np.random.Generator,
) -> tuple[list[int], int]:
    """One speculative cycle of ``k`` drafts: ``(emitted tokens, drafts accepted)``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    context = tuple(prefix)
    drafts: list[int] = []
    draft_dists: list[np.ndarray] = []
    for _ in range(k):  # the drafter runs autoregressively on its own proposals
        q = np.asarray(draft(context + tuple(drafts)), dtype=np.float64)
        drafts.append(int(rng.choice(q.size, p=q)))
        draft_dists.append(q)
    # The verify pass: the target's distribution after each drafted prefix, k + 1 of them
    # (upstream, one forward over context + drafts yields all of them at once).
    target_dists = [np.asarray(target(context + tuple(drafts[:i])), dtype=np.float64)
                    for i in range(k + 1)]
    emitted: list[int] = []
    for position, token in enumerate(drafts):
        p, q = target_dists[position], draft_dists[position]
        if rng.random() < accept_prob(p[token], q[token]):
            emitted.append(token)
            continue
        # The first rejection ends the cycle: the later target distributions were computed
        # after a draft that is not in the output.
        emitted.append(int(rng.choice(p.size, p=residual_distribution(p, q))))
        return emitted, position
    bonus = target_dists[k]  # every draft was kept: the verify pass already has one more
    emitted.append(int(rng.choice(bonus.size, p=bonus)))
    return emitted, k


def acceptance_at_temperature(target_logits: Sequence[float] | np.ndarray,
                              draft_logits: Sequence[float] | np.ndarray,
                              temperature: float) -> float:
    """The overlap of the two models' distributions after the same temperature is applied."""
    t = np.asarray(target_logits, dtype=np.float64)
    d = np.asarray(draft_logits, dtype=np.float64)
    if t.ndim != 1 or t.shape != d.shape:
        raise ValueError(f"target_logits and draft_logits must be 1-D over the same vocabulary, "
                         f"got shapes {t.shape} and {d.shape}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        # Greedy: both distributions are one-hot on their argmax (lowest id on a tie).
        return 1.0 if int(np.argmax(t)) == int(np.argmax(d)) else 0.0

    def softmax(logits: np.ndarray) -> np.ndarray:
        scaled = logits / temperature
        w = np.exp(scaled - scaled.max())
        return w / w.sum()

    return expected_acceptance_rate(softmax(t), softmax(d))
