"""LoRARequest: which adapter a request runs with.

Upstream twin: ``vllm/lora/request.py: LoRARequest`` (``lora_name``, ``lora_int_id``,
``lora_path``). As upstream, ``lora_int_id`` is the adapter's identity in the engine (slot
bookkeeping, the scheduler's ``max_loras`` count, the prefix-cache hash) and must be >= 1: id 0
means "the base model", which a request says by passing no ``LoRARequest`` at all.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LoRARequest:
    """An adapter by name, id and path (a peft directory: ``adapter_config.json`` +
    ``adapter_model.safetensors``). ``ValueError`` for an empty name, an id below 1, or a path
    that is not a str / ``os.PathLike``.

    One engine serves one adapter per id: a second request naming the same id with another name
    or path is refused by the engine (the id is what slots and block hashes key on).
    """

    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise ValueError(f"lora_name must be a non-empty str, got {self.lora_name!r}")
        if (not isinstance(self.lora_int_id, numbers.Integral) or isinstance(self.lora_int_id, bool)
                or self.lora_int_id < 1):
            raise ValueError(f"lora_int_id must be an int >= 1 (0 is the base model: pass no "
                             f"LoRARequest for it), got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, (str, os.PathLike)):
            raise ValueError(f"lora_path must be a str or a path, got {self.lora_path!r}")
        object.__setattr__(self, "lora_int_id", int(self.lora_int_id))
        object.__setattr__(self, "lora_path", os.fspath(self.lora_path))

    @property
    def adapter_id(self) -> int:
        """Upstream's alias for ``lora_int_id``."""
        return self.lora_int_id
