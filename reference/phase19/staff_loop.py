"""Reference for kata 19-02: the staff loop's capacity arithmetic and triage, as functions."""

from __future__ import annotations

from katas.phase19.staff_loop.scaffold import GiB, KiB, Knob, MiB, Symptom, Topology


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int,
                       dtype_bytes: int) -> int:
    """K and V, in every layer, for every KV head: bytes one token occupies in the cache."""
    for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                        ("head_dim", head_dim), ("dtype_bytes", dtype_bytes)):
        _positive(name, value)
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def sequences_that_fit(free_bytes: float, context_tokens: int, kv_bytes_per_token: int) -> int:
    """Whole sequences of ``context_tokens`` whose KV fits in ``free_bytes`` (floored)."""
    _positive("context_tokens", context_tokens)
    _positive("kv_bytes_per_token", kv_bytes_per_token)
    if free_bytes < 0:
        raise ValueError(f"free_bytes must not be negative, got {free_bytes!r}")
    return int(free_bytes // (context_tokens * kv_bytes_per_token))


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if num_bytes >= scale:
            value = num_bytes / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{num_bytes} B"


def capacity_sentence(kv_bytes_per_token: int, context_tokens: int, free_bytes: int) -> str:
    """The staff sentence: per-token KV, per-sequence KV, sequences that fit."""
    per_sequence = kv_bytes_per_token * context_tokens
    fit = sequences_that_fit(free_bytes, context_tokens, kv_bytes_per_token)
    return (f"{_size(kv_bytes_per_token)} per token, so {context_tokens}-token contexts cost "
            f"{_size(per_sequence)} each, so {_size(free_bytes)} of free HBM holds ~{fit} of them")


def decode_step_floor_s(weight_bytes: float, tp: int, hbm_bytes_per_s: float) -> float:
    """Lower bound on one decode step: every weight byte read once, TP ranks reading in
    parallel (pipeline stages run one after another, so PP does not shorten it)."""
    _positive("weight_bytes", weight_bytes)
    _positive("tp", tp)
    _positive("hbm_bytes_per_s", hbm_bytes_per_s)
    return weight_bytes / tp / hbm_bytes_per_s


def choose_parallelism(weight_bytes: float, gpu_bytes: float, gpus_per_node: int,
                       num_nodes: int, *, max_weight_fraction: float = 0.5,
                       hbm_bytes_per_s: float | None = None,
                       itl_target_s: float | None = None) -> Topology:
    """The smallest model-parallel group that holds the weights (and meets the ITL floor);
    TP inside a node first, PP across nodes only when a whole node is not enough; replicas
    fill the cluster."""
    _positive("weight_bytes", weight_bytes)
    _positive("gpu_bytes", gpu_bytes)
    _positive("gpus_per_node", gpus_per_node)
    _positive("num_nodes", num_nodes)
    if not 0 < max_weight_fraction <= 1:
        raise ValueError(f"max_weight_fraction must be in (0, 1], got {max_weight_fraction!r}")
    if gpus_per_node & (gpus_per_node - 1):
        raise ValueError(f"gpus_per_node must be a power of two, got {gpus_per_node}")
    if (hbm_bytes_per_s is None) != (itl_target_s is None):
        raise ValueError("give hbm_bytes_per_s and itl_target_s together, or neither")

    budget = max_weight_fraction * gpu_bytes
    tp_options = [1 << k for k in range(gpus_per_node.bit_length()) if 1 << k <= gpus_per_node]
    candidates = [(tp, 1) for tp in tp_options]
    candidates += [(gpus_per_node, pp) for pp in range(2, num_nodes + 1)]
    for tp, pp in candidates:
        if weight_bytes / (tp * pp) > budget:
            continue
        if itl_target_s is not None and decode_step_floor_s(
                weight_bytes, tp, hbm_bytes_per_s) > itl_target_s:
            continue
        return Topology(tp, pp, (gpus_per_node * num_nodes) // (tp * pp))
    raise ValueError(
        f"no TP x PP group of {gpus_per_node} GPUs x {num_nodes} nodes holds "
        f"{weight_bytes:.3g} weight bytes within {max_weight_fraction:g} of each GPU"
        + ("" if itl_target_s is None else f" and decodes within {itl_target_s * 1e3:g} ms"))


def replicas_needed(demand: float, per_replica_capacity: float) -> int:
    """Replicas to serve ``demand`` when each serves ``per_replica_capacity`` (rounded up)."""
    _positive("per_replica_capacity", per_replica_capacity)
    if demand < 0:
        raise ValueError(f"demand must not be negative, got {demand!r}")
    return int(-(-demand // per_replica_capacity))


_TRIAGE: dict[Symptom, tuple[tuple[int, ...], Knob]] = {
    Symptom.P99_ITL_SPIKES_HOURLY: ((3, 18), Knob.LONG_PREFILL_TOKEN_THRESHOLD),
    Symptom.THROUGHPUT_DOWN_30_PERCENT_AFTER_MODEL_SWAP: ((4, 6), Knob.ATTENTION_BACKEND),
    Symptom.ONE_TENANT_COMPLAINS_DASHBOARDS_GREEN: ((11,), Knob.MAX_LORAS),
    Symptom.SEEDED_REQUESTS_DO_NOT_REPRODUCE: ((9,), Knob.SEED_AND_BATCH_INVARIANCE),
    Symptom.OUTPUTS_DIFFER_ACROSS_TP_SIZES: ((10,), Knob.TOLERANCE),
    Symptom.VLM_TTFT_DOUBLED: ((13,), Knob.IMAGE_SIZE),
}


def triage(symptom: Symptom) -> tuple[tuple[int, ...], Knob]:
    """The course phases that explain a symptom, and the first knob to check."""
    if not isinstance(symptom, Symptom):
        raise ValueError(f"triage: {symptom!r} is not a Symptom of the catalog")
    return _TRIAGE[symptom]
