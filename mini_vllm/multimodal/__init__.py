"""The course's fake-image pipeline (phase 13): images as bytes, expanded into placeholder runs,
encoded by a seeded stand-in, cached by content hash, scheduled under an encoder budget and
spliced into the model's input embeddings.

Opt-in: ``LLMEngine(model=<a real model>, mm_config=MultiModalConfig(...))`` and
``engine.add_mm_request(prompt, params, images=[b"...", ...])``, the prompt holding one
``image_token_id`` marker per image. Without ``mm_config`` nothing here runs.

* ``inputs``: ``PlaceholderRange``, ``MultiModalFeature``, the hash and the token count of a fake
  image (``len(data) // 64 + 1`` tokens).
* ``processing``: ``expand_prompt`` (kata 13-01's signature), ``process_prompt``.
* ``encoder``: ``FakeImageEncoder``, ``merge_multimodal_embeddings``.
* ``encoder_cache``: ``EncoderCacheManager`` and ``plan_encoder_inputs`` (kata 13-03's
  ``plan_chunk``).

Upstream (vLLM v0.22.1): ``vllm/multimodal/``, ``vllm/v1/core/encoder_cache_manager.py``,
``vllm/v1/core/sched/scheduler.py: _try_schedule_encoder_inputs``,
``vllm/v1/core/kv_cache_utils.py: _gen_mm_extra_hash_keys``,
``vllm/model_executor/models/utils.py: merge_multimodal_embeddings``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mini_vllm.multimodal.encoder import FakeImageEncoder, merge_multimodal_embeddings
from mini_vllm.multimodal.encoder_cache import (
    EncoderCacheError,
    EncoderCacheManager,
    plan_encoder_inputs,
)
from mini_vllm.multimodal.inputs import MultiModalFeature, PlaceholderRange
from mini_vllm.multimodal.processing import expand_prompt, process_prompt


@dataclass
class MultiModalConfig:
    """The fake-image pipeline's knobs.

    ``image_token_id``: the prompt's image marker, repeated over each image's run (default 0,
    the byte tokenizer's NUL). ``encoder_budget``: image tokens the encoder may process per step
    (``None``: the engine's ``max_num_batched_tokens``, as upstream's
    ``max_num_encoder_input_tokens``). ``encoder_cache_size``: embeddings the encoder cache holds
    (``None``: the budget). An image longer than either is refused when added. ``expand_prompt``
    and ``plan_chunk``: the expansion and the scheduling rule (katas 13-01 and 13-03 plug theirs
    in).
    """

    image_token_id: int = 0
    encoder_budget: int | None = None
    encoder_cache_size: int | None = None
    expand_prompt: Callable[..., Any] = expand_prompt
    plan_chunk: Callable[..., Any] = plan_encoder_inputs


__all__ = [
    "EncoderCacheError",
    "EncoderCacheManager",
    "FakeImageEncoder",
    "MultiModalConfig",
    "MultiModalFeature",
    "PlaceholderRange",
    "expand_prompt",
    "merge_multimodal_embeddings",
    "plan_encoder_inputs",
    "process_prompt",
]
