"""Reference for kata 14-03 — checkpoint surgery: Hugging Face names to vLLM parameters, shards
into fused buffers, optionally one tensor-parallel rank's rows of them.

Convention: weights are in the checkpoint layout ``(out, in)``; a fused weight stacks its shards
along rows (``y = x @ W.T``, so stacking rows concatenates outputs).
"""

from __future__ import annotations

import numpy as np

from katas.phase14.checkpoint_surgery.scaffold import STACKED_PARAMS, LayerShapes

QKV_IDS = ("q", "k", "v")
GATE_UP_IDS = (0, 1)


def map_weight_name(name: str) -> tuple[str, str | int | None]:
    """The vLLM parameter a checkpoint tensor loads into, and its shard id (``None``: unfused)."""
    for param_name, weight_name, shard_id in STACKED_PARAMS:
        if weight_name in name:
            return name.replace(weight_name, param_name), shard_id
    return name, None


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def qkv_slices(num_heads: int, num_kv_heads: int, head_dim: int) -> dict[str, slice]:
    """Rows of q, k and v inside a fused ``qkv_proj`` weight: q, then k, then v."""
    num_heads = _positive(num_heads, "num_heads")
    num_kv_heads = _positive(num_kv_heads, "num_kv_heads")
    head_dim = _positive(head_dim, "head_dim")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads}): each KV head serves a whole group of query heads")
    q = num_heads * head_dim
    kv = num_kv_heads * head_dim
    return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}


def _split(total: int, tp_size: int, what: str) -> int:
    if total % tp_size:
        raise ValueError(f"{what} ({total}) does not split over tp_size {tp_size}")
    return total // tp_size


def _kv_heads_of_rank(num_kv_heads: int, tp_size: int, tp_rank: int) -> range:
    """The KV heads rank ``tp_rank`` holds: an equal share, or one replicated head when there
    are fewer KV heads than ranks (``tp_size / num_kv_heads`` ranks share each head)."""
    if tp_size <= num_kv_heads:
        per_rank = _split(num_kv_heads, tp_size, "num_kv_heads")
        return range(tp_rank * per_rank, (tp_rank + 1) * per_rank)
    if tp_size % num_kv_heads:
        raise ValueError(f"tp_size {tp_size} exceeds num_kv_heads ({num_kv_heads}) but is not "
                         f"a multiple of it: the KV heads cannot be replicated evenly")
    head = tp_rank // (tp_size // num_kv_heads)
    return range(head, head + 1)


def load_stacked(fused: np.ndarray, shard: np.ndarray, shard_id: str | int,
                 shapes: LayerShapes, tp_rank: int = 0, tp_size: int = 1) -> slice:
    """Copy rank ``tp_rank``'s rows of the checkpoint tensor ``shard`` into their slice of the
    rank's fused buffer ``fused``; return that slice."""
    tp_size = _positive(tp_size, "tp_size")
    if isinstance(tp_rank, bool) or not isinstance(tp_rank, int | np.integer) \
            or not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank must be in 0 .. {tp_size - 1}, got {tp_rank!r}")
    hidden = shapes.hidden_size
    if shard_id in QKV_IDS:
        hd = shapes.head_dim
        heads = _split(shapes.num_heads, tp_size, "num_heads")
        kv_heads = _kv_heads_of_rank(shapes.num_kv_heads, tp_size, tp_rank)
        dest = qkv_slices(heads, len(kv_heads), hd)[shard_id]
        rank_rows = (heads + 2 * len(kv_heads)) * hd
        if shard_id == "q":
            total = shapes.num_heads * hd
            src = slice(tp_rank * heads * hd, (tp_rank + 1) * heads * hd)
        else:
            total = shapes.num_kv_heads * hd
            src = slice(kv_heads.start * hd, kv_heads.stop * hd)
    elif shard_id in GATE_UP_IDS and not isinstance(shard_id, bool):
        per_rank = _split(shapes.intermediate_size, tp_size, "intermediate_size")
        dest = slice(shard_id * per_rank, (shard_id + 1) * per_rank)
        rank_rows = 2 * per_rank
        total = shapes.intermediate_size
        src = slice(tp_rank * per_rank, (tp_rank + 1) * per_rank)
    else:
        raise ValueError(f"unknown shard id {shard_id!r}: expected 'q', 'k', 'v' (qkv_proj) "
                         f"or 0, 1 (gate_up_proj)")

    expected = (total, hidden)
    if tuple(np.shape(shard)) != expected:
        raise ValueError(f"shard {shard_id!r}: the checkpoint tensor has shape "
                         f"{tuple(np.shape(shard))} but this config needs {expected}")
    expected_fused = (rank_rows, hidden)
    if tuple(np.shape(fused)) != expected_fused:
        raise ValueError(f"shard {shard_id!r}: the fused buffer has shape "
                         f"{tuple(np.shape(fused))} but rank {tp_rank} of {tp_size} needs "
                         f"{expected_fused}")
    fused[dest] = shard[src]
    return dest
