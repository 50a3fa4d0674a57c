"""Multi-LoRA for mini_vllm: many fine-tunes served over one copy of the base weights.

Upstream twin: ``vllm/lora/``. ``LoRARequest`` names an adapter (``request.py``), ``LoRAModel``
loads a peft checkpoint and ``LoRAModelManager`` keeps the per-slot buffers and the model's LoRA
hooks (``models.py``), ``AdapterSlotCache`` decides which adapters hold the ``max_loras`` slots
(``slots.py``), and ``punica.py`` is the batched multi-adapter matmul. ``tiny_adapters.py``
writes small seeded peft adapters for tests. Turn it on with
``LLMEngine(lora_config=LoRAConfig(max_loras=2, max_lora_rank=8))``.
"""

from mini_vllm.lora.models import LoRAConfig, LoRAModel, LoRAModelManager
from mini_vllm.lora.punica import NO_LORA, add_lora_linear, apply_lora_linear
from mini_vllm.lora.request import LoRARequest
from mini_vllm.lora.slots import AdapterSlotCache

__all__ = [
    "NO_LORA",
    "AdapterSlotCache",
    "LoRAConfig",
    "LoRAModel",
    "LoRAModelManager",
    "LoRARequest",
    "add_lora_linear",
    "apply_lora_linear",
]
