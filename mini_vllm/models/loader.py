"""Load a Hugging Face checkpoint directory (``config.json`` + ``*.safetensors``) into a model.

Upstream twins: ``vllm/model_executor/model_loader/default_loader.py`` (``DefaultModelLoader``:
build the class the registry names, stream the weights into ``model.load_weights``, refuse a
model with parameters the checkpoint never filled) and ``model_loader/weight_utils.py:
safetensors_weights_iterator``.

Weights are read with ``safetensors.safe_open(..., framework="np")``. numpy has no bfloat16, so a
``BF16`` tensor is read as raw ``uint16`` and widened here: a bfloat16 is the top 16 bits of a
float32, so shifting it left by 16 gives the float32 exactly (no ``ml_dtypes`` needed).

Every failure is one ``ValueError`` naming the file or tensor. The loader only reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from mini_vllm.models.registry import resolve_model_cls

CONFIG_NAME = "config.json"

#: A config without ``architectures`` (GGUF conversions write none) is read by its
#: ``model_type``, as transformers' ``AutoModelForCausalLM`` does.
_CAUSAL_LM_FOR_MODEL_TYPE = {"llama": "LlamaForCausalLM"}


def load_config(model_dir: str | Path) -> dict:
    """``config.json`` of ``model_dir`` as a dict."""
    path = Path(model_dir) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def weight_files(model_dir: str | Path) -> list[Path]:
    """The ``*.safetensors`` files of ``model_dir``, sorted; none is an error."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_dir}: no *.safetensors files")
    return files


def _widen_bf16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (``uint16``) -> the float32 values they stand for, exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _data_offsets(path: Path) -> tuple[int, dict[str, Any]]:
    """Where the data starts and the header: ``{name: {"dtype", "shape", "data_offsets"}}``.

    Only read for files holding BF16 tensors, after ``safe_open`` has validated the header and
    that the data covers every tensor.
    """
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    return 8 + header_len, header


def safetensors_weights(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` for every tensor of one safetensors file; BF16 comes out as float32."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as f:
            raw = None
            for name in f.keys():
                if f.get_slice(name).get_dtype() != "BF16":
                    yield name, f.get_tensor(name)
                    continue
                if raw is None:
                    data_start, header = _data_offsets(path)
                    raw = np.memmap(path, dtype=np.uint8, mode="r")
                begin, end = header[name]["data_offsets"]
                bits = raw[data_start + begin:data_start + end].view("<u2")
                yield name, _widen_bf16(bits).reshape(header[name]["shape"])
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def iterate_weights(model_dir: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` for every tensor of every ``*.safetensors`` file in ``model_dir``."""
    for path in weight_files(model_dir):
        yield from safetensors_weights(path)


def _checkpoint_names(model: Any) -> set[str]:
    """The checkpoint tensors ``model`` needs: its parameter names with each fused parameter
    replaced by the tensors stacked into it (``packed_modules_mapping``)."""
    packed: dict[str, list[str]] = getattr(model, "packed_modules_mapping", {})
    names: set[str] = set()
    for name, _ in model.named_parameters():
        for fused, parts in packed.items():
            if f".{fused}." in name:
                names.update(name.replace(f".{fused}.", f".{part}.") for part in parts)
                break
        else:
            names.add(name)
    return names


def load_model(model_dir: str | Path, dtype: np.dtype | str = np.float32) -> Any:
    """The registered class for ``model_dir``'s architecture, built in ``dtype``, every
    parameter filled from its safetensors files."""
    model_dir = Path(model_dir)
    config_path = model_dir / CONFIG_NAME
    config = load_config(model_dir)
    architectures = config.get("architectures")
    if architectures is None and config.get("model_type") in _CAUSAL_LM_FOR_MODEL_TYPE:
        architectures = [_CAUSAL_LM_FOR_MODEL_TYPE[config["model_type"]]]
    if not isinstance(architectures, list):
        raise ValueError(f"{config_path}: no 'architectures' list (nor a known 'model_type')")
    try:
        model = resolve_model_cls(architectures)(config, dtype)
    except ValueError as exc:
        raise ValueError(f"{config_path}: {exc}") from None

    loaded: set[str] = set()
    for path in weight_files(model_dir):
        try:
            loaded |= model.load_weights(safetensors_weights(path))
        except ValueError as exc:
            if str(path) in str(exc):
                raise
            raise ValueError(f"{path}: {exc} (config: {config_path})") from None

    missing = sorted(_checkpoint_names(model) - loaded)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise ValueError(f"{model_dir}: checkpoint lacks {len(missing)} tensor(s) the model "
                         f"needs: {shown}")
    return model
