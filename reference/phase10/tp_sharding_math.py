"""Reference solution for kata 10-01 — tensor parallelism as algebra, then as a real model.

Convention throughout: a linear layer is ``y = x @ W.T`` with ``W`` of shape ``(out, in)``.
The loop over ranks is the simulation (each iteration is one GPU); the group's ``all_gather``
and ``all_reduce`` are the collectives, counted by the group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mini_vllm.distributed.parallel_state import TensorParallelGroup


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _check_ranks(num_ranks: int) -> int:
    if isinstance(num_ranks, bool) or not isinstance(num_ranks, int | np.integer) \
            or num_ranks < 1:
        raise ValueError(f"num_ranks must be an integer >= 1, got {num_ranks!r}")
    return int(num_ranks)


def _chunk(size: int, num_ranks: int, what: str) -> int:
    num_ranks = _check_ranks(num_ranks)
    if size % num_ranks:
        raise ValueError(f"{what} ({size}) is not divisible by num_ranks ({num_ranks})")
    return size // num_ranks


def _group(group: TensorParallelGroup | None, num_ranks: int) -> TensorParallelGroup:
    if group is None:
        return TensorParallelGroup(num_ranks)
    if group.world_size != num_ranks:
        raise ValueError(f"the group has {group.world_size} ranks but num_ranks is {num_ranks}")
    return group


# -- the two shardings ---------------------------------------------------------------------------

def column_shards(W: np.ndarray, num_ranks: int) -> list[np.ndarray]:
    chunk = _chunk(W.shape[0], num_ranks, "the output dimension (W's rows)")
    return [W[r * chunk:(r + 1) * chunk] for r in range(num_ranks)]


def row_shards(W: np.ndarray, num_ranks: int) -> list[np.ndarray]:
    chunk = _chunk(W.shape[1], num_ranks, "the input dimension (W's columns)")
    return [W[:, r * chunk:(r + 1) * chunk] for r in range(num_ranks)]


def column_parallel(x: np.ndarray, W: np.ndarray, num_ranks: int,
                    bias: np.ndarray | None = None, *,
                    group: TensorParallelGroup | None = None) -> np.ndarray:
    group = _group(group, num_ranks)
    shards = column_shards(W, num_ranks)
    biases = None if bias is None else column_shards(bias[:, None], num_ranks)
    outputs = []
    for r, W_r in enumerate(shards):  # rank r: its slice of the output columns
        y_r = x @ W_r.T
        if biases is not None:
            y_r = y_r + biases[r][:, 0]
        outputs.append(y_r)
    return group.all_gather(outputs, axis=-1)


def row_parallel(x: np.ndarray, W: np.ndarray, num_ranks: int,
                 bias: np.ndarray | None = None, *,
                 group: TensorParallelGroup | None = None) -> np.ndarray:
    group = _group(group, num_ranks)
    shards = row_shards(W, num_ranks)
    c = x.shape[-1] // num_ranks
    partials = []
    for r, W_r in enumerate(shards):  # rank r: its input slice, a full-shape partial
        y_r = x[..., r * c:(r + 1) * c] @ W_r.T
        if bias is not None and r == 0:
            y_r = y_r + bias  # once, on rank 0, as RowParallelLinear does
        partials.append(y_r)
    return group.all_reduce(partials)


def mlp_tp(x: np.ndarray, W1: np.ndarray, W2: np.ndarray, num_ranks: int, *,
           activation: Callable[[np.ndarray], np.ndarray] | None = None,
           group: TensorParallelGroup | None = None) -> tuple[np.ndarray, int]:
    group = _group(group, num_ranks)
    activation = activation or _relu
    _chunk(W1.shape[0], num_ranks, "the hidden dimension (W1's rows)")
    up = column_shards(W1, num_ranks)
    down = row_shards(W2, num_ranks)
    partials = []
    for W1_r, W2_r in zip(up, down, strict=True):
        h_r = activation(x @ W1_r.T)  # this rank's slice of the hidden activation
        partials.append(h_r @ W2_r.T)  # consumed where it lies: no gather
    before = group.num_all_reduces
    y = group.all_reduce(partials)
    return y, group.num_all_reduces - before


# -- attention: heads are the column boundary ---------------------------------------------------

def _kv_heads_of_rank(num_kv_heads: int, num_ranks: int, rank: int) -> range:
    if num_ranks <= num_kv_heads:
        per_rank = _chunk(num_kv_heads, num_ranks, "num_kv_heads")
        return range(rank * per_rank, (rank + 1) * per_rank)
    if num_ranks % num_kv_heads:
        raise ValueError(f"num_ranks ({num_ranks}) exceeds num_kv_heads ({num_kv_heads}) but is "
                         f"not a multiple of it: the KV heads cannot be replicated evenly")
    head = rank // (num_ranks // num_kv_heads)
    return range(head, head + 1)


def qkv_shards(Wq: np.ndarray, Wk: np.ndarray, Wv: np.ndarray, num_heads: int,
               num_kv_heads: int, num_ranks: int
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    heads = _chunk(num_heads, num_ranks, "num_heads")
    head_dim = Wq.shape[0] // num_heads
    shards = []
    for r in range(num_ranks):
        kv = _kv_heads_of_rank(num_kv_heads, num_ranks, r)
        q_rows = slice(r * heads * head_dim, (r + 1) * heads * head_dim)
        kv_rows = slice(kv.start * head_dim, kv.stop * head_dim)
        shards.append((Wq[q_rows], Wk[kv_rows], Wv[kv_rows]))
    return shards


# -- what one rank holds ---------------------------------------------------------------------------

def rank_layer_shapes(*, hidden_size: int, intermediate_size: int, num_heads: int,
                      num_kv_heads: int, head_dim: int, num_ranks: int
                      ) -> dict[str, tuple[int, int]]:
    heads = _chunk(num_heads, num_ranks, "num_heads")
    kv_heads = len(_kv_heads_of_rank(num_kv_heads, num_ranks, 0))
    inter = _chunk(intermediate_size, num_ranks, "intermediate_size")
    return {
        "q_proj": (heads * head_dim, hidden_size),
        "k_proj": (kv_heads * head_dim, hidden_size),
        "v_proj": (kv_heads * head_dim, hidden_size),
        "o_proj": (hidden_size, heads * head_dim),
        "gate_proj": (inter, hidden_size),
        "up_proj": (inter, hidden_size),
        "down_proj": (hidden_size, inter),
    }


def kv_cache_bytes_per_token(*, num_layers: int, num_kv_heads: int, head_dim: int,
                             dtype_bytes: int, num_ranks: int) -> int:
    _check_ranks(num_ranks)
    kv_heads = len(_kv_heads_of_rank(num_kv_heads, num_ranks, 0))
    return 2 * num_layers * kv_heads * head_dim * dtype_bytes
