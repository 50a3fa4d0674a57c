"""Reference for kata 15-01: move a live request, and its real KV, between two engines."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from katas.phase15.kv_handoff.scaffold import (
    DestinationFullError,
    RequestSnapshot,
    flat_kv_caches,
    mark_slots_filled,
)
from mini_vllm.kv_cache import cdiv
from mini_vllm.request import Request, RequestStatus


def _slots(block_ids: list[int], block_size: int, num_tokens: int) -> np.ndarray:
    """Slot of each logical token 0..num_tokens-1 through a block table."""
    positions = np.arange(num_tokens, dtype=np.int64)
    table = np.asarray(block_ids, dtype=np.int64)
    return table[positions // block_size] * block_size + positions % block_size


def _find(engine: Any, request_id: str) -> Request | None:
    scheduler = engine.scheduler
    for request in (*scheduler.running, *scheduler.waiting):
        if request.request_id == request_id:
            return request
    return None


def export_request(engine: Any, request_id: str) -> RequestSnapshot:
    request = _find(engine, request_id)
    if request is None:
        raise ValueError(f"unknown request id {request_id!r} (never added, or already finished)")
    if request not in engine.scheduler.running or request.num_computed_tokens == 0:
        raise ValueError(f"request {request_id!r} is not running (status "
                         f"{request.status.name}): it has no computed KV to ship; add it to "
                         f"the destination as a new request instead")
    num_computed = request.num_computed_tokens
    slots = _slots(engine.kv_cache_manager.get_block_ids(request_id), engine.block_size,
                   num_computed)
    kv = [(k[slots], v[slots]) for k, v in flat_kv_caches(engine)]  # fancy indexing copies
    generator_state = None
    generators = engine.request_generators
    if generators is not None and request_id in generators.generators:
        generator_state = copy.deepcopy(generators.generators[request_id].bit_generator.state)
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=list(request.prompt_token_ids),
        output_token_ids=list(request.output_token_ids),
        num_computed_tokens=num_computed,
        sampling_params=copy.deepcopy(request.sampling_params),
        kv=kv,
        generator_state=generator_state,
    )
    # The source owes the request nothing now: out of the schedule, every block back to the pool.
    engine.abort_request(request_id)
    return snapshot


def _check_snapshot(engine: Any, snapshot: RequestSnapshot) -> None:
    """Every way the snapshot can disagree with the destination, before anything changes."""
    rid = snapshot.request_id
    if _find(engine, rid) is not None:
        raise ValueError(f"request id {rid!r} is already live on the destination")
    num_tokens = len(snapshot.prompt_token_ids) + len(snapshot.output_token_ids)
    if not 1 <= snapshot.num_computed_tokens < num_tokens:
        raise ValueError(f"num_computed_tokens must be in [1, {num_tokens - 1}] for "
                         f"{num_tokens} tokens (the last token is always still to compute), got "
                         f"{snapshot.num_computed_tokens}")
    caches = engine.model_runner.kv_caches
    if len(snapshot.kv) != len(caches):
        raise ValueError(f"the snapshot carries K/V for {len(snapshot.kv)} layers, the "
                         f"destination's model has {len(caches)}")
    for layer, ((k, v), (dest_k, _)) in enumerate(zip(snapshot.kv, caches, strict=True)):
        expected = (snapshot.num_computed_tokens, *dest_k.shape[2:])
        for name, array in (("K", k), ("V", v)):
            if np.shape(array) != expected or np.asarray(array).dtype != dest_k.dtype:
                raise ValueError(f"layer {layer} {name}: shape {np.shape(array)} "
                                 f"{np.asarray(array).dtype}, the destination needs {expected} "
                                 f"{dest_k.dtype} (one row per computed token)")
    if snapshot.generator_state is not None and engine.request_generators is None:
        raise ValueError("the snapshot carries a per-request generator, but the destination "
                         "runs generators='per_call': both engines must use 'per_request'")


def import_request(engine: Any, snapshot: RequestSnapshot) -> None:
    _check_snapshot(engine, snapshot)
    scheduler, kv_manager = engine.scheduler, engine.kv_cache_manager
    num_computed = snapshot.num_computed_tokens
    needed = cdiv(num_computed, engine.block_size)
    free = kv_manager.block_pool.get_num_free_blocks()
    if needed > free:
        raise DestinationFullError(
            f"request {snapshot.request_id!r} needs {needed} blocks for its {num_computed} "
            f"computed tokens; the destination has {free} free")
    if len(scheduler.running) >= scheduler.max_num_seqs:
        raise DestinationFullError(
            f"the destination already runs max_num_seqs={scheduler.max_num_seqs} requests")
    request = Request(snapshot.prompt_token_ids, copy.deepcopy(snapshot.sampling_params),
                      request_id=snapshot.request_id, eos_token_id=engine.tokenizer.eos_token_id,
                      vocab_size=engine.vocab_size)
    request.output_token_ids = list(snapshot.output_token_ids)
    # Admission with prepaid compute: blocks for the computed tokens (hashed, if D caches)...
    blocks = kv_manager.allocate_slots(request, num_computed)
    if blocks is None:  # unreachable after the check above; never continue without blocks
        raise DestinationFullError(f"no room for {needed} blocks")
    request.num_computed_tokens = num_computed
    # ...filled with the shipped K/V, through the destination's own block table.
    slots = _slots(kv_manager.get_block_ids(request.request_id), engine.block_size, num_computed)
    for (k_cache, v_cache), (k, v) in zip(flat_kv_caches(engine), snapshot.kv, strict=True):
        k_cache[slots] = k
        v_cache[slots] = v
    mark_slots_filled(engine, slots, request.all_token_ids[:num_computed])
    if snapshot.generator_state is not None:
        generator = np.random.default_rng()
        generator.bit_generator.state = copy.deepcopy(snapshot.generator_state)
        engine.request_generators.generators[request.request_id] = generator
    request.status = RequestStatus.RUNNING
    scheduler.running.append(request)


def run_to_completion(engine: Any, *, max_steps: int = 100_000) -> dict[str, list[int]]:
    outputs: dict[str, list[int]] = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return outputs
        for request in engine.step():
            outputs[request.request_id] = list(request.output_token_ids)
    raise RuntimeError(f"requests still unfinished after {max_steps} steps")
