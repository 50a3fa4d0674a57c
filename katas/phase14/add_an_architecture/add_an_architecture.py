"""Kata 14-01: add an architecture without touching the engine.

Part 1 (the course's lab): a new "architecture" behind mini_vllm's toy model contract, and the
swap that installs it in an engine that is already built. Part 2 (the real seam): Qwen2, which is
Llama with a bias on the q, k and v projections, written as subclasses of mini_vllm's Llama
pieces (``mini_vllm/models/llama.py``; read its hooks) and registered under the name a
checkpoint's ``config.json`` lists in ``architectures``.

Nothing in ``mini_vllm`` is to be edited: the engine, the runner, the loader and the registry
stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mini_vllm.models.llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    RotaryEmbedding,
)
from mini_vllm.models.registry import register_model  # noqa: F401  (part 2 uses it)
from mini_vllm.tokenizer import VOCAB_SIZE

# -- part 1: the toy contract --------------------------------------------------------------------


class BigramModel:
    """A model whose next-token logits depend on the last token only.

    ``BigramModel(vocab_size, seed)`` draws a ``[vocab_size, vocab_size]`` float64 table once,
    from ``numpy.random.default_rng(seed).standard_normal``; the logits for last token ``t`` are
    row ``t`` of it. Two models with the same ``(vocab_size, seed)`` are the same model.

    Raises ``ValueError`` when ``vocab_size`` is not a positive integer.
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> None:
        raise NotImplementedError("BigramModel: draw the seeded [vocab, vocab] table")

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        """The toy contract: one logits row per input entry, ``[batch, vocab_size]``, row ``i``
        for ``last_tokens[i]``; ``positions`` (same length) are accepted and ignored.

        Deterministic: a pure function of the seed and ``last_tokens``. Raises ``ValueError``
        when the two sequences differ in length or a token is outside ``[0, vocab_size)``.
        """
        raise NotImplementedError("BigramModel.forward: the table rows of the last tokens")


def install_model(engine: Any, model: Any) -> None:
    """Make the already-built ``engine`` (a ``mini_vllm.LLMEngine``) run ``model`` from its
    next step on, in place; returns ``None``.

    Afterwards every holder of the model inside the engine holds ``model``. Reads nothing from
    ``model``: the engine-model contract is ``forward`` alone.
    """
    raise NotImplementedError("install_model: swap the model the engine runs")


# -- part 2: a real architecture through the registry ---------------------------------------------


class Qwen2Attention(LlamaAttention):
    """Llama's attention (same arguments) plus one bias array, ``qkv_bias``:
    ``[q_size + 2 * kv_size]`` in the model's dtype, q's bias then k's then v's, zero until
    loaded. ``_qkv(hidden_states)`` (the hook ``LlamaAttention.__call__`` calls for the fused
    projection, before RoPE) returns Llama's projection with each part's bias added.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 rotary_emb: RotaryEmbedding, dtype: np.dtype) -> None:
        raise NotImplementedError("Qwen2Attention: Llama's attention plus a q|k|v bias")

    def _qkv(self, hidden_states: np.ndarray) -> np.ndarray:
        raise NotImplementedError("Qwen2Attention._qkv: the fused projection with its bias")


class Qwen2DecoderLayer(LlamaDecoderLayer):
    """Llama's decoder block built with :class:`Qwen2Attention`.

    ``named_parameters(prefix)`` lists Llama's parameters and, in addition, the attention's bias
    as ``{prefix}.self_attn.qkv_proj.bias`` (the array itself, so that loading fills it). Under
    that name mini_vllm's loader stacks the checkpoint's ``q_proj.bias``, ``k_proj.bias`` and
    ``v_proj.bias``, exactly as it stacks the three weights into ``qkv_proj.weight``.
    """

    attn_cls = Qwen2Attention

    def named_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        raise NotImplementedError("Qwen2DecoderLayer.named_parameters: Llama's plus the bias")


class Qwen2Model(LlamaModel):
    """Embedding, :class:`Qwen2DecoderLayer` layers, final norm."""

    layer_cls = Qwen2DecoderLayer


class Qwen2ForCausalLM(LlamaForCausalLM):
    """The Qwen2 language model: built as ``Qwen2ForCausalLM(config, dtype)`` from a Hugging
    Face Qwen2 ``config.json`` (a dict), with Llama's interface (``forward``,
    ``compute_logits``, ``named_parameters``, ``load_weights``) over :class:`Qwen2Model`.

    ``_check_config(config)`` (called by the constructor) refuses, with a ``ValueError`` that
    says "sliding", a config with ``use_sliding_window`` true: mini_vllm attends over the full
    context only. Everything Llama refuses stays refused.
    """

    model_cls = Qwen2Model

    def _check_config(self, config: dict) -> None:
        raise NotImplementedError("Qwen2ForCausalLM._check_config: refuse what is not run")


def register_qwen2() -> None:
    """From now on, a checkpoint whose ``config.json`` lists ``"Qwen2ForCausalLM"`` in
    ``architectures`` is built with :class:`Qwen2ForCausalLM` (by ``load_model`` and
    ``mini_vllm.LLM(dir)``). Idempotent."""
    raise NotImplementedError("register_qwen2: put the class in mini_vllm's model registry")
