"""The seeded tiny Mixtral: a random-weight Mixtral checkpoint made locally in numpy, no torch.

Eight experts, top-2 routing, as Mixtral; everything else is tiny. The default spec speaks
mini_vllm's byte tokenizer (vocab 257, EOS 256) and is run by mini_vllm in float64 (phase 07's
``moe_routing`` drives its MoE layers with a learner's router). :data:`VLLM_SPEC` is the same
architecture with vLLM-sized heads (head_dim 64: vLLM's CPU attention refuses smaller ones), for
``profile_fused_moe`` on vLLM-CPU, which reads the directory as any Hugging Face Mixtral
(``config.json`` + ``model.safetensors``; no tokenizer files: start vLLM with
``skip_tokenizer_init=True`` and prompt token ids).

Weights are float32 from ``numpy.random.default_rng(seed)`` in a fixed order (the Llama part in
the same order as ``tiny_llama``; per layer the router, then per expert w1, w2, w3), so one spec
always yields the same bits. The router's weights are drawn wider (``router_std``) so that each
token's top-2 is far from a tie.

No upstream twin: vLLM's tests download tiny random checkpoints; here nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mini_vllm.models.cache import MARKER, building, models_dir
from mini_vllm.tokenizer import EOS_TOKEN_ID, VOCAB_SIZE

#: Bump when the files written change, so stale caches are rebuilt rather than trusted.
_FORMAT = 1


@dataclass(frozen=True)
class TinyMixtralSpec:
    """Shape and seed of a seeded Mixtral. The defaults are mini_vllm's tiny MoE model."""

    vocab_size: int = VOCAB_SIZE
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    intermediate_size: int = 64  # per expert
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    init_std: float = 0.1
    router_std: float = 0.5
    seed: int = 0
    #: What ``config.json`` asks the loader to run in (vLLM reads it; mini_vllm takes its own).
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must split evenly into num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if not 1 <= self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError("num_experts_per_tok must be in [1, num_local_experts]")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": _FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


#: The vLLM-runnable variant: head_dim 64, three layers (so "layers x steps" is not 2 x 2).
VLLM_SPEC = TinyMixtralSpec(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                            num_hidden_layers=3, intermediate_size=128,
                            max_position_embeddings=1024, init_std=0.05, router_std=0.25,
                            seed=7)


def tiny_mixtral_weights(spec: TinyMixtralSpec) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights drawn in a fixed order from ``default_rng(seed)``."""
    rng = np.random.default_rng(spec.seed)

    def normal(*shape: int, std: float = spec.init_std) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    h, hd, inter = spec.hidden_size, spec.head_dim, spec.intermediate_size
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    w = {"model.embed_tokens.weight": normal(spec.vocab_size, h)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(q_out, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv_out, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv_out, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q_out)
        moe = p + "block_sparse_moe."
        w[moe + "gate.weight"] = normal(spec.num_local_experts, h, std=spec.router_std)
        for e in range(spec.num_local_experts):
            w[moe + f"experts.{e}.w1.weight"] = normal(inter, h)
            w[moe + f"experts.{e}.w2.weight"] = normal(h, inter)
            w[moe + f"experts.{e}.w3.weight"] = normal(inter, h)
        w[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
    w["model.norm.weight"] = np.ones(h, np.float32)
    lm_head = normal(spec.vocab_size, h)
    if not spec.tie_word_embeddings:
        w["lm_head.weight"] = lm_head
    return w


def tiny_mixtral_config(spec: TinyMixtralSpec, *, eos_token_id: int = EOS_TOKEN_ID) -> dict:
    """A Hugging Face Mixtral ``config.json`` for ``spec`` (transformers and vLLM read it)."""
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "num_local_experts": spec.num_local_experts,
        "num_experts_per_tok": spec.num_experts_per_tok,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "sliding_window": None,
        "router_aux_loss_coef": 0.0,
        "output_router_logits": False,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": spec.torch_dtype,
    }


def tiny_mixtral_path(spec: TinyMixtralSpec | None = None) -> Path:
    spec = spec or TinyMixtralSpec()
    return models_dir() / f"mini-mixtral-{spec.digest()}"


def build_tiny_mixtral(spec: TinyMixtralSpec | None = None, target: str | Path | None = None,
                       *, force: bool = False) -> Path:
    """Write (once) ``config.json`` + float32 ``model.safetensors``; return the directory.

    ``target`` defaults to the model cache (a directory named after the spec's digest); a
    finished directory is reused unless ``force``. Written atomically, as ``tiny_llama``.
    """
    from safetensors.numpy import save_file

    spec = spec or TinyMixtralSpec()
    target = Path(target) if target is not None else tiny_mixtral_path(spec)
    if (target / MARKER).exists() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    with building(target) as out:
        # "pt": transformers refuses a file whose "format" names no framework it knows.
        save_file(tiny_mixtral_weights(spec), str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(tiny_mixtral_config(spec), indent=2))
        (out / MARKER).write_text(json.dumps({"model": "mini-mixtral", **asdict(spec)},
                                             indent=2))
    return target
