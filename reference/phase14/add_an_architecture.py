"""Reference solution for kata 14-01: add an architecture without touching the engine.

Part 1 is the course's toy: a bigram "model" that honours mini_vllm's toy contract
(``forward(last_tokens, positions) -> [batch, vocab]`` logits) and the swap that installs it in a
running engine. Part 2 is the real seam: Qwen2 is Llama plus a bias on q, k and v; written as
subclasses of mini_vllm's Llama pieces and registered under the name a checkpoint's
``config.json`` gives in ``architectures``, it runs in the unchanged engine.
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
from mini_vllm.models.registry import register_model
from mini_vllm.tokenizer import VOCAB_SIZE

# -- part 1: the toy contract --------------------------------------------------------------------


class BigramModel:
    """Logits that depend on the last token only: row ``t`` of a seeded ``[vocab, vocab]``
    table."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> None:
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.seed = seed
        self.table = np.random.default_rng(seed).standard_normal((vocab_size, vocab_size))

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        tokens = np.asarray(last_tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) != len(positions):
            raise ValueError(f"last_tokens and positions must be equal-length 1-D sequences, "
                             f"got {len(tokens)} tokens and {len(positions)} positions")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got "
                             f"{tokens.min()}..{tokens.max()}")
        return self.table[tokens]  # fancy indexing: a fresh [batch, vocab] array


def install_model(engine: Any, model: Any) -> None:
    """Make ``engine`` run ``model``: the engine holds it, and so does its model runner."""
    engine.model = model
    engine.model_runner.model = model


# -- part 2: a real architecture through the registry ---------------------------------------------


class Qwen2Attention(LlamaAttention):
    """Llama's attention plus ``qkv_bias`` (q | k | v), added before RoPE."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 rotary_emb: RotaryEmbedding, dtype: np.dtype) -> None:
        super().__init__(hidden_size, num_heads, num_kv_heads, head_dim, rotary_emb, dtype)
        self.qkv_bias = np.zeros(self.q_size + 2 * self.kv_size, dtype)

    def _qkv(self, hidden_states: np.ndarray) -> np.ndarray:
        return super()._qkv(hidden_states) + self.qkv_bias


class Qwen2DecoderLayer(LlamaDecoderLayer):
    """Llama's block with :class:`Qwen2Attention`."""

    attn_cls = Qwen2Attention

    def named_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from super().named_parameters(prefix)
        # The array itself (loading writes into it), under the fused name the loader stacks
        # q_proj.bias / k_proj.bias / v_proj.bias into.
        yield f"{prefix}.self_attn.qkv_proj.bias", self.self_attn.qkv_bias


class Qwen2Model(LlamaModel):
    """Embedding, Qwen2 layers, final norm."""

    layer_cls = Qwen2DecoderLayer


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Llama's interface over :class:`Qwen2Model`."""

    model_cls = Qwen2Model

    def _check_config(self, config: dict) -> None:
        if config.get("use_sliding_window"):
            raise ValueError("use_sliding_window=true is not supported (full attention only)")
        super()._check_config(config)


def register_qwen2() -> None:
    """Serve ``Qwen2ForCausalLM`` checkpoints with :class:`Qwen2ForCausalLM`."""
    register_model("Qwen2ForCausalLM", Qwen2ForCausalLM)
