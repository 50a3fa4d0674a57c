"""Kata 10-02 — two-way tensor parallelism for real: two processes, one model, one answer.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase10/two_way_tp`` (needs
torch: ``pip install -e ".[torch]"``).

The tests start two real processes joined by ``torch.distributed`` (gloo on CPU). Each loads the
same checkpoint, keeps its own share with ``shard_weights``, and runs ``rank_forward`` in
lockstep with its peer; greedy decoding must give the tokens of one process holding everything.

Layout: weights carry Hugging Face's names (``model.layers.{i}.self_attn.q_proj.weight``...)
and shapes, ``[out_features, in_features]``, applied as ``y = x @ W.T``. The scaffold
(``katas/phase10/two_way_tp/scaffold.py``) gives you ``LlamaShape``, ``rms_norm``,
``apply_rope``, ``attend`` (causal grouped-query attention) and ``KVCache``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from katas.phase10.two_way_tp.scaffold import KVCache, LlamaShape


def heads_per_rank(shape: LlamaShape, world_size: int) -> tuple[int, int]:
    """``(query heads, KV heads)`` that one rank of ``world_size`` holds.

    Query heads split evenly. KV heads split evenly too, unless there are fewer KV heads than
    ranks: then every rank holds exactly one KV head, each KV head copied onto
    ``world_size // num_kv_heads`` ranks, as vLLM does.

    Raises ``ValueError`` (naming the number that does not divide) when ``world_size < 1``,
    when ``num_heads`` is not a multiple of ``world_size``, or when the KV heads can be neither
    split nor copied evenly. Examples: 4 heads / 2 KV heads -> ``(2, 1)`` at 2 ranks,
    ``(1, 1)`` at 4; 32 / 8 at 2 ranks -> ``(16, 4)``.
    """
    raise NotImplementedError("heads_per_rank: how many heads one rank holds")


def shard_weights(weights: Mapping[str, torch.Tensor], shape: LlamaShape, rank: int,
                  world_size: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s share of a whole Llama checkpoint (every tensor name, same names).

    - q/k/v, gate/up (column-parallel): the rank keeps the block of *output* features that
      belongs to it: its query heads (rank 0 the first ones), the KV heads those query heads
      read in grouped-query attention, and its slice of the MLP's intermediate features.
    - o_proj, down_proj (row-parallel): the block of *input* features that matches what the
      rank produced above, so that its product is a full-width partial sum.
    - embedding, norms, LM head: whole, on every rank.

    Returns new tensors (the caller may drop the full checkpoint); with ``world_size`` 1 every
    tensor comes back whole. Raises ``ValueError`` for a rank outside ``[0, world_size)``, for
    heads that do not split (see ``heads_per_rank``) or an ``intermediate_size`` that is not a
    multiple of ``world_size``: a silent ragged split is never acceptable.
    """
    raise NotImplementedError("shard_weights: keep this rank's share of every weight")


def all_reduce(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum ``x`` over the ranks of the default process group; every rank gets the sum.

    Returns the summed tensor (it may be ``x`` itself, reduced in place). With ``world_size``
    1 there is no group to talk to: return ``x`` unchanged without any collective.
    """
    raise NotImplementedError("all_reduce: sum a tensor across the ranks")


def rank_forward(shard: Mapping[str, torch.Tensor], shape: LlamaShape,
                 input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: KVCache,
                 world_size: int) -> torch.Tensor:
    """One forward step of this rank's share of the Llama; returns ``[tokens, vocab]`` logits.

    ``input_ids`` / ``positions`` (``[tokens]``, consecutive) are one sequence's new tokens: its
    whole prompt at the first step, then one token per step. ``kv_cache`` holds this rank's KV
    heads only (``heads_per_rank``); write the new tokens' K/V at their positions and attend
    over every position up to the last one.

    The model is Llama's pre-norm block (RMSNorm, attention with RoPE, residual add, RMSNorm,
    SwiGLU MLP ``down(silu(gate(x)) * up(x))``, residual add), then a final RMSNorm and the LM
    head. Every rank must return the same logits, equal (up to rounding) to one rank holding
    the whole model. Ranks talk only through ``all_reduce``: exactly two calls per layer per
    step, each on a full-width ``[tokens, hidden_size]`` tensor, made in the same order on every
    rank. With ``world_size`` 1 it is the plain model and makes no collective.
    """
    raise NotImplementedError("rank_forward: one rank's step of the tensor-parallel model")


# ------------------------------------------------------------------------- the memory, predicted


def weight_bytes_per_rank(tp1_weight_bytes: float, tp_size: int,
                          replicated_bytes: float = 0) -> float:
    """Weight bytes one rank holds at ``tp_size``, from the single-GPU total.

    ``replicated_bytes`` of the total are copied whole onto every rank (norms, biases...); the
    rest is split evenly. The course's capture: 2.48 GiB at TP = 1 -> 1.24 GiB per rank at
    TP = 2. Raises ``ValueError`` for ``tp_size < 1`` or ``replicated_bytes`` outside
    ``[0, tp1_weight_bytes]``.
    """
    raise NotImplementedError("weight_bytes_per_rank: one rank's share of the weights")


def kv_bytes_per_token_per_rank(shape: LlamaShape, dtype_bytes: int, tp_size: int) -> int:
    """Bytes of K and V that one token costs on one rank: every layer, this rank's KV heads.

    Example: opt-1.3b (24 layers, 32 heads of 64, fp16) at TP = 2 costs 98,304 bytes per token
    per rank. Raises ``ValueError`` as ``heads_per_rank`` does.
    """
    raise NotImplementedError("kv_bytes_per_token_per_rank: one token's K/V on one rank")


def kv_blocks_per_rank(kv_budget_bytes: int, kv_bytes_per_token: int, block_size: int) -> int:
    """Whole KV blocks of ``block_size`` tokens that fit in a rank's KV budget (rounded down).

    Raises ``ValueError`` when ``kv_bytes_per_token`` or ``block_size`` is not positive, or the
    budget is negative.
    """
    raise NotImplementedError("kv_blocks_per_rank: KV blocks that fit in one rank's budget")
