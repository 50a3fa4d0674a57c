"""Kata 00-03 — from logits to a token. Your work goes here.

Build the sampler one knob at a time: a softmax, top-k and top-p masks, then ``sample``, which
chains them in the engine's order so that your sampler agrees token for token with
``mini_vllm``'s. Rows are 1-D float64 arrays of logits, one per vocabulary entry. No function
modifies the caller's array; the masks return a new array of the same shape in which a removed
token's logit is ``-inf`` (never 0: a logit of 0 is an ordinary score).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities for a 1-D row of logits: same shape, non-negative, summing to 1.

    Order-preserving (a larger logit never gets a smaller probability), unchanged by adding a
    constant to every logit, and finite for logits of 1000 or -1000. A ``-inf`` logit gets
    probability exactly 0.
    """
    raise NotImplementedError("softmax: logits row -> probabilities, safe for huge logits")


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest logits; every other logit becomes ``-inf``.

    Survivors keep their values. Logits tied with the k-th largest value all survive (as
    upstream), so more than ``k`` can. ``k <= 0`` or ``k >= len(logits)`` turns the filter off:
    the logits come back unchanged. Example: ``[4, 2, 3, 2, 1]`` with ``k=3`` keeps tokens
    0, 1, 2 and 3.
    """
    raise NotImplementedError("apply_top_k: keep only the k largest logits")


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the nucleus: the fewest most-likely tokens whose probability adds up to at least ``p``.

    Probabilities are the softmax of ``logits``. Tokens are taken most likely first (equal
    probabilities in index order) until their mass reaches ``p``; the token that crosses ``p``
    is kept, and reaching ``p`` exactly is enough. Every other logit becomes ``-inf``;
    survivors keep their values; at least one token always survives. ``p >= 1`` turns the
    filter off: the logits come back unchanged. Example: probabilities ``[0.4, 0.4, 0.2]``
    with ``p=0.5`` keep tokens 0 and 1.
    """
    raise NotImplementedError("apply_top_p: keep the fewest top tokens whose mass reaches p")


def sample(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> int:
    """Pick one token id (a Python ``int``) from ``logits``.

    The pipeline order is part of the contract (it is observable, and the engine's):

    1. ``temperature == 0``: greedy, the index of the largest logit (lowest index on ties).
       No random generator is created, and ``top_k``, ``top_p`` and ``seed`` are ignored
       whatever their values.
    2. A negative ``temperature`` raises ``ValueError``.
    3. Otherwise temperature reshapes the logits (below 1 sharpens, above 1 flattens), then
       top-k, then top-p over what top-k left, then the softmax.
    4. Exactly one draw: ``np.random.default_rng(seed).choice(len(probs), p=probs)``, the
       engine's call, so that a given seed picks the same token in both. The same arguments
       and seed always give the same token.
    """
    raise NotImplementedError("sample: greedy at T=0, else temperature, top-k, top-p, one draw")
