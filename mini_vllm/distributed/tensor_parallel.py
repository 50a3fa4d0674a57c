"""Tensor parallelism for a loaded Llama: shard its weights rank by rank, run every rank's
partial forward, all-reduce after each row-parallel layer.

Upstream twins (vLLM v0.22.1): ``vllm/model_executor/layers/linear.py``
(``ColumnParallelLinear``, ``MergedColumnParallelLinear``, ``QKVParallelLinear``,
``RowParallelLinear``), ``vllm/model_executor/models/llama.py`` (``LlamaAttention``: ``num_heads =
total_num_heads // tp_size``; KV heads split when there are at least as many as ranks, else
replicated, ``tp_size % total_num_kv_heads == 0``), ``vllm/model_executor/layers/
vocab_parallel_embedding.py`` (``ParallelLMHead``) and ``vllm/v1/executor/multiproc_executor.py``
(one worker per rank, in lockstep).

What each weight becomes on rank ``r`` of ``tp`` (weights in checkpoint layout ``(out, in)``):

=====================  ===================  ==============================================
weight                 parallel style        rank r holds
=====================  ===================  ==============================================
q_proj                 column (by heads)    query heads ``r * H/tp .. (r+1) * H/tp - 1``
k_proj, v_proj         column (by heads)    KV heads ``r * K/tp ..`` when ``tp <= K``; else
                                            one head, ``r // (tp / K)``, replicated
o_proj                 row                  the input columns of its query heads
gate_proj, up_proj     column               ``intermediate / tp`` rows each (fused per rank)
down_proj              row                  the matching ``intermediate / tp`` columns
lm_head                column (vocab)       ``ceil(V / tp)`` vocab rows (zero-padded)
embed_tokens, norms    replicated           everything
=====================  ===================  ==============================================

Decisions, where upstream does more:

* **The embedding is replicated**: every rank holds the whole table and looks its tokens up
  without talking to anyone. Upstream's ``VocabParallelEmbedding`` shards it on the vocabulary
  and pays one extra all-reduce per forward (each rank zeroes the ids it does not hold). Kept
  replicated here so that a forward costs exactly two all-reduces per layer, the count the
  course reasons with.
* **The LM head is vocab-parallel**: rank ``r`` scores its slice of the vocabulary and
  ``compute_logits`` all-gathers the slices (upstream: ``ParallelLMHead`` +
  ``LogitsProcessor._gather_logits``). The vocabulary is padded with zero rows up to a multiple of
  ``tp`` (upstream pads to a multiple of 64 first) and the padding is cut after the gather.
* **Replicated work runs once.** After an all-reduce every rank holds the same activations, so the
  embedding lookup, the norms and the residual adds give every rank the same numbers; the
  simulation computes them once instead of ``tp`` times. Only the sharded matmuls (and attention,
  per rank over its own heads) run per rank.
* **The KV cache**: rank ``r`` caches only its own KV heads (a replicated head is cached by each
  of its replicas, as upstream). The model runner allocates one cache per layer; the wrapper
  reports ``num_kv_heads = tp * kv_heads_per_rank`` so that cache holds every rank's heads side
  by side, and rank ``r`` reads and writes its own slice (a view) of it.

The injection point for kata 10-01: ``shard_model(model, tp, column_shards=...,
row_shards=..., qkv_shards=...)`` builds the ranks with a learner's sharding functions (same
signatures as the defaults below) and checks what they return before running anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mini_vllm.attention import AttentionMetadata
from mini_vllm.distributed.parallel_state import TensorParallelGroup, divide
from mini_vllm.models.llama import LlamaAttention, LlamaForCausalLM, LlamaMLP, RMSNorm

ShardFn = Callable[[np.ndarray, int], Sequence[np.ndarray]]
QKVShardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int, int],
                      Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]]


# -- the sharding rules (checkpoint layout: a weight is (out, in), y = x @ W.T) ---------------

def column_shards(weight: np.ndarray, tp: int) -> list[np.ndarray]:
    """Column-parallel: rank ``r`` gets output rows ``r * out/tp .. (r+1) * out/tp - 1``."""
    chunk = divide(weight.shape[0], tp, "the output dimension of a column-parallel weight")
    return [weight[r * chunk:(r + 1) * chunk] for r in range(tp)]


def row_shards(weight: np.ndarray, tp: int) -> list[np.ndarray]:
    """Row-parallel: rank ``r`` gets input columns ``r * in/tp .. (r+1) * in/tp - 1``."""
    chunk = divide(weight.shape[1], tp, "the input dimension of a row-parallel weight")
    return [weight[:, r * chunk:(r + 1) * chunk] for r in range(tp)]


def kv_heads_of_rank(num_kv_heads: int, tp: int, rank: int) -> range:
    """The global KV heads rank ``rank`` holds: a contiguous share when ``tp <= num_kv_heads``,
    else the one head it replicates (``tp / num_kv_heads`` ranks per head)."""
    if tp <= num_kv_heads:
        per_rank = divide(num_kv_heads, tp, "num_key_value_heads")
        return range(rank * per_rank, (rank + 1) * per_rank)
    if tp % num_kv_heads:
        raise ValueError(f"tensor-parallel size {tp} exceeds num_key_value_heads "
                         f"({num_kv_heads}) but is not a multiple of it: the KV heads cannot "
                         f"be replicated evenly")
    head = rank // (tp // num_kv_heads)
    return range(head, head + 1)


def qkv_shards(wq: np.ndarray, wk: np.ndarray, wv: np.ndarray, num_heads: int,
               num_kv_heads: int, tp: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per rank ``(wq_r, wk_r, wv_r)``: its whole query heads and its (maybe replicated) KV heads.

    ``ValueError`` when ``num_heads`` does not split by ``tp``, or the KV heads neither split by
    ``tp`` nor replicate evenly over it.
    """
    heads = divide(num_heads, tp, "num_attention_heads")
    head_dim = divide(wq.shape[0], num_heads, "the query projection's output dimension")
    out = []
    for r in range(tp):
        kv = kv_heads_of_rank(num_kv_heads, tp, r)
        kv_rows = slice(kv.start * head_dim, kv.stop * head_dim)
        out.append((wq[r * heads * head_dim:(r + 1) * heads * head_dim], wk[kv_rows],
                    wv[kv_rows]))
    return out


