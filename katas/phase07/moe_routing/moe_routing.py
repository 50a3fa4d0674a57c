"""Kata 07-01: the mixture-of-experts forward in numpy, per token and grouped by expert.

Shapes: ``T`` tokens of width ``d``, ``E`` experts, each token routed to ``k`` of them.
An expert is a tuple of weight arrays; ``expert_fn(rows, *experts[e])`` runs expert ``e`` on a
``(n, d)`` block of rows and returns ``(n, d)``. ``expert_fn=None`` (the default) means
:func:`expert_mlp`, so ``experts[e] = (W1, W2)``; mini_vllm's Mixtral passes SwiGLU experts
``(w13, w2)`` with its own ``expert_fn``, and everything here must work unchanged for any such
function.

An *assignment* is one (token, slot) pair; its flat index is ``t * k + j`` (row-major over
``topk_ids``), so there are ``T * k`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ExpertFn = Callable[..., np.ndarray]


def route(x: np.ndarray, W_gate: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick each token's ``k`` experts and their combine weights.

    ``x`` is ``(T, d)``, ``W_gate`` is ``(E, d)``; the router logits are ``x @ W_gate.T``,
    ``(T, E)``. Returns ``(topk_ids, topk_weights)``, both ``(T, k)``:

    * ``topk_ids`` (integers): the ``k`` experts with the largest logits, listed by descending
      logit; of two equal logits the **lower expert id comes first** (and is the one kept when
      only one of them fits).
    * ``topk_weights`` (floats): the softmax of those ``k`` selected logits, in the same order;
      each row is positive and sums to 1. Mixtral computes it as softmax over all ``E``, keep
      the top ``k``, renormalise: the same numbers. Finite for logits in the thousands.

    Example: logits ``[1, 3, 2, 0.5]``, ``k = 2`` -> ids ``[1, 2]``, weights
    ``[e/(1+e), 1/(1+e)]`` = ``[0.7311, 0.2689]``.

    Raises ``ValueError`` if ``k`` is not in ``[1, E]`` or the shapes do not fit.
    """
    raise NotImplementedError("route: top-k experts per token and their combine weights")


def expert_mlp(x: np.ndarray, W1: np.ndarray, W2: np.ndarray) -> np.ndarray:
    """The course's expert: ``x (n, d)``, ``W1 (d, h)``, ``W2 (h, d)`` -> ``(n, d)``: a ReLU
    MLP, up-projection, ReLU, down-projection (no biases)."""
    raise NotImplementedError("expert_mlp: one ReLU MLP expert on a block of rows")


def moe_forward_reference(x: np.ndarray, experts: Sequence[tuple[np.ndarray, ...]],
                          topk_ids: np.ndarray, topk_weights: np.ndarray,
                          expert_fn: ExpertFn | None = None) -> np.ndarray:
    """The oracle: ``out[t] = sum_j topk_weights[t, j] * expert_{topk_ids[t, j]}(x[t])``.

    Token by token, slot by slot: obviously right, ``T * k`` tiny expert calls. ``topk_ids`` and
    ``topk_weights`` are any ``(T, k)`` arrays (a token may name the same expert twice: both
    slots count). Returns ``(T, d)``.

    Raises ``ValueError`` if the two arrays differ in shape, are not ``(T, k)`` for ``T =
    len(x)``, or name an expert outside ``[0, len(experts))``.
    """
    raise NotImplementedError("moe_forward_reference: the per-token weighted sum of experts")


def permute(topk_ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Group the ``T * k`` assignments by expert.

    Returns ``(order, offsets)``: ``order`` (``T * k`` integers) is every flat assignment index
    exactly once, expert 0's first, then expert 1's, ...; within one expert in ascending flat
    index (so in token order). ``offsets`` (``E + 1`` integers, ``offsets[0] = 0``,
    ``offsets[E] = T * k``) bounds each run: expert ``e`` serves the assignments
    ``order[offsets[e]:offsets[e + 1]]``, i.e. the tokens ``order[...] // k``.

    Example: ``topk_ids = [[2, 0], [2, 3], [0, 2]]``, ``E = 4`` -> ``order = [1, 4, 0, 2, 5,
    3]``, ``offsets = [0, 2, 2, 5, 6]``.

    Raises ``ValueError`` for an id outside ``[0, num_experts)``.
    """
    raise NotImplementedError("permute: assignments sorted by expert, with each expert's run")


def unpermute(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Undo :func:`permute`'s reordering: ``rows[i]`` belongs to flat assignment ``order[i]``;
    return the same rows in flat assignment order, so that ``unpermute(a[order], order)``
    equals ``a`` for any ``a`` with ``T * k`` rows."""
    raise NotImplementedError("unpermute: expert-sorted rows back to assignment order")


def moe_forward_grouped(x: np.ndarray, experts: Sequence[tuple[np.ndarray, ...]],
                        topk_ids: np.ndarray, topk_weights: np.ndarray,
                        expert_fn: ExpertFn | None = None) -> np.ndarray:
    """The same result as :func:`moe_forward_reference`, computed expert-major.

    Each expert with at least one assignment is called **exactly once**, on the rows of exactly
    its assigned tokens (in :func:`permute`'s order; a token that names an expert twice appears
    twice in its block); an expert with none is not called. Each output row is weighted by its
    assignment's weight after the expert has run, and added into its token's output, every
    duplicate included. Returns ``(T, d)``; same errors as the reference.
    """
    raise NotImplementedError("moe_forward_grouped: permute, one call per expert, combine")
