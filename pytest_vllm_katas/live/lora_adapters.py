"""Two LoRA adapters for the live tiny Llama, written in peft's format with numpy alone.

Kata 11-02 serves a base model and two adapters in one vLLM batch. Nothing may be downloaded and
nothing is trained: each adapter is scaled random weights from a fixed seed, written as a peft
directory (``adapter_config.json`` + ``adapter_model.safetensors``) that vLLM's
``LoRAModel.from_local_checkpoint`` reads like any adapter from the hub:

* tensor names ``base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight``;
* ``lora_A`` is ``(rank, in_features)`` (the shrink), ``lora_B`` is ``(out_features, rank)``
  (the expand), float32;
* ``lora_alpha == rank``, so vLLM's scaling ``alpha / rank`` is 1 and the delta is ``B @ A``.

Both factors are drawn with a standard deviation chosen so the delta is about as large as the
base projection it is added to (the tiny Llama's weights have std 0.02): strong enough that every
adapter changes the greedy tokens of every prompt the kata uses, which kata 11-02 checks before
it trusts a comparison. The adapters differ only in their seed.

Built once into the model cache next to the tiny Llama, atomically (``cache.building``), by
``build_lora_adapters()``; ``katas models fetch`` builds them too. Seconds, no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .cache import MARKER, building
from .tiny_llama import TinyLlamaSpec, tiny_llama_path

#: The adapters' names and seeds; kata 11-02 calls them by these names.
ADAPTER_SEEDS = {"adapter-a": 101, "adapter-b": 202}
#: Bump when the files written change, so stale caches are rebuilt.
_FORMAT = 1


@dataclass(frozen=True)
class LoraAdapterSpec:
    """Rank, targets and scale of the seeded adapters (one spec, several seeds)."""

    rank: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: std of both factors: the delta B @ A then has std about rank**0.5 * factor_std**2, which
    #: at 0.0707 and rank 8 is 0.0141, the size of the base weights (0.02).
    factor_std: float = 0.0707


def _target_shapes(base: TinyLlamaSpec) -> dict[str, tuple[int, int]]:
    """``(in_features, out_features)`` of each attention projection of the tiny Llama."""
    h, q_out = base.hidden_size, base.num_attention_heads * base.head_dim
    kv_out = base.num_key_value_heads * base.head_dim
    return {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out),
            "o_proj": (q_out, h), "gate_proj": (h, base.intermediate_size),
            "up_proj": (h, base.intermediate_size), "down_proj": (base.intermediate_size, h)}


def lora_adapter_weights(seed: int, spec: LoraAdapterSpec | None = None,
                         base: TinyLlamaSpec | None = None) -> dict[str, np.ndarray]:
    """peft-named float32 ``lora_A`` / ``lora_B`` tensors drawn from ``default_rng(seed)``."""
    spec, base = spec or LoraAdapterSpec(), base or TinyLlamaSpec()
    rng = np.random.default_rng(seed)
    shapes = _target_shapes(base)
    out: dict[str, np.ndarray] = {}
    for layer in range(base.num_hidden_layers):
        for target in spec.target_modules:
            group = "mlp" if target in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{target}"
            n_in, n_out = shapes[target]
            a = rng.standard_normal((spec.rank, n_in)) * spec.factor_std
            b = rng.standard_normal((n_out, spec.rank)) * spec.factor_std
            out[f"{prefix}.lora_A.weight"] = a.astype(np.float32)
            out[f"{prefix}.lora_B.weight"] = b.astype(np.float32)
    return out


def _adapter_config(spec: LoraAdapterSpec, base_dir: Path) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_dir.name,
        "r": spec.rank,
        "lora_alpha": spec.rank,  # scaling alpha / r == 1
        "lora_dropout": 0.0,
        "target_modules": list(spec.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }


def lora_adapters_path(spec: LoraAdapterSpec | None = None,
                       base: TinyLlamaSpec | None = None) -> Path:
    """The directory holding one sub-directory per adapter, next to the tiny Llama it fits."""
    import hashlib

    spec, base = spec or LoraAdapterSpec(), base or TinyLlamaSpec()
    blob = json.dumps({**asdict(spec), "seeds": ADAPTER_SEEDS, "format": _FORMAT},
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return tiny_llama_path(base).with_name(f"{tiny_llama_path(base).name}-loras-{digest}")


def build_lora_adapters(spec: LoraAdapterSpec | None = None, base: TinyLlamaSpec | None = None,
                        *, force: bool = False) -> dict[str, Path]:
    """Write (once) every adapter of ``ADAPTER_SEEDS``; return name -> peft directory."""
    import shutil

    from safetensors.numpy import save_file

    spec, base = spec or LoraAdapterSpec(), base or TinyLlamaSpec()
    target = lora_adapters_path(spec, base)
    if force:
        shutil.rmtree(target, ignore_errors=True)
    if not (target / MARKER).exists():
        with building(target) as out:
            for name, seed in ADAPTER_SEEDS.items():
                d = out / name
                d.mkdir()
                save_file(lora_adapter_weights(seed, spec, base),
                          str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
                (d / "adapter_config.json").write_text(
                    json.dumps(_adapter_config(spec, tiny_llama_path(base)), indent=2))
            (out / MARKER).write_text(json.dumps(
                {"model": "tiny-llama-loras", "seeds": ADAPTER_SEEDS, **asdict(spec)}, indent=2))
    return {name: target / name for name in ADAPTER_SEEDS}
