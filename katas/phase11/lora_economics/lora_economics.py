"""Kata 11-03 — LoRA economics: what an adapter weighs, how many fit, what a fleet saves, and
what the adapter slots cost the KV cache.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase11/lora_economics``.

Conventions: sizes in bytes are ints; ``GIB = 2**30`` and ``MIB = 2**20`` (binary units, as vLLM's
logs print them). An adapter targets projections of a model; for a projection with
``in_features`` inputs and ``out_features`` outputs a LoRA adapter stores ``A`` of shape
``(rank, in_features)`` and ``B`` of shape ``(out_features, rank)``. The course's model is a 7B
Llama: hidden 4096, 32 layers, q/k/v/o targeted, fp16 (2 bytes), 7,000,000,000 parameters.

Every function refuses a bad argument with one ``ValueError`` whose message names it: counts
(ranks, sizes, layers, targets, dtype bytes, block sizes) must be ints >= 1; ``tenants``,
``num_blocks`` and ``reservation_bytes`` ints >= 0; ratios take numbers > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

GIB = 1 << 30
MIB = 1 << 20


def lora_params_per_layer(in_features: int, out_features: int, rank: int) -> int:
    """Parameters one LoRA adapter stores for one projection (both factors together).

    Example: a 4096 x 4096 projection at rank 16 stores 131,072 (its full weight has 16.8M).
    """
    raise NotImplementedError("lora_params_per_layer: parameters of one projection's adapter")


def adapter_params(hidden: int, num_layers: int, rank: int, num_targets: int = 4) -> int:
    """Parameters of a whole adapter on ``num_targets`` square ``hidden x hidden`` projections in
    each of ``num_layers`` layers. The course's adapter (4096, 32 layers, rank 16) has
    16,777,216."""
    raise NotImplementedError("adapter_params: parameters of a whole adapter")


def adapter_bytes(hidden: int, num_layers: int, rank: int, num_targets: int = 4,
                  dtype_bytes: int = 2) -> int:
    """Bytes of that adapter stored at ``dtype_bytes`` per parameter.

    The course's adapter is the "0.03 GiB" vLLM logged when it loaded (lab 11-02's capture).
    """
    raise NotImplementedError("adapter_bytes: bytes of a whole adapter")


def adapter_bytes_for_shapes(shapes: Sequence[tuple[int, int]], num_layers: int, rank: int,
                             dtype_bytes: int = 2) -> int:
    """Bytes of an adapter whose targets in every layer are ``shapes``: one
    ``(in_features, out_features)`` pair per targeted projection (real models are not square:
    GQA's k/v are narrower, the MLP wider). An empty ``shapes`` is refused."""
    raise NotImplementedError("adapter_bytes_for_shapes: bytes of an adapter on given shapes")


def adapters_per_gib(adapter_size_bytes: int) -> int:
    """How many whole adapters of ``adapter_size_bytes`` fit in one GiB."""
    raise NotImplementedError("adapters_per_gib: whole adapters in a GiB")


def shrink_ratio(base_size: float, adapter_size: float) -> float:
    """How many times smaller the adapter is than the base model (both in the same unit:
    parameters, or bytes at one dtype)."""
    raise NotImplementedError("shrink_ratio: base size over adapter size")


def delta_flops_per_token(in_features: int, out_features: int, rank: int) -> int:
    """FLOPs one token spends on one projection's LoRA delta (the shrink into ``rank``, then the
    expand out of it), counting a multiply-add as two FLOPs."""
    raise NotImplementedError("delta_flops_per_token: FLOPs of one token's shrink and expand")


def engines_needed(tenants: int, max_loras: int) -> int:
    """Engines (one GPU each) that serve ``tenants`` fine-tunes when each engine keeps
    ``max_loras`` adapters active at once; every tenant needs a slot somewhere."""
    raise NotImplementedError("engines_needed: engines for a fleet of tenants")


def gpus_saved(tenants: int, max_loras: int) -> int:
    """GPUs saved against one dedicated GPU per tenant. The course: 100 tenants at
    ``max_loras=8`` save 87."""
    raise NotImplementedError("gpus_saved: GPUs saved against dedicated deployments")


def fleet_bytes(tenants: int, max_loras: int, base_bytes: int,
                adapter_size_bytes: int) -> tuple[int, int]:
    """Weight memory of the whole fleet, as ``(multi_lora, dedicated)``.

    ``multi_lora``: ``engines_needed`` engines, each holding the base weights, plus every
    tenant's adapter once. ``dedicated``: one full fine-tuned copy per tenant.
    """
    raise NotImplementedError("fleet_bytes: fleet weight memory, multi-LoRA vs dedicated")


def slot_reservation_bytes(max_loras: int, max_lora_rank: int, hidden: int, num_layers: int,
                           num_targets: int = 4, dtype_bytes: int = 2) -> int:
    """Bytes an engine sets aside at start-up for its adapter slots: ``max_loras`` slots, each
    able to hold any adapter up to ``max_lora_rank`` (on the square targets of
    ``adapter_bytes``), reserved whether or not an adapter ever loads."""
    raise NotImplementedError("slot_reservation_bytes: memory reserved for adapter slots")


def kv_blocks_left(kv_budget_bytes: int, kv_bytes_per_token: int, block_size: int,
                   reservation_bytes: int = 0) -> int:
    """Whole KV blocks (``block_size`` tokens of ``kv_bytes_per_token`` each) that fit in
    ``kv_budget_bytes`` once ``reservation_bytes`` of adapter slots are taken out of it.
    A reservation larger than the budget is refused."""
    raise NotImplementedError("kv_blocks_left: KV blocks left beside the adapter slots")


def concurrent_sequences(num_blocks: int, block_size: int, seq_len: int) -> int:
    """How many sequences of ``seq_len`` tokens ``num_blocks`` blocks hold at once (a sequence
    owns whole blocks)."""
    raise NotImplementedError("concurrent_sequences: sequences the blocks hold at once")
