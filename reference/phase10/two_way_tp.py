"""Kata 10-02 reference: a rank's share of a tensor-parallel Llama, and the memory it predicts.

Weights are Hugging Face's ``[out_features, in_features]``: column-parallel layers (q/k/v,
gate/up) keep a block of rows, row-parallel layers (o_proj, down_proj) the matching block of
columns. The embedding, the norms and the LM head are replicated here (vLLM splits the embedding
and the head over the vocabulary; see the README).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F

from katas.phase10.two_way_tp.scaffold import KVCache, LlamaShape, apply_rope, attend, rms_norm

_COLUMN_PARALLEL = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
_ROW_PARALLEL = {"o_proj", "down_proj"}


def heads_per_rank(shape: LlamaShape, world_size: int) -> tuple[int, int]:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if shape.num_heads % world_size:
        raise ValueError(f"num_heads = {shape.num_heads} does not split over {world_size} ranks")
    if shape.num_kv_heads >= world_size:
        if shape.num_kv_heads % world_size:
            raise ValueError(f"num_kv_heads = {shape.num_kv_heads} does not split over "
                             f"{world_size} ranks")
        kv_heads = shape.num_kv_heads // world_size
    else:
        # More ranks than KV heads: each KV head is copied onto world_size / num_kv_heads ranks
        # (upstream's QKVParallelLinear does the same), one per rank.
        if world_size % shape.num_kv_heads:
            raise ValueError(f"{world_size} ranks cannot share {shape.num_kv_heads} KV heads "
                             f"evenly (world_size must be a multiple of num_kv_heads)")
        kv_heads = 1
    return shape.num_heads // world_size, kv_heads


def shard_weights(weights: Mapping[str, torch.Tensor], shape: LlamaShape, rank: int,
                  world_size: int) -> dict[str, torch.Tensor]:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    q_heads, kv_heads = heads_per_rank(shape, world_size)
    if shape.intermediate_size % world_size:
        raise ValueError(f"intermediate_size = {shape.intermediate_size} does not split over "
                         f"{world_size} ranks")
    d = shape.head_dim
    q_rows = slice(rank * q_heads * d, (rank + 1) * q_heads * d)
    # The KV head(s) that this rank's query heads read: h // group for its first query head.
    first_kv = rank * q_heads // (shape.num_heads // shape.num_kv_heads)
    kv_rows = slice(first_kv * d, (first_kv + kv_heads) * d)
    width = shape.intermediate_size // world_size
    mlp_rows = slice(rank * width, (rank + 1) * width)
    shard: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        module = name.split(".")[-2]
        if module == "q_proj":
            weight = weight[q_rows]
        elif module in ("k_proj", "v_proj"):
            weight = weight[kv_rows]
        elif module in ("gate_proj", "up_proj"):
            weight = weight[mlp_rows]
        elif module == "o_proj":
            weight = weight[:, q_rows]
        elif module == "down_proj":
            weight = weight[:, mlp_rows]
        # Anything else (embedding, norms, LM head) is the same on every rank.
        shard[name] = weight.contiguous().clone()
    return shard


def all_reduce(x: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return x  # no group, no collective: what GroupCoordinator.all_reduce does at TP = 1
    dist.all_reduce(x)  # SUM, in place, on the default group
    return x


def rank_forward(shard: Mapping[str, torch.Tensor], shape: LlamaShape,
                 input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: KVCache,
                 world_size: int) -> torch.Tensor:
    q_heads, kv_heads = heads_per_rank(shape, world_size)
    tokens, d, eps = input_ids.shape[0], shape.head_dim, shape.rms_norm_eps
    end = int(positions[-1]) + 1
    hidden = shard["model.embed_tokens.weight"][input_ids]
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        x = rms_norm(hidden, shard[p + "input_layernorm.weight"], eps)
        # Column-parallel: this rank's heads only, no communication.
        q = (x @ shard[p + "self_attn.q_proj.weight"].T).view(tokens, q_heads, d)
        k = (x @ shard[p + "self_attn.k_proj.weight"].T).view(tokens, kv_heads, d)
        v = (x @ shard[p + "self_attn.v_proj.weight"].T).view(tokens, kv_heads, d)
        q = apply_rope(q, positions, shape.rope_theta)
        k = apply_rope(k, positions, shape.rope_theta)
        kv_cache.keys[i][positions] = k
        kv_cache.values[i][positions] = v
        attn = attend(q, kv_cache.keys[i][:end], kv_cache.values[i][:end], positions)
        # Row-parallel: a full-width partial sum; the reduce makes it the layer's output.
        attn_out = attn @ shard[p + "self_attn.o_proj.weight"].T
        hidden = hidden + all_reduce(attn_out, world_size)
        x = rms_norm(hidden, shard[p + "post_attention_layernorm.weight"], eps)
        gate = x @ shard[p + "mlp.gate_proj.weight"].T
        up = x @ shard[p + "mlp.up_proj.weight"].T
        mlp_out = (F.silu(gate) * up) @ shard[p + "mlp.down_proj.weight"].T
        hidden = hidden + all_reduce(mlp_out, world_size)
    hidden = rms_norm(hidden, shard["model.norm.weight"], eps)
    return hidden @ shard["lm_head.weight"].T


# ------------------------------------------------------------------------- the memory, predicted


def weight_bytes_per_rank(tp1_weight_bytes: float, tp_size: int,
                          replicated_bytes: float = 0) -> float:
    if tp_size < 1:
        raise ValueError(f"tp_size must be >= 1, got {tp_size}")
    if not 0 <= replicated_bytes <= tp1_weight_bytes:
        raise ValueError(f"replicated_bytes must be in [0, {tp1_weight_bytes}], "
                         f"got {replicated_bytes}")
    return replicated_bytes + (tp1_weight_bytes - replicated_bytes) / tp_size


def kv_bytes_per_token_per_rank(shape: LlamaShape, dtype_bytes: int, tp_size: int) -> int:
    _, kv_heads = heads_per_rank(shape, tp_size)
    return 2 * shape.num_layers * kv_heads * shape.head_dim * dtype_bytes


def kv_blocks_per_rank(kv_budget_bytes: int, kv_bytes_per_token: int, block_size: int) -> int:
    if kv_bytes_per_token <= 0 or block_size <= 0:
        raise ValueError(f"kv_bytes_per_token and block_size must be positive, got "
                         f"{kv_bytes_per_token} and {block_size}")
    if kv_budget_bytes < 0:
        raise ValueError(f"kv_budget_bytes must be >= 0, got {kv_budget_bytes}")
    return int(kv_budget_bytes // (kv_bytes_per_token * block_size))
