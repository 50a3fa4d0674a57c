"""LoRA adapters: loading a peft checkpoint, slot buffers, and the per-step LoRA layers.

Upstream twins: ``vllm/lora/models.py`` (``LoRAModel.from_local_checkpoint``,
``LoRAModelManager``: stacked per-slot buffers, ``activate_adapter`` copying an adapter into a
slot, ``_set_adapter_mapping``), ``vllm/lora/peft_helper.py`` (``PEFTHelper``: the scaling),
``vllm/lora/layers/`` (each targeted linear gets a LoRA wrapper that adds the punica delta after
the base matmul) and ``vllm/config/lora.py: LoRAConfig``.

A peft adapter directory holds ``adapter_config.json`` (``r``, ``lora_alpha``,
``target_modules``...) and ``adapter_model.safetensors`` with one ``lora_A`` (``[r, in]``) and one
``lora_B`` (``[out, r]``) per targeted module, named like
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``. The scaling is
``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``).

mini_vllm's Llama fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``; upstream's
fused LoRA layers (``MergedQKVParallelLinearWithLoRA``) keep one (A, B) per slice and run the
punica op per slice. Here the slices of one fused layer are stacked into a single (A, B): the
A's on top of each other (rank ``n_slices * max_lora_rank``) and the B's block-diagonally, each
slice's B writing only its own output columns. ``B_stacked @ A_stacked`` is then exactly the
per-slice deltas side by side, so one batched LoRA matmul per fused layer does it; a slice the
adapter does not target is zeros, and an adapter of rank ``r < max_lora_rank`` is zero-padded,
as upstream pads every slot to ``max_lora_rank``.

Which adapter sits in which buffer slot follows the slot cache (``mini_vllm/lora/slots.py``):
each step, ``LoRAModelManager.step`` calls ``ensure`` for the adapters the step uses, then copies
into a buffer slot any of them not already there (``num_slot_loads`` counts the copies: the
host-to-device loads a thrashing cache would multiply).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mini_vllm.lora.punica import NO_LORA, apply_lora_linear
from mini_vllm.lora.request import LoRARequest
from mini_vllm.lora.slots import AdapterSlotCache

#: LoRA-aware linear: ``fn(x, W, adapters, adapter_ids, scalings) -> x @ W.T + deltas`` (kata
#: 11-01's ``apply_batched``); see :func:`mini_vllm.lora.punica.apply_lora_linear`.
LoRALinearFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class LoRAConfig:
    """Engine-wide LoRA settings (``LLMEngine(lora_config=...)``; upstream's ``LoRAConfig``).

    ``max_loras``: adapter slots, so the most distinct adapters running at once (upstream
    default 1). ``max_lora_rank``: the rank every slot is sized for; a bigger adapter is refused.
    Injection points: ``slot_cache_cls`` (built as ``cls(max_loras)``; default
    :class:`~mini_vllm.lora.slots.AdapterSlotCache`) and ``lora_linear`` (default
    :func:`~mini_vllm.lora.punica.apply_lora_linear`).
    """

    max_loras: int = 1
    max_lora_rank: int = 16
    slot_cache_cls: Callable[[int], Any] | None = None
    lora_linear: LoRALinearFn | None = None

    def __post_init__(self) -> None:
        for name in ("max_loras", "max_lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class LoRALayerWeights:
    """One targeted module's pair: ``lora_a`` ``[rank, in]``, ``lora_b`` ``[out, rank]``."""

    module_name: str  # e.g. "model.layers.0.self_attn.q_proj"
    lora_a: np.ndarray
    lora_b: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])


_KEY = re.compile(r"^base_model\.model\.(model\.layers\.\d+\.(?:self_attn|mlp)\.\w+)"
                  r"\.lora_([AB])\.weight$")


