"""Reference for kata 07-01: the MoE forward in numpy, per token and grouped by expert."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ExpertFn = Callable[..., np.ndarray]


def route(x: np.ndarray, W_gate: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k experts per token and their combine weights (see the stub for the contract)."""
    x, W_gate = np.asarray(x), np.asarray(W_gate)
    if x.ndim != 2 or W_gate.ndim != 2 or x.shape[1] != W_gate.shape[1]:
        raise ValueError(f"x must be (T, d) and W_gate (E, d) with the same d; got x {x.shape}, "
                         f"W_gate {W_gate.shape}")
    num_experts = W_gate.shape[0]
    if not 1 <= k <= num_experts:
        raise ValueError(f"k must be in [1, {num_experts}] (the number of experts), got {k}")
    logits = x @ W_gate.T                                            # (T, E)
    # A stable sort of the negated logits: descending, and the lower id first on a tie.
    topk_ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    selected = np.take_along_axis(logits, topk_ids, axis=1)          # (T, k), descending
    # Softmax over the k selected logits only; the largest is the first column.
    weights = np.exp(selected - selected[:, :1])
    weights /= weights.sum(axis=1, keepdims=True)
    return topk_ids.astype(np.int64), weights


def expert_mlp(x: np.ndarray, W1: np.ndarray, W2: np.ndarray) -> np.ndarray:
    """relu(x @ W1) @ W2."""
    return np.maximum(x @ W1, 0.0) @ W2


def _check_assignments(x: np.ndarray, experts: Sequence, topk_ids: np.ndarray,
                       topk_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    topk_ids, topk_weights = np.asarray(topk_ids), np.asarray(topk_weights)
    if topk_ids.ndim != 2 or topk_ids.shape != topk_weights.shape or len(topk_ids) != len(x):
        raise ValueError(f"topk_ids and topk_weights must both be (T, k) with T = {len(x)}; got "
                         f"{topk_ids.shape} and {topk_weights.shape}")
    if topk_ids.size and (topk_ids.min() < 0 or topk_ids.max() >= len(experts)):
        raise ValueError(f"expert ids must lie in [0, {len(experts)}), got "
                         f"{topk_ids.min()}..{topk_ids.max()}")
    return topk_ids, topk_weights


def moe_forward_reference(x: np.ndarray, experts: Sequence[tuple[np.ndarray, ...]],
                          topk_ids: np.ndarray, topk_weights: np.ndarray,
                          expert_fn: ExpertFn | None = None) -> np.ndarray:
    """The oracle: token by token, slot by slot."""
    topk_ids, topk_weights = _check_assignments(x, experts, topk_ids, topk_weights)
    expert_fn = expert_fn or expert_mlp
    out = np.zeros(x.shape, dtype=np.result_type(x, topk_weights))
    for t in range(len(x)):
        for e, w in zip(topk_ids[t], topk_weights[t], strict=True):
            out[t] += w * expert_fn(x[t:t + 1], *experts[e])[0]
    return out


def permute(topk_ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat assignment indices grouped by expert, and where each expert's run starts."""
    flat = np.asarray(topk_ids).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= num_experts):
        raise ValueError(f"expert ids must lie in [0, {num_experts}), got "
                         f"{flat.min()}..{flat.max()}")
    order = np.argsort(flat, kind="stable").astype(np.int64)
    counts = np.bincount(flat, minlength=num_experts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, offsets


def unpermute(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows in expert-sorted order back to flat assignment order."""
    rows = np.asarray(rows)
    out = np.empty_like(rows)
    out[order] = rows
    return out


def moe_forward_grouped(x: np.ndarray, experts: Sequence[tuple[np.ndarray, ...]],
                        topk_ids: np.ndarray, topk_weights: np.ndarray,
                        expert_fn: ExpertFn | None = None) -> np.ndarray:
    """Permute by expert, one call per expert over its run, weight, scatter-add back."""
    topk_ids, topk_weights = _check_assignments(x, experts, topk_ids, topk_weights)
    expert_fn = expert_fn or expert_mlp
    k = topk_ids.shape[1]
    order, offsets = permute(topk_ids, len(experts))
    tokens = order // k                                              # the token of each slot
    flat_weights = topk_weights.reshape(-1)
    out = np.zeros(x.shape, dtype=np.result_type(x, topk_weights))
    for e in range(len(experts)):
        start, end = offsets[e], offsets[e + 1]
        if start == end:
            continue
        run_tokens = tokens[start:end]
        y = expert_fn(x[run_tokens], *experts[e])                    # one call per expert
        y = y * flat_weights[order[start:end]][:, None]              # weight after the MLP
        np.add.at(out, run_tokens, y)                                # duplicates add up
    return out
