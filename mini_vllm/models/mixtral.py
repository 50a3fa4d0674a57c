"""Mixtral in numpy: Llama's attention blocks with a sparse mixture-of-experts MLP.

Upstream twin: ``vllm/model_executor/models/mixtral.py`` (``MixtralForCausalLM``, ``MixtralModel``,
``MixtralDecoderLayer``, ``MixtralMoE``): per layer, ``router_logits = gate(x)`` and then
``experts(x, router_logits)``, the experts being one ``FusedMoE``
(``mini_vllm/layers/fused_moe.py``). Attention, RMSNorm, RoPE, the embedding and the LM head are
Llama's, imported from ``mini_vllm.models.llama``; so is weight loading for them.

Checkpoint names are Hugging Face's: ``model.layers.{i}.block_sparse_moe.gate.weight``
``[E, hidden]`` and ``...block_sparse_moe.experts.{e}.w1 / w3 / w2.weight`` (gate, up, down).
The experts are stored stacked as upstream's ``FusedMoE`` (``w13_weight``, ``w2_weight``, in
mini_vllm's ``[in, out]`` layout); ``named_parameters`` lists one view per expert,
``...experts.{e}.w13.weight`` (fused w1 | w3, in ``packed_modules_mapping``) and
``...experts.{e}.w2.weight``, so that the loader can tell which checkpoint tensors it needs.

The MoE can be driven by other code (kata 07-01): :meth:`MixtralForCausalLM.set_moe_impl`
installs a router ``route(x, W_gate, k) -> (topk_ids, topk_weights)`` (``W_gate`` is
``[E, hidden]``) and/or a grouped forward ``moe_forward(x, experts, topk_ids, topk_weights,
expert_fn=...) -> out`` (``experts``: one ``(w13, w2)`` pair per expert; ``expert_fn(x, w13, w2)``
runs one SwiGLU expert). Either left ``None`` keeps mini_vllm's own (``fused_topk`` /
``fused_experts``); ``set_moe_impl()`` restores both. The default is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from mini_vllm.layers.fused_moe import (
    FusedMoE,
    MoEForwardFn,
    RouteFn,
    check_routing,
    fused_topk,
    swiglu_expert,
)
from mini_vllm.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel


class MixtralMoE:
    """Router (``gate``, ``[hidden, E]``) plus the experts (:class:`FusedMoE`)."""

    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 dtype: np.dtype) -> None:
        self.gate = np.zeros((hidden_size, num_experts), dtype)
        self.experts = FusedMoE(num_experts, top_k, hidden_size, intermediate_size, dtype,
                                renormalize=True)
        self.route_fn: RouteFn | None = None
        self.moe_forward_fn: MoEForwardFn | None = None

    def __call__(self, hidden_states: np.ndarray) -> np.ndarray:
        experts = self.experts
        if self.route_fn is None:
            topk_weights, topk_ids = fused_topk(hidden_states @ self.gate, experts.top_k)
        else:
            topk_ids, topk_weights = check_routing(
                *self.route_fn(hidden_states, self.gate.T, experts.top_k),
                num_tokens=len(hidden_states), top_k=experts.top_k,
                num_experts=experts.num_experts)
        if self.moe_forward_fn is None:
            return experts.apply(hidden_states, topk_weights, topk_ids)
        out = np.asarray(self.moe_forward_fn(hidden_states, experts.experts(), topk_ids,
                                             topk_weights, expert_fn=swiglu_expert))
        if out.shape != hidden_states.shape:
            raise ValueError(f"the MoE forward must return {hidden_states.shape}, got {out.shape}")
        return out.astype(hidden_states.dtype, copy=False)


class MixtralDecoderLayer(LlamaDecoderLayer):
    """Llama's pre-norm block with the MLP replaced by :class:`MixtralMoE` (held as ``mlp``, named
    ``block_sparse_moe`` as in the checkpoint)."""

    def _make_mlp(self, config: dict, dtype: np.dtype) -> MixtralMoE:
        return MixtralMoE(config["num_local_experts"], config["num_experts_per_tok"],
                          config["hidden_size"], config["intermediate_size"], dtype)

    @property
    def block_sparse_moe(self) -> MixtralMoE:
        return self.mlp

    def _mlp_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        moe = self.block_sparse_moe
        yield f"{prefix}.block_sparse_moe.gate.weight", moe.gate
        for e in range(moe.experts.num_experts):
            yield f"{prefix}.block_sparse_moe.experts.{e}.w13.weight", moe.experts.w13_weight[e]
            yield f"{prefix}.block_sparse_moe.experts.{e}.w2.weight", moe.experts.w2_weight[e]


class MixtralModel(LlamaModel):
    """Embedding, the decoder layers, the final norm (Llama's, with MoE layers)."""

    layer_cls = MixtralDecoderLayer

    def __init__(self, config: dict, dtype: np.dtype) -> None:
        # Mixtral's config defaults, where they differ from Llama's.
        super().__init__({"rms_norm_eps": 1e-5, "max_position_embeddings": 4096, **config}, dtype)


class MixtralForCausalLM(LlamaForCausalLM):
    """The Mixtral language model: Llama's interface (``forward``, ``compute_logits``,
    ``load_weights``, ``named_parameters``) over :class:`MixtralModel`.

    ``config`` is a Hugging Face Mixtral ``config.json`` (``num_local_experts``,
    ``num_experts_per_tok``, ``intermediate_size`` per expert); ``dtype`` float32 or float64.
    """

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "w13": ["w1", "w3"],
    }
    model_cls = MixtralModel

    def _check_config(self, config: dict) -> None:
        for key in ("num_local_experts", "num_experts_per_tok"):
            if not isinstance(config.get(key), int) or config[key] < 1:
                raise ValueError(f"config needs a positive integer {key!r}, which a Mixtral needs")
        if config["num_experts_per_tok"] > config["num_local_experts"]:
            raise ValueError("num_experts_per_tok must not exceed num_local_experts")
        if config.get("sliding_window"):
            raise ValueError("sliding_window is not supported (full attention only)")

    def _mlp_shards(self) -> dict[str, dict]:
        return {}  # the experts' w1 / w3 are loaded by load_weights below

    @property
    def moe_layers(self) -> list[MixtralMoE]:
        return [layer.block_sparse_moe for layer in self.model.layers]

    def set_moe_impl(self, route: RouteFn | None = None,
                     moe_forward: MoEForwardFn | None = None) -> None:
        """Drive every MoE layer with ``route`` and/or ``moe_forward`` (see the module
        docstring); ``None`` keeps mini_vllm's own. ``set_moe_impl()`` restores the default."""
        for moe in self.moe_layers:
            moe.route_fn, moe.moe_forward_fn = route, moe_forward

    def load_weights(self, weights: Iterable[tuple[str, np.ndarray]]) -> set[str]:
        """Hugging Face-named tensors into the parameters; return the names consumed.

        Expert ``w1`` / ``w3`` land in the expert's fused ``w13`` (gate columns, then up); the
        rest goes through Llama's loading. ``ValueError`` naming the tensor for an unknown name,
        an expert id out of range, or a shape that does not fit.
        """
        num_experts = self.config["num_local_experts"]
        rest: list[tuple[str, np.ndarray]] = []
        loaded: set[str] = set()
        for name, tensor in weights:
            if ".block_sparse_moe." not in name:
                rest.append((name, tensor))
                continue
            layer_prefix, _, tail = name.partition(".block_sparse_moe.")
            layer = self._layer_of(layer_prefix, name)
            moe = layer.block_sparse_moe
            if not np.issubdtype(tensor.dtype, np.floating):
                raise ValueError(f"{name}: expected a floating-point tensor, got {tensor.dtype}")
            parts = tail.split(".")
            if tail == "gate.weight":
                target = moe.gate.T
            elif (len(parts) == 4 and parts[0] == "experts" and parts[1].isdigit()
                  and parts[2] in ("w1", "w2", "w3") and parts[3] == "weight"):
                e = int(parts[1])
                if e >= num_experts:
                    raise ValueError(f"{name}: expert {e} out of range (num_local_experts="
                                     f"{num_experts})")
                inter = moe.experts.intermediate_size
                if parts[2] == "w2":
                    target = moe.experts.w2_weight[e].T
                else:
                    cols = slice(0, inter) if parts[2] == "w1" else slice(inter, 2 * inter)
                    target = moe.experts.w13_weight[e][:, cols].T
            else:
                raise ValueError(f"unknown tensor {name!r}: not a Mixtral weight")
            if tensor.shape != target.shape:
                raise ValueError(f"{name}: expected shape {target.shape}, got {tensor.shape}")
            target[...] = tensor
            loaded.add(name)
        return loaded | super().load_weights(rest)

    def _layer_of(self, layer_prefix: str, name: str) -> MixtralDecoderLayer:
        head, _, index = layer_prefix.rpartition(".")
        if head != "model.layers" or not index.isdigit() or int(index) >= len(self.model.layers):
            raise ValueError(f"unknown tensor {name!r}: not a Mixtral weight")
        return self.model.layers[int(index)]
