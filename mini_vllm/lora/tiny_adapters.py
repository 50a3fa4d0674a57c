"""Seeded peft-format LoRA adapters for a Llama checkpoint, written in numpy in well under a second.

Tests and katas need adapters that visibly change a model's tokens without training anything:
``build_tiny_adapter(base_dir, AdapterSpec(seed=1))`` reads the base model's ``config.json`` for
the shapes and writes ``adapter_config.json`` + ``adapter_model.safetensors`` (float32) into the
model cache, under a name carrying a digest of the base's config and the spec, so a spec always
yields the same bits and is built once. ``lora_A ~ N(0, 1/in)`` (unit-variance shrink of a
unit-variance row) and ``lora_B ~ N(0, b_std^2)``; peft itself initialises B to zero, which would
make an adapter that changes nothing. Works for mini_vllm's tiny Llama and for SmolLM2.

No upstream twin: vLLM's tests download small adapters from the hub; here nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mini_vllm.models.cache import MARKER, building, models_dir

#: Every projection a Llama LoRA may target, in the order weights are drawn.
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterSpec:
    """Rank, alpha, targets and seed of a seeded adapter (``scaling = lora_alpha / r``)."""

    seed: int = 1
    r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ALL_TARGETS
    #: Standard deviation of every ``lora_B``: how far the adapter moves the model.
    b_std: float = 0.1
    #: Decoder layers that get the adapter (``None``: all of them).
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.target_modules) - set(ALL_TARGETS)
        if unknown or not self.target_modules:
            raise ValueError(f"target_modules must be a non-empty subset of {ALL_TARGETS}, got "
                             f"{self.target_modules}")
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")


def _shapes(config: dict) -> dict[str, tuple[int, int]]:
    """``module -> (in, out)`` of one decoder layer's projections."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = (config.get("num_key_value_heads") or heads) * head_dim
    inter = config["intermediate_size"]
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
            "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def tiny_adapter_weights(config: dict, spec: AdapterSpec) -> dict[str, np.ndarray]:
    """The adapter's tensors by peft name, drawn from ``default_rng(spec.seed)`` in order."""
    rng = np.random.default_rng(spec.seed)
    shapes = _shapes(config)
    layers = spec.layers if spec.layers is not None else range(config["num_hidden_layers"])
    weights: dict[str, np.ndarray] = {}
    for i in layers:
        for module in ALL_TARGETS:
            if module not in spec.target_modules:
                continue
            owner = "self_attn" if module in ALL_TARGETS[:4] else "mlp"
            fan_in, fan_out = shapes[module]
            prefix = f"base_model.model.model.layers.{i}.{owner}.{module}"
            a = rng.standard_normal((spec.r, fan_in)) / np.sqrt(fan_in)
            b = rng.standard_normal((fan_out, spec.r)) * spec.b_std
            weights[f"{prefix}.lora_A.weight"] = a.astype(np.float32)
            weights[f"{prefix}.lora_B.weight"] = b.astype(np.float32)
    return weights


def build_tiny_adapter(base_model_dir: str | Path, spec: AdapterSpec | None = None, *,
                       force: bool = False) -> Path:
    """Write (once) a peft adapter for the Llama at ``base_model_dir``; return its directory."""
    from safetensors.numpy import save_file

    spec = spec or AdapterSpec()
    base = Path(base_model_dir)
    config = json.loads((base / "config.json").read_text())
    blob = json.dumps({"base": config, "spec": asdict(spec)}, sort_keys=True)
    target = models_dir() / f"lora-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    if (target / MARKER).exists() and not force:
        return target
    with building(target) as out:
        save_file(tiny_adapter_weights(config, spec), str(out / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        adapter_config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.r,
            "lora_alpha": spec.lora_alpha, "target_modules": list(spec.target_modules),
            "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False,
            "base_model_name_or_path": base.name,
        }
        (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        (out / MARKER).write_text(json.dumps({"model": "seeded-lora", **asdict(spec)}, indent=2))
    return target
