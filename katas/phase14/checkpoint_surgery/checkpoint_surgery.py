"""Kata 14-03 — checkpoint surgery: Hugging Face names to vLLM parameters, shards into fused
buffers, and one tensor-parallel rank's rows of them.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase14/checkpoint_surgery``.

Convention: every weight is in the checkpoint layout ``(out, in)`` (``y = x @ W.T``). A fused
weight stacks its shards along rows: ``qkv_proj`` is q's rows, then k's, then v's;
``gate_up_proj`` is gate's rows, then up's. ``STACKED_PARAMS`` (the table of
``(fused, checkpoint, shard id)`` triples) and ``LayerShapes`` are provided in ``scaffold.py``.
"""

from __future__ import annotations

import numpy as np

from katas.phase14.checkpoint_surgery.scaffold import STACKED_PARAMS, LayerShapes  # noqa: F401


def map_weight_name(name: str) -> tuple[str, str | int | None]:
    """The vLLM parameter a checkpoint tensor loads into, and its shard id.

    A tensor listed in ``STACKED_PARAMS`` maps to its fused parameter with the same path:
    ``"model.layers.3.self_attn.q_proj.weight"`` -> ``("model.layers.3.self_attn.qkv_proj.weight",
    "q")``; ``mlp.gate_proj`` / ``mlp.up_proj`` -> ``mlp.gate_up_proj`` with shard ids ``0`` /
    ``1``. Every other name (embeddings, norms, ``o_proj``, ``down_proj``, ``lm_head``, and a
    name that is already fused, such as ``...mlp.gate_up_proj.weight``) maps to itself with
    shard id ``None``.
    """
    raise NotImplementedError("map_weight_name: rename a checkpoint tensor to its vLLM parameter")


def qkv_slices(num_heads: int, num_kv_heads: int, head_dim: int) -> dict[str, slice]:
    """The rows of q, k and v inside a fused ``qkv_proj`` weight.

    Returns ``{"q": slice, "k": slice, "v": slice}`` (contiguous, step 1) in that order along the
    rows, tiling ``0 .. (num_heads + 2 * num_kv_heads) * head_dim`` with no gap and no overlap.
    q has ``num_heads`` heads, k and v ``num_kv_heads`` each (fewer under GQA). Example: 4
    heads, 1 KV head, head_dim 32 -> q 128 rows, k 32, v 32.

    ``ValueError`` when an argument is not a positive integer or ``num_heads`` is not a multiple
    of ``num_kv_heads``.
    """
    raise NotImplementedError("qkv_slices: where q, k and v sit in the fused rows")


def load_stacked(fused: np.ndarray, shard: np.ndarray, shard_id: str | int,
                 shapes: LayerShapes, tp_rank: int = 0, tp_size: int = 1) -> slice:
    """Copy a checkpoint shard into its slice of a fused buffer, in place; return that slice.

    ``shard`` is the whole checkpoint tensor (``q_proj``, ``k_proj``, ``v_proj``: shard ids
    ``"q"``, ``"k"``, ``"v"``; ``gate_proj``, ``up_proj``: ``0``, ``1``), shaped
    ``(rows, shapes.hidden_size)`` for the full model. ``fused`` is the buffer of rank
    ``tp_rank`` of ``tp_size`` (``tp_size = 1``: the whole fused weight): it stacks the rank's
    own rows of each shard in the usual order, so it has
    ``(heads_r + 2 * kv_heads_r) * head_dim`` rows for ``qkv_proj`` and
    ``2 * intermediate_size / tp_size`` for ``gate_up_proj``.

    Which rows a rank owns is the column-parallel split of kata 10-01 (your ``qkv_shards`` /
    ``column_shards`` there; import them or copy them): ``num_heads / tp_size`` whole query
    heads; an equal share of the KV heads, or, when there are fewer KV heads than ranks, one KV
    head replicated on ``tp_size / num_kv_heads`` consecutive ranks; ``intermediate_size /
    tp_size`` rows of gate and of up. Rows of other ranks are not written.

    Returns the slice of ``fused``'s rows that was filled (e.g. ``slice(48, 96)`` for up with
    intermediate size 48, one rank).

    ``ValueError`` — before anything is written — when the shard id is unknown, ``tp_rank`` is
    not in ``0 .. tp_size - 1``, the heads, the KV heads or the intermediate size do not split
    over ``tp_size``, or the shard or the buffer does not have the shape this config needs;
    the shape message names the shape found and the shape expected.
    """
    raise NotImplementedError("load_stacked: copy a shard into its slice of the fused buffer")
