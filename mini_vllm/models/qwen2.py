"""Qwen2 in numpy: Llama with a bias on the q, k and v projections.

Upstream twin: ``vllm/model_executor/models/qwen2.py`` (``Qwen2ForCausalLM``, ``Qwen2Model``,
``Qwen2DecoderLayer``, ``Qwen2Attention``): there ``qkv_proj`` is a ``QKVParallelLinear`` built
with ``bias=True`` and ``o_proj`` a ``RowParallelLinear`` without one; the MLP, RMSNorm, RoPE, the
embedding and the LM head are Llama's. So is every line here but the bias: the classes subclass
``mini_vllm.models.llama`` through its hooks (``LlamaAttention._qkv``,
``LlamaDecoderLayer.attn_cls``, ``LlamaModel.layer_cls``, ``LlamaForCausalLM.model_cls`` and
``_check_config``), as ``mixtral.py`` does for its experts.

Checkpoint names are Hugging Face's: ``model.layers.{i}.self_attn.{q,k,v}_proj.bias``
(``[num_heads * head_dim]``, ``[num_kv_heads * head_dim]`` twice). They are stacked into one
parameter ``...self_attn.qkv_proj.bias`` by Llama's ``load_weights`` (its
``stacked_params_mapping`` matches ``.q_proj`` in the bias's name as in the weight's), so loading
needs nothing new: listing the parameter is enough.

Not supported (refused by ``_check_config``): sliding-window attention (``use_sliding_window``),
which Qwen2 checkpoints leave off; mini_vllm attends over the full context only.

Out of tree on purpose: the registry's built-in table does not list it. :func:`register` puts it
there (``registry.register_model("Qwen2ForCausalLM", ...)``), the way a vLLM plugin registers an
architecture; kata 14-01 has the learner write and register their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mini_vllm.models.llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    RotaryEmbedding,
)
from mini_vllm.models.registry import register_model

ARCHITECTURE = "Qwen2ForCausalLM"


class Qwen2Attention(LlamaAttention):
    """Llama's attention with ``qkv_bias`` (``[q_size + 2 * kv_size]``, q | k | v) added to the
    fused projection's output, before RoPE."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 rotary_emb: RotaryEmbedding, dtype: np.dtype) -> None:
        super().__init__(hidden_size, num_heads, num_kv_heads, head_dim, rotary_emb, dtype)
        self.qkv_bias = np.zeros(self.q_size + 2 * self.kv_size, dtype)

    def _qkv(self, hidden_states: np.ndarray) -> np.ndarray:
        return super()._qkv(hidden_states) + self.qkv_bias


class Qwen2DecoderLayer(LlamaDecoderLayer):
    """Llama's block with :class:`Qwen2Attention`; lists the bias among its parameters."""

    attn_cls = Qwen2Attention

    def named_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from super().named_parameters(prefix)
        yield f"{prefix}.self_attn.qkv_proj.bias", self.self_attn.qkv_bias


class Qwen2Model(LlamaModel):
    """Embedding, Qwen2 decoder layers, the final norm."""

    layer_cls = Qwen2DecoderLayer


class Qwen2ForCausalLM(LlamaForCausalLM):
    """The Qwen2 language model: Llama's interface over :class:`Qwen2Model`.

    ``config`` is a Hugging Face Qwen2 ``config.json``; ``dtype`` float32 or float64.
    """

    model_cls = Qwen2Model

    def _check_config(self, config: dict) -> None:
        if config.get("use_sliding_window"):
            raise ValueError("use_sliding_window=true is not supported (full attention only)")
        super()._check_config(config)


def register() -> None:
    """Serve checkpoints whose ``architectures`` list ``Qwen2ForCausalLM`` with this module's
    class (idempotent)."""
    register_model(ARCHITECTURE, Qwen2ForCausalLM)
