"""Provided for kata 14-03: the stacking table and the shapes of one decoder layer.

Both the stub and the reference import these; you do not write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: ``(fused parameter, checkpoint tensor, shard id)``, in the shape of upstream's
#: ``stacked_params_mapping`` (``vllm/model_executor/models/llama.py: LlamaModel.load_weights``).
#: The leading dots are part of the pattern: they make ``.up_proj`` a whole path component, so it
#: does not occur inside ``.gate_up_proj``.
STACKED_PARAMS: list[tuple[str, str, str | int]] = [
    (".qkv_proj", ".q_proj", "q"),
    (".qkv_proj", ".k_proj", "k"),
    (".qkv_proj", ".v_proj", "v"),
    (".gate_up_proj", ".gate_proj", 0),
    (".gate_up_proj", ".up_proj", 1),
]


@dataclass(frozen=True)
class LayerShapes:
    """What the fused weights of one Llama decoder layer are built from.

    ``num_heads`` query heads and ``num_kv_heads`` KV heads of ``head_dim`` each; the MLP's
    ``intermediate_size``; the layer's input width ``hidden_size`` (every q/k/v/gate/up weight
    is ``(rows, hidden_size)`` in the checkpoint layout ``(out, in)``).
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    hidden_size: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LayerShapes:
        """From a Hugging Face ``config.json`` (as a dict), with Llama's defaults: no
        ``num_key_value_heads`` means MHA, no ``head_dim`` means ``hidden_size / num_heads``."""
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        return cls(num_heads=heads,
                   num_kv_heads=int(config.get("num_key_value_heads") or heads),
                   head_dim=int(config.get("head_dim") or hidden // heads),
                   intermediate_size=int(config["intermediate_size"]),
                   hidden_size=hidden)
