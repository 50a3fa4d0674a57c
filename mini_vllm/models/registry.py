"""Which model class runs a checkpoint: ``config.json``'s ``architectures`` names to classes.

Upstream twin: ``vllm/model_executor/models/registry.py`` (``ModelRegistry``: the built-in table,
``register_model`` for out-of-tree architectures, ``resolve_model_cls``). Upstream imports each
class lazily from a ``(module, class)`` pair; mini_vllm's numpy architectures (Llama, and Mixtral
for phase 07's mixture of experts) are imported directly.

A model class is built as ``cls(config: dict, dtype)`` and offers what ``loader.load_model`` and
the model runner call: ``load_weights``, ``named_parameters``, ``forward``, ``compute_logits``.
"""

from __future__ import annotations

from mini_vllm.models.llama import LlamaForCausalLM
from mini_vllm.models.mixtral import MixtralForCausalLM

_MODELS: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MixtralForCausalLM": MixtralForCausalLM,
}


def register_model(name: str, cls: type) -> None:
    """Run checkpoints whose ``architectures`` list ``name`` with ``cls``; a name already
    registered is taken over, as upstream."""
    _MODELS[name] = cls


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def resolve_model_cls(architectures: list[str]) -> type:
    """The class of the first of ``architectures`` that is registered."""
    for name in architectures:
        if name in _MODELS:
            return _MODELS[name]
    raise ValueError(f"architectures {list(architectures)} are not supported; "
                     f"supported: {', '.join(supported_architectures())}")