class LoRAModel:
    """A loaded adapter: ``id``, ``rank``, ``scaling`` and its modules' weights by name."""

    def __init__(self, lora_model_id: int, rank: int, scaling: float,
                 loras: dict[str, LoRALayerWeights]) -> None:
        self.id = lora_model_id
        self.rank = rank
        self.scaling = scaling
        self.loras = loras

    @classmethod
    def from_local_checkpoint(cls, lora_dir: str | Path, lora_model_id: int,
                              dtype: np.dtype | str = np.float32) -> LoRAModel:
        """Read a peft LoRA directory; ``ValueError`` naming what is missing or unsupported
        (DoRA, biases, per-module rank or alpha patterns, extra trained modules, a key that is
        not a decoder layer's ``lora_A`` / ``lora_B``, a pair whose shapes disagree with ``r``)."""
        from safetensors.numpy import load_file

        lora_dir = Path(lora_dir)
        config_path = lora_dir / "adapter_config.json"
        weights_path = lora_dir / "adapter_model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise ValueError(f"LoRA adapter {lora_dir} has no {path.name}")
        config = json.loads(config_path.read_text())
        if config.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{config_path}: peft_type {config['peft_type']!r} is not LORA")
        for key, ok in (("use_dora", not config.get("use_dora")),
                        ("bias", config.get("bias", "none") == "none"),
                        ("rank_pattern", not config.get("rank_pattern")),
                        ("alpha_pattern", not config.get("alpha_pattern")),
                        ("modules_to_save", not config.get("modules_to_save"))):
            if not ok:
                raise ValueError(f"{config_path}: {key}={config[key]!r} is not supported")
        rank = config.get("r")
        alpha = config.get("lora_alpha")
        if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)):
            raise ValueError(f"{config_path}: needs an int r >= 1 and a number lora_alpha, got "
                             f"r={rank!r}, lora_alpha={alpha!r}")
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        halves: dict[str, dict[str, np.ndarray]] = {}
        for key, tensor in load_file(str(weights_path)).items():
            match = _KEY.match(key)
            if match is None:
                raise ValueError(f"{weights_path.name}: unsupported tensor {key!r} (expected "
                                 f"base_model.model.model.layers.<i>.<module>.lora_A/B.weight)")
            halves.setdefault(match.group(1), {})[match.group(2)] = tensor
        loras: dict[str, LoRALayerWeights] = {}
        for module, pair in sorted(halves.items()):
            if set(pair) != {"A", "B"}:
                have = "A" if "A" in pair else "B"
                raise ValueError(f"{weights_path.name}: {module} has lora_{have} but not its "
                                 f"partner")
            a, b = pair["A"], pair["B"]
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
                raise ValueError(f"{weights_path.name}: {module} has lora_A {a.shape} and lora_B "
                                 f"{b.shape}, expected [r, in] and [out, r] with r={rank}")
            loras[module] = LoRALayerWeights(module, a.astype(dtype), b.astype(dtype))
        if not loras:
            raise ValueError(f"{weights_path.name} holds no LoRA weights")
        return cls(lora_model_id, rank, float(scaling), loras)


class LoRALinear:
    """The hook a targeted projection of a Llama calls (``module.lora_layers[name]``): plain
    ``x @ w`` unless a LoRA step of this model is running, then that step's LoRA-aware linear."""

    def __init__(self, model: Any, layer_index: int, name: str) -> None:
        self.model = model
        self.layer_index = layer_index
        self.name = name

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        step = _current_step
        if step is None or step.model is not self.model:
            return x @ w
        return step.linear(self.layer_index, self.name, x, w)


@dataclass(frozen=True)
class _Target:
    """A fused projection of one layer: its slices (checkpoint module -> output columns)."""

    owner: str  # "self_attn" or "mlp"
    slices: dict[str, slice]


_current_step: _LoRAStep | None = None


