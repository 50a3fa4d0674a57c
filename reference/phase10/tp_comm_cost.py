"""Reference for kata 10-03: the bill for tensor parallelism's all-reduces.

A row-parallel linear leaves each rank with a partial sum of the whole activation; one
all-reduce per such layer adds the partials up. A Llama block has two of them (attention's
output projection and the MLP's down projection), so an ``L``-layer model all-reduces ``2 L``
times a step. A ring all-reduce moves ``2 (N - 1) / N`` payloads out of every rank in
``2 (N - 1)`` hops; its time is a bandwidth term plus a latency term.
"""

from __future__ import annotations

from katas.phase10.tp_comm_cost.scaffold import NUM_LAYERS_8B, Link

ALLREDUCES_PER_LAYER = 2  # attention out-proj + MLP down-proj: the two RowParallelLinears


def _check_ranks(num_ranks: int) -> None:
    if isinstance(num_ranks, bool) or not isinstance(num_ranks, int) or num_ranks < 1:
        raise ValueError(f"num_ranks must be an integer >= 1, got {num_ranks!r}")


def allreduce_payload_bytes(batch_tokens: int, hidden: int, dtype_bytes: int = 2) -> int:
    """Bytes of the activation one all-reduce sums: one row of ``hidden`` values per token."""
    if batch_tokens < 0 or hidden < 1 or dtype_bytes < 1:
        raise ValueError(f"need batch_tokens >= 0, hidden >= 1, dtype_bytes >= 1; got "
                         f"{batch_tokens}, {hidden}, {dtype_bytes}")
    return batch_tokens * hidden * dtype_bytes


def ring_allreduce_traffic_per_rank(payload_bytes: float, num_ranks: int) -> float:
    """Bytes each rank sends in a ring all-reduce: ``2 (N - 1) / N`` payloads."""
    _check_ranks(num_ranks)
    if payload_bytes < 0:
        raise ValueError(f"payload_bytes must be >= 0, got {payload_bytes}")
    # Reduce-scatter: N - 1 sends of one 1/N chunk; all-gather: N - 1 more.
    return 2 * (num_ranks - 1) * payload_bytes / num_ranks


def allreduce_time_s(payload_bytes: float, num_ranks: int, link: Link) -> float:
    """Seconds for one ring all-reduce: traffic over bandwidth plus one latency per hop."""
    traffic = ring_allreduce_traffic_per_rank(payload_bytes, num_ranks)
    bytes_per_s = link.gbit_per_s * 1e9 / 8  # links are sold in bits
    bandwidth_term = traffic / bytes_per_s
    hops = 2 * (num_ranks - 1)
    latency_term = hops * link.latency_s
    return bandwidth_term + latency_term


def tp_comm_time_per_step(payload_bytes: float, num_ranks: int, link: Link,
                          num_layers: int = NUM_LAYERS_8B) -> float:
    """Seconds of all-reduce in one forward step: two all-reduces in every layer."""
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}")
    per_step = ALLREDUCES_PER_LAYER * num_layers
    return per_step * allreduce_time_s(payload_bytes, num_ranks, link)


def comm_fraction(comm_s: float, compute_s: float) -> float:
    """Share of a step spent communicating, when communication does not overlap compute."""
    if comm_s < 0 or compute_s <= 0:
        raise ValueError(f"need comm_s >= 0 and compute_s > 0, got {comm_s}, {compute_s}")
    step_s = compute_s + comm_s
    return comm_s / step_s
