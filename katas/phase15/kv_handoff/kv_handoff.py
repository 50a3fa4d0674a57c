"""Kata 15-01 — KV handoff: move a live request, with its real KV, from one mini_vllm engine to
another, so that it finishes exactly as if it had never moved.

Fill in the three bodies; grade them with ``pytest --impl=mine katas/phase15/kv_handoff``.

Given (``katas/phase15/kv_handoff/scaffold.py``): ``RequestSnapshot`` (what travels),
``DestinationFullError``, ``flat_kv_caches(engine)`` (an engine's per-layer K/V caches viewed as
one row per slot) and ``mark_slots_filled(engine, slots, token_ids)`` (tells the destination's
model runner which slots now hold which tokens' K/V). The engine's parts you will touch:
``engine.scheduler`` (``running``, ``waiting``, ``max_num_seqs``), ``engine.kv_cache_manager``
(``get_block_ids``, ``allocate_slots``, ``block_pool.get_num_free_blocks``),
``engine.block_size``, ``engine.abort_request`` and, for seeded sampling under
``generators="per_request"``, ``engine.request_generators.generators``.

Both engines must run the same model (layers, KV heads, head dim, dtype); their block sizes and
pool sizes may differ.
"""

from __future__ import annotations

from typing import Any

from katas.phase15.kv_handoff.scaffold import (  # noqa: F401  (yours to use)
    DestinationFullError,
    RequestSnapshot,
    flat_kv_caches,
    mark_slots_filled,
)


def export_request(engine: Any, request_id: str) -> RequestSnapshot:
    """Take the running request ``request_id`` out of ``engine`` and return its snapshot.

    The snapshot holds copies (never views of the engine's memory): the prompt and output ids,
    ``num_computed_tokens``, the sampling parameters, the K and V of every computed token of
    every layer in logical token order (``[num_computed_tokens, num_kv_heads, head_dim]``,
    whatever physical blocks they sat in), and the request's own generator state when it has
    one (see ``RequestSnapshot``).

    Afterwards the source owes the request nothing: it is neither running nor waiting there,
    and every block it held is back in the pool (an otherwise idle source reports KV usage
    0.0). Exporting is allowed at any step boundary of a running request: after its prefill,
    mid-decode, or between two chunks of a chunked prefill.

    Errors (``ValueError``, the source unchanged): an unknown id, or a request that is not
    running (a waiting request has no computed KV to ship).
    """
    raise NotImplementedError("export_request: snapshot a running request and release it")


def import_request(engine: Any, snapshot: RequestSnapshot) -> None:
    """Make ``snapshot``'s request a running request of ``engine``, its KV already computed.

    The destination claims exactly ``ceil(num_computed_tokens / block_size)`` of its own
    blocks, holds the shipped K/V in them (read through its own block table, token ``t`` is
    ``snapshot.kv[layer][0 or 1][t]``), and its next step computes only the tokens not yet
    computed: the request joins the running set directly (status ``RUNNING``), it is not
    queued for admission, and nothing is recomputed. When the destination caches prefixes, the
    imported full blocks are registered like blocks it computed itself. A carried generator
    state becomes the request's generator on the destination. The snapshot is not modified and
    can be imported again elsewhere.

    Errors, raised before the destination changes in any way (same free blocks, same running
    and waiting requests, no trace of this one):

    - ``DestinationFullError``: fewer free blocks than the computed tokens need, or
      ``max_num_seqs`` requests already running;
    - ``ValueError``: the id is already live on the destination; the snapshot's K/V does not
      fit the destination's model (number of layers, per-layer shape
      ``[num_computed_tokens, num_kv_heads, head_dim]``, dtype); ``num_computed_tokens`` is not
      between 1 and ``num_tokens - 1``; or it carries a generator state the destination cannot
      use (``generators="per_call"``).
    """
    raise NotImplementedError("import_request: admit a request whose KV arrives prepaid")


def run_to_completion(engine: Any, *, max_steps: int = 100_000) -> dict[str, list[int]]:
    """Step ``engine`` until it has no unfinished request; return ``{request_id: output token
    ids}`` for every request that finished during the call. ``RuntimeError`` if requests are
    still unfinished after ``max_steps`` steps (a request that can never be scheduled)."""
    raise NotImplementedError("run_to_completion: step until every request is done")
