"""The seeded tiny Qwen2: a random-weight Qwen2 checkpoint made locally in numpy, no torch.

The same shape as mini_vllm's tiny Llama (byte tokenizer, vocab 257, EOS 256, hidden 64, two
layers) plus the one thing Qwen2 adds: a bias on the q, k and v projections. The biases are drawn
wide (``bias_std``, five times the weights') so that a model which drops one, or adds it to the
wrong slice, changes greedy tokens, not only the last digits of the logits.

Weights: ``tiny_llama_weights`` for everything Llama has (the same generator, the same order),
then the biases from a second generator seeded ``[seed, 2]``, layer by layer (q, k, v), so the
Llama part of a Qwen2 spec is bit for bit the tiny Llama of the same shape and seed.

Hugging Face ``Qwen2ForCausalLM`` (transformers) reads the directory as it is; mini_vllm runs it
once ``mini_vllm.models.qwen2.register()`` (or kata 14-01's learner) has registered the
architecture.

No upstream twin: vLLM's tests download tiny random checkpoints; here nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from mini_vllm.models.cache import models_dir
from mini_vllm.models.tiny_llama import (
    TinyLlamaSpec,
    tiny_llama_config,
    tiny_llama_weights,
    write_seeded_checkpoint,
)
from mini_vllm.tokenizer import EOS_TOKEN_ID

#: Bump when the files written change, so stale caches are rebuilt rather than trusted.
_FORMAT = 1


@dataclass(frozen=True)
class TinyQwen2Spec(TinyLlamaSpec):
    """Shape and seed of a seeded Qwen2 (:class:`TinyLlamaSpec`'s fields plus the biases')."""

    bias_std: float = 0.5
    file_format: ClassVar[int] = _FORMAT


def tiny_qwen2_weights(spec: TinyQwen2Spec) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights: the tiny Llama's, plus ``self_attn.{q,k,v}_proj.bias``
    per layer from ``default_rng([seed, 2])``."""
    weights = tiny_llama_weights(spec)
    rng = np.random.default_rng([spec.seed, 2])
    q_out = spec.num_attention_heads * spec.head_dim
    kv_out = spec.num_key_value_heads * spec.head_dim
    for i in range(spec.num_hidden_layers):
        for proj, size in (("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)):
            bias = rng.standard_normal(size) * spec.bias_std
            weights[f"model.layers.{i}.self_attn.{proj}.bias"] = bias.astype(np.float32)
    return weights


def tiny_qwen2_config(spec: TinyQwen2Spec, *, eos_token_id: int = EOS_TOKEN_ID) -> dict:
    """A Hugging Face Qwen2 ``config.json`` for ``spec`` (transformers reads it as is)."""
    config = tiny_llama_config(spec, eos_token_id=eos_token_id)
    return {**config,
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": spec.num_hidden_layers,
            "attention_dropout": 0.0}


def tiny_qwen2_path(spec: TinyQwen2Spec | None = None) -> Path:
    spec = spec or TinyQwen2Spec()
    return models_dir() / f"mini-qwen2-{spec.digest()}"


def build_tiny_qwen2(spec: TinyQwen2Spec | None = None, target: str | Path | None = None,
                     *, force: bool = False) -> Path:
    """Write (once) ``config.json`` + float32 ``model.safetensors``; return the directory.

    ``target`` defaults to the model cache (a directory named after the spec's digest); a
    finished directory is reused unless ``force``. Written atomically, as ``tiny_llama``.
    """
    spec = spec or TinyQwen2Spec()
    target = Path(target) if target is not None else tiny_qwen2_path(spec)
    return write_seeded_checkpoint(target, spec, tiny_qwen2_config(spec), name="mini-qwen2",
                                   force=force, weights=tiny_qwen2_weights)


#: The vLLM-runnable variant (vLLM's CPU attention refuses head_dim 16): head_dim 64, for kata
#: 14-01's live check that vLLM's own Qwen2 and the learner's agree on one checkpoint.
VLLM_SPEC = TinyQwen2Spec(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=512, max_position_embeddings=1024, init_std=0.05,
                          bias_std=0.25, seed=7)
