"""Kata 10-01 — tensor parallelism math: shard a layer, prove it, then shard a real model.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase10/tp_sharding_math``.

Convention throughout: a linear layer is ``y = x @ W.T`` with ``W`` of shape ``(out, in)`` (the
checkpoint layout). ``num_ranks`` GPUs are simulated in one process: rank ``r`` is one iteration
of a loop, and the collectives are the two methods of mini_vllm's ``TensorParallelGroup``
(``group.all_gather(parts, axis)`` concatenates the ranks' tensors in rank order,
``group.all_reduce(partials)`` sums them; both take a list with one tensor per rank, and the
group counts every call). A function given ``group=None`` makes its own
``TensorParallelGroup(num_ranks)``; given one, it must use it, and ``ValueError`` if its
``world_size`` is not ``num_ranks``.

Anything that does not split evenly is a ``ValueError`` naming what does not divide: never a
ragged or truncated shard. So is ``num_ranks < 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mini_vllm.distributed.parallel_state import TensorParallelGroup


def column_shards(W: np.ndarray, num_ranks: int) -> list[np.ndarray]:
    """The per-rank weights of a column-parallel layer (upstream ``ColumnParallelLinear``).

    ``W`` is ``(out, in)``. Returns ``num_ranks`` arrays, rank ``r``'s at index ``r``, each
    ``(out / num_ranks, in)``: rank ``r`` produces output features
    ``r * out/num_ranks .. (r + 1) * out/num_ranks - 1`` and nothing else. ``ValueError`` when
    ``out`` is not divisible by ``num_ranks``.
    """
    raise NotImplementedError("column_shards: split a weight for column parallelism")


def row_shards(W: np.ndarray, num_ranks: int) -> list[np.ndarray]:
    """The per-rank weights of a row-parallel layer (upstream ``RowParallelLinear``).

    ``W`` is ``(out, in)``. Returns ``num_ranks`` arrays, each ``(out, in / num_ranks)``: rank
    ``r`` reads input features ``r * in/num_ranks .. (r + 1) * in/num_ranks - 1`` and produces a
    partial sum of every output feature. ``ValueError`` when ``in`` is not divisible.
    """
    raise NotImplementedError("row_shards: split a weight for row parallelism")


def column_parallel(x: np.ndarray, W: np.ndarray, num_ranks: int,
                    bias: np.ndarray | None = None, *,
                    group: TensorParallelGroup | None = None) -> np.ndarray:
    """``x @ W.T (+ bias)`` computed column-parallel: ``(batch, in)`` -> ``(batch, out)``.

    Every rank sees all of ``x`` and computes its own output columns with its shard (and its
    slice of ``bias``, shape ``(out,)``, when given); one all-gather through ``group`` assembles
    the result, and no all-reduce happens. Equal to the dense product to float64 rounding, for
    every ``num_ranks`` that divides ``out``.
    """
    raise NotImplementedError("column_parallel: each rank its output columns, then gather")


def row_parallel(x: np.ndarray, W: np.ndarray, num_ranks: int,
                 bias: np.ndarray | None = None, *,
                 group: TensorParallelGroup | None = None) -> np.ndarray:
    """``x @ W.T (+ bias)`` computed row-parallel: ``(batch, in)`` -> ``(batch, out)``.

    Rank ``r`` gets only its slice of ``x``'s features (the ones its shard reads) and produces a
    full-shape partial; one all-reduce through ``group`` sums the partials, and no all-gather
    happens. ``bias`` (``(out,)``) ends up in the result exactly once, as upstream's
    ``RowParallelLinear`` (it adds it on rank 0 only). Equal to the dense product to float64
    rounding.
    """
    raise NotImplementedError("row_parallel: each rank a partial from its inputs, then reduce")


def mlp_tp(x: np.ndarray, W1: np.ndarray, W2: np.ndarray, num_ranks: int, *,
           activation: Callable[[np.ndarray], np.ndarray] | None = None,
           group: TensorParallelGroup | None = None) -> tuple[np.ndarray, int]:
    """A two-layer MLP, tensor-parallel the Megatron way; returns ``(y, num_all_reduces)``.

    ``W1`` is ``(hidden, in)``, ``W2`` is ``(out, hidden)``; ``y`` equals the dense
    ``activation(x @ W1.T) @ W2.T`` (``activation`` is element-wise, ReLU when ``None``).
    The hidden activation is never assembled on any rank: exactly one all-reduce and no
    all-gather go through ``group``, and ``num_all_reduces`` is the number of all-reduces this
    call ran. ``ValueError`` when ``hidden`` is not divisible by ``num_ranks``.
    """
    raise NotImplementedError("mlp_tp: an MLP with one collective")


def qkv_shards(Wq: np.ndarray, Wk: np.ndarray, Wv: np.ndarray, num_heads: int,
               num_kv_heads: int, num_ranks: int
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per rank ``(Wq_r, Wk_r, Wv_r)``: the attention projections split on head boundaries
    (upstream ``QKVParallelLinear``).

    ``Wq`` is ``(num_heads * head_dim, hidden)``, ``Wk`` and ``Wv`` ``(num_kv_heads * head_dim,
    hidden)``; heads are consecutive ``head_dim``-row blocks. Rank ``r`` gets whole query heads,
    ``num_heads / num_ranks`` consecutive ones in rank order, and the KV heads those query heads
    read under grouped-query attention (query head ``h`` reads KV head
    ``h // (num_heads / num_kv_heads)``):

    * ``num_ranks <= num_kv_heads``: ``num_kv_heads / num_ranks`` consecutive KV heads each;
    * ``num_ranks > num_kv_heads``: a KV head cannot be cut, so each rank gets one whole KV head
      and each KV head is replicated on ``num_ranks / num_kv_heads`` ranks.

    ``ValueError`` when the query heads do not split evenly, or the KV heads neither split nor
    replicate evenly.
    """
    raise NotImplementedError("qkv_shards: split attention by heads")


def rank_layer_shapes(*, hidden_size: int, intermediate_size: int, num_heads: int,
                      num_kv_heads: int, head_dim: int, num_ranks: int
                      ) -> dict[str, tuple[int, int]]:
    """The ``(out, in)`` shape of each weight one rank holds for one Llama decoder layer.

    Keys: ``"q_proj"``, ``"k_proj"``, ``"v_proj"``, ``"o_proj"``, ``"gate_proj"``,
    ``"up_proj"``, ``"down_proj"``, split as ``qkv_shards`` (attention: q/k/v by heads) and the
    MLP (gate/up column-parallel, down row-parallel) and ``o_proj`` (row-parallel) would split
    them. ``ValueError`` for anything that does not split: e.g. 32 heads at ``num_ranks=6``.
    """
    raise NotImplementedError("rank_layer_shapes: what one rank holds of a layer")


def kv_cache_bytes_per_token(*, num_layers: int, num_kv_heads: int, head_dim: int,
                             dtype_bytes: int, num_ranks: int) -> int:
    """Bytes of K and V one token occupies in one rank's KV cache (every layer).

    A rank caches only the KV heads it holds (a replicated head costs each replica its own
    copy). Llama-3-8B in bf16 (32 layers, 8 KV heads of 128): 131072 bytes per token at
    ``num_ranks=1``. ``ValueError`` when the KV heads neither split nor replicate evenly.
    """
    raise NotImplementedError("kv_cache_bytes_per_token: one rank's K/V bytes per token")
