"""Mixture-of-experts in numpy: the router's top-k, the expert-sorted token layout, the grouped
expert GEMMs and the scatter-add combine.

Upstream twins (vLLM v0.22.1): ``vllm/model_executor/layers/fused_moe/fused_moe.py``
(``fused_topk``, ``fused_experts``: align -> gate/up GEMM -> SiluAndMul -> down GEMM -> weighted
combine), ``fused_moe/moe_align_block_size.py`` (``moe_align_block_size``) and
``fused_moe/layer.py`` (``FusedMoE``: the stacked expert weights ``w13_weight`` / ``w2_weight``).

The three steps, as upstream names them:

* :func:`fused_topk` turns router logits ``[T, E]`` into ``topk_weights`` / ``topk_ids``
  ``[T, k]``: softmax over all ``E`` experts, keep the ``k`` largest, renormalise them to sum to 1
  (Mixtral's ``renormalize=True``; equal to a softmax over the ``k`` selected logits). **Order and
  tie-break:** each row lists its experts by descending weight, and of two equal weights the
  lower expert id comes first (a stable sort of the negated probabilities). Upstream's kernels
  also return descending weights; their tie order is whatever the kernel gives.
* :func:`moe_align_block_size` sorts the ``T * k`` assignments by expert (within an expert, in
  flat order ``t * k + j``) and pads each expert's run up to a multiple of ``block_size`` with the
  sentinel ``T * k``: ``sorted_token_ids`` (flat assignment indices), ``expert_ids`` (the expert
  of each block of ``block_size`` entries) and ``num_tokens_post_padded``. Experts with no
  assignment get no block. Upstream returns the same three things in buffers sized for the worst
  case; here the arrays are exactly ``num_tokens_post_padded`` (and that / ``block_size``) long.
  The counting sort is upstream's: a histogram, a prefix sum, stable placement.
* :func:`fused_experts` runs each expert once over its blocks (one GEMM per expert, padded rows
  skipped), multiplies each row by its routing weight *after* the expert MLP, and scatter-adds
  the rows back to their tokens with ``np.add.at`` (a token can appear twice in one expert's run
  when its top-k holds that expert twice; fancy-indexed ``+=`` would keep only one of them).

Expert weights are stacked as upstream's ``FusedMoE`` stacks them, but in mini_vllm's ``[in,
out]`` layout (``x @ w``): ``w13_weight[e]`` is ``[hidden, 2 * intermediate]`` with the gate
(``w1``) columns first and the up (``w3``) columns second; ``w2_weight[e]`` is ``[intermediate,
hidden]``. An expert computes ``silu(x @ w1) * (x @ w3) @ w2`` (SwiGLU).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mini_vllm.models.llama import silu_and_mul

#: A router, as kata 07-01's ``route``:
#: ``(x [T, H], W_gate [E, H], k) -> (topk_ids, topk_weights)``.
RouteFn = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
#: A grouped MoE forward, as kata 07-01's ``moe_forward_grouped``:
#: ``(x, experts, topk_ids, topk_weights, expert_fn=...) -> out``.
MoEForwardFn = Callable[..., np.ndarray]


def swiglu_expert(x: np.ndarray, w13: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """One SwiGLU expert on rows ``x``: ``silu(x @ w1) * (x @ w3) @ w2``, ``w13 = [w1 | w3]``."""
    return silu_and_mul(x @ w13) @ w2


def fused_topk(router_logits: np.ndarray, topk: int, renormalize: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """``[T, E]`` router logits -> ``(topk_weights [T, k], topk_ids [T, k] int64)``.

    Softmax over the ``E`` experts (in the logits' dtype, max subtracted), the ``k`` most probable
    per row by descending probability, lower expert id first on ties; with ``renormalize`` the
    kept weights are divided by their sum. ``ValueError`` unless ``1 <= topk <= E``.
    """
    logits = np.asarray(router_logits)
    if logits.ndim != 2:
        raise ValueError(f"router_logits must be [num_tokens, num_experts], got {logits.shape}")
    num_experts = logits.shape[1]
    if not 1 <= topk <= num_experts:
        raise ValueError(f"topk must be in [1, {num_experts}], got {topk}")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    topk_ids = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
    topk_weights = np.take_along_axis(probs, topk_ids, axis=1)
    if renormalize:
        topk_weights = topk_weights / topk_weights.sum(axis=1, keepdims=True)
    return topk_weights, topk_ids.astype(np.int64)


def moe_align_block_size(topk_ids: np.ndarray, block_size: int, num_experts: int
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort the ``T * k`` assignments by expert, each expert's run padded to ``block_size``.

    Returns ``(sorted_token_ids, expert_ids, num_tokens_post_padded)``: ``sorted_token_ids``
    holds flat assignment indices ``t * k + j`` (expert-major; ascending within an expert) and the
    sentinel ``T * k`` in padding slots; ``expert_ids[b]`` is the expert whose run block ``b``
    (entries ``b * block_size`` .. ``+ block_size``) belongs to. ``ValueError`` for an id outside
    ``[0, num_experts)`` or a ``block_size`` below 1.
    """
    ids = np.asarray(topk_ids).reshape(-1)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
        raise ValueError(f"topk_ids must lie in [0, {num_experts}), got {ids.min()}..{ids.max()}")
    numel = ids.size
    counts = np.bincount(ids, minlength=num_experts)                    # the histogram
    padded = -(-counts // block_size) * block_size
    starts = np.concatenate([[0], np.cumsum(padded)])                   # the prefix sum
    total = int(starts[-1])
    sorted_token_ids = np.full(total, numel, dtype=np.int64)
    # Stable placement: assignment i goes to its expert's start + its rank among that expert's.
    order = np.argsort(ids, kind="stable")
    rank = np.arange(numel) - np.concatenate([[0], np.cumsum(counts)])[ids[order]]
    sorted_token_ids[starts[ids[order]] + rank] = order
    expert_ids = np.repeat(np.arange(num_experts, dtype=np.int64), padded // block_size)
    return sorted_token_ids, expert_ids, total


def fused_experts(hidden_states: np.ndarray, w13_weight: np.ndarray, w2_weight: np.ndarray,
                  topk_weights: np.ndarray, topk_ids: np.ndarray, block_size: int = 4
                  ) -> np.ndarray:
    """``[T, H]`` -> ``[T, H]``: ``sum_j topk_weights[t, j] * expert_{topk_ids[t, j]}(x_t)``,
    computed expert by expert over :func:`moe_align_block_size`'s layout."""
    num_tokens, top_k = topk_ids.shape
    out = np.zeros_like(hidden_states)
    if num_tokens == 0:
        return out
    sorted_ids, expert_ids, total = moe_align_block_size(topk_ids, block_size, len(w13_weight))
    flat_weights = topk_weights.reshape(-1)
    blocks_per_expert = np.bincount(expert_ids, minlength=len(w13_weight))
    block_start = 0
    for expert, num_blocks in enumerate(blocks_per_expert):
        if not num_blocks:
            continue
        run = sorted_ids[block_start * block_size:(block_start + num_blocks) * block_size]
        block_start += num_blocks
        run = run[run < topk_ids.size]                                   # drop the padding
        tokens = run // top_k
        rows = swiglu_expert(hidden_states[tokens], w13_weight[expert], w2_weight[expert])
        rows *= flat_weights[run][:, None].astype(rows.dtype)            # weight after the MLP
        np.add.at(out, tokens, rows)
    assert block_start * block_size == total
    return out


class FusedMoE:
    """The experts of one MoE layer: stacked ``w13_weight [E, H, 2I]`` and ``w2_weight [E, I, H]``.

    ``layer(x, router_logits)`` routes with :func:`fused_topk` and runs :func:`fused_experts`.
    """

    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 dtype: np.dtype, renormalize: bool = True, block_size: int = 4) -> None:
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.intermediate_size = intermediate_size
        self.renormalize = renormalize
        self.block_size = block_size
        self.w13_weight = np.zeros((num_experts, hidden_size, 2 * intermediate_size), dtype)
        self.w2_weight = np.zeros((num_experts, intermediate_size, hidden_size), dtype)

    def experts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-expert ``(w13, w2)`` views, the layout kata 07-01's ``experts`` argument takes."""
        return [(self.w13_weight[e], self.w2_weight[e]) for e in range(self.num_experts)]

    def __call__(self, hidden_states: np.ndarray, router_logits: np.ndarray) -> np.ndarray:
        topk_weights, topk_ids = fused_topk(router_logits, self.top_k, self.renormalize)
        return self.apply(hidden_states, topk_weights, topk_ids)

    def apply(self, hidden_states: np.ndarray, topk_weights: np.ndarray, topk_ids: np.ndarray
              ) -> np.ndarray:
        return fused_experts(hidden_states, self.w13_weight, self.w2_weight, topk_weights,
                             topk_ids, self.block_size)


def check_routing(topk_ids: np.ndarray, topk_weights: np.ndarray, num_tokens: int, top_k: int,
                  num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """An injected router's output as arrays, or ``ValueError`` saying what is off."""
    ids, weights = np.asarray(topk_ids), np.asarray(topk_weights)
    if ids.shape != (num_tokens, top_k) or weights.shape != (num_tokens, top_k):
        raise ValueError(f"the router must return topk_ids and topk_weights of shape "
                         f"{(num_tokens, top_k)}, got {ids.shape} and {weights.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"topk_ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
        raise ValueError(f"topk_ids must lie in [0, {num_experts}), got {ids.min()}..{ids.max()}")
    return ids.astype(np.int64), weights
