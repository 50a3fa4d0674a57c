"""Provided for kata 15-01: the snapshot that travels, the error a full destination raises, and
two adapters onto mini_vllm's model runner (its cache views and its slot fingerprints).

``RequestSnapshot`` is plain data (lists, ints, numpy arrays, a ``SamplingParams`` and an
optional dict), so it pickles: what crosses the wire between P and D is exactly this object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mini_vllm.request import SamplingParams


class DestinationFullError(RuntimeError):
    """The destination engine cannot take an imported request: not enough free KV blocks for
    the computed tokens, or no free seat (``max_num_seqs`` requests already running). Raised by
    ``import_request`` before it changes anything, so the caller can pick another engine."""


@dataclass
class RequestSnapshot:
    """Everything a live request is, in a form that survives leaving its engine.

    ``kv[layer] = (K, V)``, each ``[num_computed_tokens, num_kv_heads, head_dim]``: row ``t``
    is the K (or V) of token ``t`` of ``prompt_token_ids + output_token_ids``, in logical token
    order. Block ids never travel: the destination's pool hands out its own.

    ``generator_state``: the ``bit_generator.state`` of the request's own random generator when
    the source engine runs ``generators="per_request"`` and the request is seeded at
    temperature > 0; ``None`` otherwise (greedy, unseeded, or the per-call sampler, which
    re-seeds from ``sampling_params.seed`` at every draw).
    """

    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    num_computed_tokens: int
    sampling_params: SamplingParams
    kv: list[tuple[np.ndarray, np.ndarray]]
    generator_state: dict[str, Any] | None = None

    def payload_bytes(self) -> int:
        """The freight: bytes of every K and V array (kata 15-03's ``kv_payload_bytes``)."""
        return int(sum(k.nbytes + v.nbytes for k, v in self.kv))


def flat_kv_caches(engine: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The engine's paged KV cache, per layer ``(K, V)``, each viewed flat as
    ``[num_blocks * block_size, num_kv_heads, head_dim]``: row ``s`` is slot ``s``, which is
    offset ``s % block_size`` of physical block ``s // block_size``. Views, not copies: writing
    into them writes the engine's cache. Empty for the toy model, which keeps no K/V."""
    flat = []
    for k, v in engine.model_runner.kv_caches:
        flat.append((k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:])))
    return flat


def mark_slots_filled(engine: Any, slots: Sequence[int] | np.ndarray,
                      token_ids: Sequence[int]) -> None:
    """Tell the engine's model runner that ``slots[i]`` now holds the K/V of ``token_ids[i]`` at
    position ``i``.

    mini_vllm's runner fingerprints every slot it writes and, before each step, checks that
    every request's context reads back as its own tokens (``KVCacheError`` otherwise). K/V that
    arrives from another engine was written by nobody the runner saw, so an import records it
    here, for exactly the slots it filled.
    """
    slots = np.asarray(slots, dtype=np.int64)
    if len(slots) != len(token_ids):
        raise ValueError(f"{len(slots)} slots for {len(token_ids)} tokens")
    runner = engine.model_runner
    runner.slot_token_ids[slots] = np.asarray(token_ids, dtype=np.int64)
    runner.slot_positions[slots] = np.arange(len(slots), dtype=np.int64)