class _LoRAStep:
    """One forward pass's LoRA state: each token row's slot, the buffers, the linear to call."""

    def __init__(self, manager: LoRAModelManager, token_slots: np.ndarray,
                 active_slots: list[int]) -> None:
        self.model = manager.model
        self.manager = manager
        self.token_slots = token_slots
        self.scalings = {s: float(manager.scalings[s]) for s in active_slots}
        self.active_slots = active_slots

    def linear(self, layer_index: int, name: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        lora_a, lora_b = self.manager.buffers[layer_index][name]
        adapters = {s: (lora_a[s], lora_b[s]) for s in self.active_slots}
        y = self.manager.lora_linear(x, w.T, adapters, self.token_slots, self.scalings)
        expected = (x.shape[0], w.shape[1])
        if getattr(y, "shape", None) != expected:
            raise ValueError(f"lora_linear returned shape {getattr(y, 'shape', None)} for "
                             f"model.layers.{layer_index}.{name}, expected {expected}")
        return y


class LoRAModelManager:
    """Slot buffers for one model, the LoRA hooks on its projections, and adapter loading.

    ``buffers[layer][name] = (A [max_loras, R, in], B [max_loras, out, R])`` for every targeted
    fused projection (``R = n_slices * max_lora_rank``), ``scalings[slot]``, and
    ``slot_adapter[slot]``: the adapter id whose weights the slot holds (``None``: empty).
    """

    def __init__(self, model: Any, config: LoRAConfig, slot_cache: Any) -> None:
        self.model = model
        self.config = config
        self.slot_cache = slot_cache
        self.lora_linear: LoRALinearFn = config.lora_linear or apply_lora_linear
        self.max_loras = config.max_loras
        self.max_rank = config.max_lora_rank
        self.adapters: dict[int, tuple[LoRARequest, LoRAModel]] = {}
        self.slot_adapter: list[int | None] = [None] * self.max_loras
        self.scalings = np.zeros(self.max_loras)
        self.num_slot_loads = 0
        self.targets: list[dict[str, _Target]] = []
        self.buffers: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        dtype = model.dtype
        for index, layer in enumerate(model.model.layers):
            targets: dict[str, _Target] = {}
            buffers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for owner_name, name, slices in _fused_projections(layer):
                owner = getattr(layer, owner_name)
                weight = getattr(owner, name)  # [in, out]
                rank = len(slices) * self.max_rank
                targets[name] = _Target(owner_name, slices)
                buffers[name] = (np.zeros((self.max_loras, rank, weight.shape[0]), dtype),
                                 np.zeros((self.max_loras, weight.shape[1], rank), dtype))
                hooks = owner.__dict__.setdefault("lora_layers", {})
                if not isinstance(hooks.get(name), LoRALinear):
                    hooks[name] = LoRALinear(model, index, name)
            self.targets.append(targets)
            self.buffers.append(buffers)

    # -- adapters -------------------------------------------------------------------------------

    def add_adapter(self, lora_request: LoRARequest) -> LoRAModel:
        """Load (once per id) and check the adapter a request names; ``ValueError`` if it does
        not fit this model or ``max_lora_rank``, or its id already names another adapter."""
        if not isinstance(lora_request, LoRARequest):
            raise ValueError(f"lora_request must be a LoRARequest or None, got {lora_request!r}")
        known = self.adapters.get(lora_request.lora_int_id)
        if known is not None:
            if known[0] != lora_request:
                raise ValueError(f"lora_int_id {lora_request.lora_int_id} already names "
                                 f"{known[0]!r}; got {lora_request!r} (one adapter per id)")
            return known[1]
        lora = LoRAModel.from_local_checkpoint(lora_request.lora_path, lora_request.lora_int_id,
                                               dtype=self.model.dtype)
        if lora.rank > self.max_rank:
            raise ValueError(f"adapter {lora_request.lora_name!r} has rank {lora.rank}, above "
                             f"max_lora_rank={self.max_rank}")
        for module, weights in lora.loras.items():
            layer_index, name, slc = self._locate(module)
            in_dim = self.buffers[layer_index][name][0].shape[2]
            expected = ((lora.rank, in_dim), (slc.stop - slc.start, lora.rank))
            if (weights.lora_a.shape, weights.lora_b.shape) != expected:
                raise ValueError(f"adapter {lora_request.lora_name!r}: {module} has lora_A "
                                 f"{weights.lora_a.shape} and lora_B {weights.lora_b.shape}, this "
                                 f"model needs {expected[0]} and {expected[1]}")
        self.adapters[lora_request.lora_int_id] = (lora_request, lora)
        return lora

    def _locate(self, module: str) -> tuple[int, str, slice]:
        """``model.layers.3.self_attn.k_proj`` -> (3, "qkv_proj", k's output columns)."""
        parts = module.split(".")
        layer_index, owner, sub = int(parts[2]), parts[3], parts[4]
        if layer_index < len(self.targets):
            for name, target in self.targets[layer_index].items():
                if target.owner == owner and sub in target.slices:
                    return layer_index, name, target.slices[sub]
        raise ValueError(f"the adapter targets {module}, which this model has no LoRA layer for")

    def _load_into_slot(self, slot: int, adapter_id: int) -> None:
        lora = self.adapters[adapter_id][1]
        for buffers in self.buffers:
            for lora_a, lora_b in buffers.values():
                lora_a[slot] = 0
                lora_b[slot] = 0
        for module, weights in lora.loras.items():
            layer_index, name, slc = self._locate(module)
            j = list(self.targets[layer_index][name].slices).index(module.split(".")[4])
            ranks = slice(j * self.max_rank, j * self.max_rank + lora.rank)
            lora_a, lora_b = self.buffers[layer_index][name]
            lora_a[slot, ranks] = weights.lora_a
            lora_b[slot, slc, ranks] = weights.lora_b
        self.scalings[slot] = lora.scaling
        self.slot_adapter[slot] = adapter_id
        self.num_slot_loads += 1

    # -- one step -------------------------------------------------------------------------------

    @contextmanager
    def step(self, requests: Sequence[Any], counts: Sequence[int], num_rows: int
             ) -> Iterator[None]:
        """Activate the step's adapters (``ensure`` each, copy any missing into a buffer slot)
        and run the enclosed forward pass with each token row on its request's slot."""
        global _current_step
        ids = [lora_id(r) for r in requests]
        used = list(dict.fromkeys(i for i in ids if i is not None))
        if not used:
            yield
            return
        for adapter_id in used:
            self.slot_cache.ensure(adapter_id)
        resident = set(self.slot_cache.resident())
        if len(resident) > self.max_loras:
            raise RuntimeError(f"the slot cache holds {len(resident)} adapters "
                               f"{sorted(resident)} in {self.max_loras} slots")
        missing = [i for i in used if i not in resident]
        if missing:
            raise RuntimeError(f"adapters {missing} are used by running requests this step but "
                               f"the slot cache does not hold them after ensure(): it evicted "
                               f"an adapter a running request needs")
        for slot, held in enumerate(self.slot_adapter):
            if held is not None and held not in resident:
                self.slot_adapter[slot] = None
        slot_of: dict[int, int] = {}
        for adapter_id in used:
            if adapter_id in self.slot_adapter:
                slot_of[adapter_id] = self.slot_adapter.index(adapter_id)
            else:
                slot = self.slot_adapter.index(None)
                self._load_into_slot(slot, adapter_id)
                slot_of[adapter_id] = slot
        request_slots = np.array([NO_LORA if i is None else slot_of[i] for i in ids], np.int64)
        token_slots = np.full(num_rows, NO_LORA, np.int64)
        total = int(np.sum(counts))
        token_slots[:total] = np.repeat(request_slots, counts)
        previous = _current_step
        _current_step = _LoRAStep(self, token_slots, sorted(slot_of.values()))
        try:
            yield
        finally:
            _current_step = previous


def lora_id(request: Any) -> int | None:
    """The adapter id a request runs with, ``None`` for the base model."""
    lora_request = getattr(request, "lora_request", None)
    return None if lora_request is None else lora_request.lora_int_id


def _fused_projections(layer: Any) -> Iterator[tuple[str, str, dict[str, slice]]]:
    """``(owner, fused parameter, {checkpoint module: output columns})`` of a Llama decoder
    layer's projections that a LoRA may target (an MoE layer's experts are not among them)."""
    attn = layer.self_attn
    q, kv = attn.q_size, attn.kv_size
    yield "self_attn", "qkv_proj", {"q_proj": slice(0, q), "k_proj": slice(q, q + kv),
                                    "v_proj": slice(q + kv, q + 2 * kv)}
    yield "self_attn", "o_proj", {"o_proj": slice(0, attn.o_proj.shape[1])}
    mlp = getattr(layer, "mlp", None)
    if mlp is not None and hasattr(mlp, "gate_up_proj") and hasattr(mlp, "down_proj"):
        inter = mlp.gate_up_proj.shape[1] // 2
        yield "mlp", "gate_up_proj", {"gate_proj": slice(0, inter),
                                      "up_proj": slice(inter, 2 * inter)}
        yield "mlp", "down_proj", {"down_proj": slice(0, mlp.down_proj.shape[1])}


def make_slot_cache(config: LoRAConfig) -> Any:
    """The engine's slot cache: ``config.slot_cache_cls(max_loras)`` or the stock one."""
    return (config.slot_cache_cls or AdapterSlotCache)(config.max_loras)