# -- the sharded model --------------------------------------------------------------------------

@dataclass
class RankShard:
    """What one rank holds: per layer its attention (its heads) and MLP (its slice), its vocab
    slice of the LM head. Replicated weights live on the wrapper."""

    rank: int
    attn: list[LlamaAttention] = field(default_factory=list)
    mlp: list[LlamaMLP] = field(default_factory=list)
    lm_head: np.ndarray | None = None

    def parameters(self) -> dict[str, np.ndarray]:
        """This rank's sharded weights, in mini_vllm's ``[in, out]`` layout."""
        params: dict[str, np.ndarray] = {}
        for i, (attn, mlp) in enumerate(zip(self.attn, self.mlp, strict=True)):
            p = f"model.layers.{i}."
            params[p + "self_attn.qkv_proj.weight"] = attn.qkv_proj
            params[p + "self_attn.o_proj.weight"] = attn.o_proj
            params[p + "mlp.gate_up_proj.weight"] = mlp.gate_up_proj
            params[p + "mlp.down_proj.weight"] = mlp.down_proj
        if self.lm_head is not None:
            params["lm_head.weight"] = self.lm_head
        return params


class TensorParallelLlama:
    """A Llama split over ``tp`` in-process ranks, with the interface the engine calls
    (``forward``, ``compute_logits``, ``num_layers``, ``num_kv_heads``, ``head_dim``, ``dtype``,
    ``max_model_len``, ``vocab_size``): ``LLMEngine(model=shard_model(model, tp))``.

    ``group`` counts the collectives: ``2 * num_layers`` all-reduces per ``forward`` (after
    ``o_proj`` and after ``down_proj``) and one all-gather per ``compute_logits``.
    """

    def __init__(self, model: LlamaForCausalLM, tp: int, *, column_shards: ShardFn,
                 row_shards: ShardFn, qkv_shards: QKVShardFn) -> None:
        if not isinstance(model, LlamaForCausalLM) or not all(
                type(layer.mlp) is LlamaMLP for layer in model.model.layers):
            raise ValueError(f"shard_model shards a dense mini_vllm Llama "
                             f"(LlamaForCausalLM), got {type(model).__name__}")
        self.group = TensorParallelGroup(tp)
        self.tp_size = tp
        self.config = model.config
        self.dtype = model.dtype
        self.num_layers = model.num_layers
        self.head_dim = model.head_dim
        self.hidden_size = model.hidden_size
        self.vocab_size = model.vocab_size
        self.max_model_len = model.max_model_len
        self.tie_word_embeddings = model.tie_word_embeddings

        first = model.model.layers[0].self_attn
        num_heads, total_kv = first.num_heads, first.num_kv_heads
        # Refuse what cannot be split before calling anybody's sharding function.
        self.num_heads_per_rank = divide(num_heads, tp, "num_attention_heads")
        self.num_kv_heads_per_rank = len(kv_heads_of_rank(total_kv, tp, 0))
        intermediate = model.model.layers[0].mlp.intermediate_size
        inter_per_rank = divide(intermediate, tp, "intermediate_size")
        #: KV heads the model runner allocates per layer: every rank's, side by side.
        self.num_kv_heads = tp * self.num_kv_heads_per_rank

        # Replicated: the embedding and the norms (copies: each rank owns its own).
        self.embed_tokens = model.model.embed_tokens.copy()
        self.norms = [(_copy_norm(layer.input_layernorm),
                       _copy_norm(layer.post_attention_layernorm))
                      for layer in model.model.layers]
        self.norm = _copy_norm(model.model.norm)

        self.ranks = [RankShard(r) for r in range(tp)]
        hd = self.head_dim
        q_rows = self.num_heads_per_rank * hd
        kv_rows = self.num_kv_heads_per_rank * hd
        hidden = self.hidden_size
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            w_qkv = attn.qkv_proj.T  # (q + 2 kv, hidden): checkpoint layout
            wq, wk, wv = (w_qkv[:attn.q_size], w_qkv[attn.q_size:attn.q_size + attn.kv_size],
                          w_qkv[attn.q_size + attn.kv_size:])
            qkv = _checked_qkv(qkv_shards(wq, wk, wv, num_heads, total_kv, tp), tp,
                               (q_rows, hidden), (kv_rows, hidden))
            o = _checked(row_shards(attn.o_proj.T, tp), tp, (hidden, q_rows),
                         "row_shards", "o_proj")
            w_gate_up = mlp.gate_up_proj.T  # (2 * intermediate, hidden)
            gate = _checked(column_shards(w_gate_up[:intermediate], tp), tp,
                            (inter_per_rank, hidden), "column_shards", "gate_proj")
            up = _checked(column_shards(w_gate_up[intermediate:], tp), tp,
                          (inter_per_rank, hidden), "column_shards", "up_proj")
            down = _checked(row_shards(mlp.down_proj.T, tp), tp, (hidden, inter_per_rank),
                            "row_shards", "down_proj")
            for r, rank in enumerate(self.ranks):
                a = LlamaAttention(hidden, self.num_heads_per_rank, self.num_kv_heads_per_rank,
                                   hd, attn.rotary_emb, self.dtype)
                a.qkv_proj = _own_columns(qkv[r], self.dtype)
                a.o_proj = _own(o[r].T, self.dtype)
                m = LlamaMLP(hidden, inter_per_rank, self.dtype)
                m.gate_up_proj = _own_columns((gate[r], up[r]), self.dtype)
                m.down_proj = _own(down[r].T, self.dtype)
                rank.attn.append(a)
                rank.mlp.append(m)

        # The LM head, vocab-parallel: pad the vocabulary to a multiple of tp with zero rows.
        padded = -(-self.vocab_size // tp) * tp
        w_head = model.lm_head.T
        if padded != self.vocab_size:
            w_head = np.zeros((padded, hidden), self.dtype)
            w_head[:self.vocab_size] = model.lm_head.T
        heads = _checked(column_shards(w_head, tp), tp, (padded // tp, hidden),
                         "column_shards", "lm_head (vocab-parallel)")
        for r, rank in enumerate(self.ranks):
            rank.lm_head = _own(heads[r].T, self.dtype)

    # -- the engine's interface -----------------------------------------------------------------

    def forward(self, input_ids: np.ndarray, positions: np.ndarray,
                kv_caches: list[tuple[np.ndarray, np.ndarray]],
                attn_metadata: AttentionMetadata) -> np.ndarray:
        """``[num_tokens]`` ids and positions -> ``[num_tokens, hidden_size]`` hidden states, the
        same on every rank (the last all-reduce gave them all the sum)."""
        if positions.size and int(positions.max()) >= self.max_model_len:
            raise ValueError(f"position {int(positions.max())} is past the model's "
                             f"max_position_embeddings ({self.max_model_len})")
        if len(kv_caches) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} KV caches, got {len(kv_caches)}")
        hidden = self.embed_tokens[input_ids]  # replicated: no communication
        residual = None
        for i, (input_norm, post_norm) in enumerate(self.norms):
            if residual is None:
                residual = hidden
                hidden = input_norm(hidden)
            else:
                hidden, residual = input_norm(hidden, residual)
            caches = [self._rank_cache(kv_caches[i], r) for r in self.group.ranks]
            # Column-parallel QKV, attention over the rank's heads, row-parallel o_proj: each
            # rank holds a full-shape partial sum; one all-reduce completes it.
            hidden = self.group.all_reduce([
                rank.attn[i](positions, hidden, caches[r], attn_metadata)
                for r, rank in enumerate(self.ranks)])
            hidden, residual = post_norm(hidden, residual)
            # Column-parallel gate/up, SiLU*mul on the rank's slice, row-parallel down_proj.
            hidden = self.group.all_reduce([rank.mlp[i](hidden) for rank in self.ranks])
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden_states: np.ndarray) -> np.ndarray:
        """``[rows, hidden_size]`` -> ``[rows, vocab_size]``: each rank scores its vocab slice,
        one all-gather joins them, the padding is cut."""
        parts = [hidden_states @ rank.lm_head for rank in self.ranks]
        return np.ascontiguousarray(self.group.all_gather(parts, axis=-1)[:, :self.vocab_size])

    # -- bookkeeping -------------------------------------------------------------------------------

    def _rank_cache(self, kv_cache: tuple[np.ndarray, np.ndarray], rank: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        key_cache, value_cache = kv_cache
        if key_cache.shape[2] != self.num_kv_heads:
            raise ValueError(f"the KV cache holds {key_cache.shape[2]} heads per slot; this "
                             f"model needs {self.num_kv_heads} ({self.tp_size} ranks x "
                             f"{self.num_kv_heads_per_rank})")
        heads = slice(rank * self.num_kv_heads_per_rank, (rank + 1) * self.num_kv_heads_per_rank)
        # A view: the rank's writes land in the runner's cache.
        return key_cache[:, :, heads], value_cache[:, :, heads]

    def rank_parameters(self, rank: int) -> dict[str, np.ndarray]:
        """Everything rank ``rank`` holds: its shards and the replicated weights."""
        params = {"model.embed_tokens.weight": self.embed_tokens,
                  "model.norm.weight": self.norm.weight}
        for i, (a, b) in enumerate(self.norms):
            params[f"model.layers.{i}.input_layernorm.weight"] = a.weight
            params[f"model.layers.{i}.post_attention_layernorm.weight"] = b.weight
        params.update(self.ranks[rank].parameters())
        return params

    def __repr__(self) -> str:
        return (f"TensorParallelLlama(tp={self.tp_size}, heads/rank={self.num_heads_per_rank}, "
                f"kv_heads/rank={self.num_kv_heads_per_rank}, {self.group!r})")


def shard_model(model: LlamaForCausalLM, tp: int, *, column_shards: ShardFn = column_shards,
                row_shards: ShardFn = row_shards,
                qkv_shards: QKVShardFn = qkv_shards) -> TensorParallelLlama:
    """Split a loaded mini_vllm Llama over ``tp`` in-process ranks.

    The three sharding functions default to this module's; a kata passes a learner's (same
    signatures; weights in checkpoint layout ``(out, in)``). What they return is checked (one
    shard per rank, the shape each rank needs) and copied, so each rank owns its arrays and the
    source model is left untouched. ``ValueError`` when a dimension does not split by ``tp``
    (heads, KV heads, intermediate size) or a sharding function returns the wrong shards.
    """
    if isinstance(tp, bool) or not isinstance(tp, int | np.integer) or tp < 1:
        raise ValueError(f"tensor-parallel size must be an integer >= 1, got {tp!r}")
    return TensorParallelLlama(model, int(tp), column_shards=column_shards,
                               row_shards=row_shards, qkv_shards=qkv_shards)


# -- helpers -----------------------------------------------------------------------------------

def _own(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.array(array, dtype=dtype, order="C", copy=True)


def _own_columns(shards: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """``(out_i, in)`` shards -> one fresh ``[in, sum(out_i)]`` array (mini_vllm's layout)."""
    return np.concatenate([np.asarray(w, dtype=dtype).T for w in shards], axis=1)


def _copy_norm(norm: RMSNorm) -> RMSNorm:
    out = RMSNorm(len(norm.weight), norm.eps, norm.weight.dtype)
    out.weight[...] = norm.weight
    return out


def _checked(shards: Any, tp: int, shape: tuple[int, int], fn: str, what: str
             ) -> list[np.ndarray]:
    shards = list(shards) if shards is not None else []
    shapes = [tuple(np.shape(s)) for s in shards]
    if len(shards) != tp or any(s != shape for s in shapes):
        raise ValueError(f"{fn} for {what} at tp={tp}: expected {tp} shards of shape {shape} "
                         f"(checkpoint layout (out, in)), got shapes {shapes}")
    return [np.asarray(s) for s in shards]


def _checked_qkv(shards: Any, tp: int, q_shape: tuple[int, int], kv_shape: tuple[int, int]
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    shards = list(shards) if shards is not None else []
    expected = (q_shape, kv_shape, kv_shape)
    got = [tuple(tuple(np.shape(w)) for w in s) for s in shards]
    if len(shards) != tp or any(g != expected for g in got):
        raise ValueError(f"qkv_shards at tp={tp}: expected {tp} (wq, wk, wv) triples of shapes "
                         f"{expected}, got {got}")
    return [tuple(np.asarray(w) for w in s) for s in shards]  # type: ignore[misc]
