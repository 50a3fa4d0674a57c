"""Reference for kata 11-03: the multi-tenant LoRA arithmetic, in exact integers where it can be."""

from __future__ import annotations

from collections.abc import Sequence

GIB = 1 << 30
MIB = 1 << 20


def _count(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return value


def lora_params_per_layer(in_features: int, out_features: int, rank: int) -> int:
    _count("in_features", in_features)
    _count("out_features", out_features)
    _count("rank", rank)
    # A is (rank, in): the shrink; B is (out, rank): the expand. B @ A is never stored.
    return rank * in_features + out_features * rank


def adapter_params(hidden: int, num_layers: int, rank: int, num_targets: int = 4) -> int:
    _count("num_layers", num_layers)
    _count("num_targets", num_targets)
    return lora_params_per_layer(hidden, hidden, rank) * num_targets * num_layers


def adapter_bytes(hidden: int, num_layers: int, rank: int, num_targets: int = 4,
                  dtype_bytes: int = 2) -> int:
    _count("dtype_bytes", dtype_bytes)
    return adapter_params(hidden, num_layers, rank, num_targets) * dtype_bytes


def adapter_bytes_for_shapes(shapes: Sequence[tuple[int, int]], num_layers: int, rank: int,
                             dtype_bytes: int = 2) -> int:
    if not shapes:
        raise ValueError("shapes must list at least one (in_features, out_features) target")
    _count("num_layers", num_layers)
    _count("dtype_bytes", dtype_bytes)
    per_layer = sum(lora_params_per_layer(n_in, n_out, rank) for n_in, n_out in shapes)
    return per_layer * num_layers * dtype_bytes


def adapters_per_gib(adapter_size_bytes: int) -> int:
    _count("adapter_size_bytes", adapter_size_bytes)
    return GIB // adapter_size_bytes  # whole adapters only


def shrink_ratio(base_size: float, adapter_size: float) -> float:
    return _positive("base_size", base_size) / _positive("adapter_size", adapter_size)


def delta_flops_per_token(in_features: int, out_features: int, rank: int) -> int:
    # shrink: rank x in multiply-adds, expand: out x rank; two FLOPs each.
    return 2 * lora_params_per_layer(in_features, out_features, rank)


def engines_needed(tenants: int, max_loras: int) -> int:
    _count("tenants", tenants, minimum=0)
    _count("max_loras", max_loras)
    return -(-tenants // max_loras)  # a partly filled engine is still an engine


def gpus_saved(tenants: int, max_loras: int) -> int:
    return tenants - engines_needed(tenants, max_loras)


def fleet_bytes(tenants: int, max_loras: int, base_bytes: int,
                adapter_size_bytes: int) -> tuple[int, int]:
    _count("base_bytes", base_bytes)
    _count("adapter_size_bytes", adapter_size_bytes)
    engines = engines_needed(tenants, max_loras)
    shared = engines * base_bytes + tenants * adapter_size_bytes
    dedicated = tenants * base_bytes
    return shared, dedicated


def slot_reservation_bytes(max_loras: int, max_lora_rank: int, hidden: int, num_layers: int,
                           num_targets: int = 4, dtype_bytes: int = 2) -> int:
    _count("max_loras", max_loras)
    # Every slot is sized for the largest rank allowed, whatever the loaded adapters use.
    return max_loras * adapter_bytes(hidden, num_layers, max_lora_rank, num_targets, dtype_bytes)


def kv_blocks_left(kv_budget_bytes: int, kv_bytes_per_token: int, block_size: int,
                   reservation_bytes: int = 0) -> int:
    _count("kv_budget_bytes", kv_budget_bytes)
    _count("kv_bytes_per_token", kv_bytes_per_token)
    _count("block_size", block_size)
    _count("reservation_bytes", reservation_bytes, minimum=0)
    if reservation_bytes > kv_budget_bytes:
        raise ValueError(f"reservation_bytes ({reservation_bytes}) exceeds the kv_budget_bytes "
                         f"({kv_budget_bytes}): the adapter slots do not fit")
    block_bytes = kv_bytes_per_token * block_size
    return (kv_budget_bytes - reservation_bytes) // block_bytes


def concurrent_sequences(num_blocks: int, block_size: int, seq_len: int) -> int:
    _count("num_blocks", num_blocks, minimum=0)
    _count("block_size", block_size)
    _count("seq_len", seq_len)
    blocks_per_sequence = -(-seq_len // block_size)  # a partial last block is a whole block
    return num_blocks // blocks_per_sequence
