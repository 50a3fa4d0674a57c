"""Kata 10-03 — the TP communication bill: what one all-reduce costs, and 64 of them a step.

Fill in the five bodies; grade them with ``pytest --impl=mine katas/phase10/tp_comm_cost``.

Units: bytes for sizes, seconds for times. A ``Link`` (from the scaffold) gives a latency in
seconds per hop and a bandwidth in *gigabits* per second, one direction. No overlap: a step's
communication waits for its compute and the other way round.
"""

from __future__ import annotations

from katas.phase10.tp_comm_cost.scaffold import NUM_LAYERS_8B, Link


def allreduce_payload_bytes(batch_tokens: int, hidden: int, dtype_bytes: int = 2) -> int:
    """Bytes of the tensor one tensor-parallel all-reduce sums (an integer).

    The tensor is the output of a row-parallel linear layer for the ``batch_tokens`` tokens of
    the step: each rank holds a partial sum of it. Course numbers (8B model, hidden 4096, bf16):
    one decode token is 8,192 bytes; a 2,048-token prefill chunk is 16 MiB.

    Raises ValueError for ``batch_tokens < 0``, ``hidden < 1`` or ``dtype_bytes < 1``.
    """
    raise NotImplementedError("allreduce_payload_bytes: the size of the tensor being summed")


def ring_allreduce_traffic_per_rank(payload_bytes: float, num_ranks: int) -> float:
    """Bytes each of ``num_ranks`` ranks sends during one ring all-reduce (both of its phases).

    A float (it need not be a whole number of bytes for every N). One rank sends nothing; two
    ranks send exactly one payload each; as N grows it approaches, and never reaches, two
    payloads: traffic per rank is nearly flat in N.

    Raises ValueError when ``num_ranks`` is not an integer >= 1 or ``payload_bytes < 0``.
    """
    raise NotImplementedError("ring_allreduce_traffic_per_rank: bytes one rank sends in a ring")


def allreduce_time_s(payload_bytes: float, num_ranks: int, link: Link) -> float:
    """Seconds one ring all-reduce of ``payload_bytes`` takes over ``link``.

    Two terms, added: moving this rank's traffic at the link's bandwidth, and paying the link's
    latency once for every sequential hop of the ring. One rank costs 0 s. With
    ``link.gbit_per_s = math.inf`` only the latency term remains. Course number: an 8 KB decode
    all-reduce over 10 GbE between two ranks is about 107 us, 100 us of it latency.

    Raises ValueError for ``num_ranks`` < 1 (as the traffic does).
    """
    raise NotImplementedError("allreduce_time_s: bandwidth term plus latency term")


def tp_comm_time_per_step(payload_bytes: float, num_ranks: int, link: Link,
                          num_layers: int = NUM_LAYERS_8B) -> float:
    """Seconds of all-reduce in one forward step of a ``num_layers``-layer Llama-style model.

    Every all-reduce of the step has the same payload. Count the all-reduces a decoder layer
    makes under vLLM's column -> row pairing (kata 10-01): the course's 32-layer 8B model makes
    64 a step. Course number: a decode step over 10 GbE at TP=2 pays 6.4 ms of latency alone.

    Raises ValueError for ``num_layers < 0``.
    """
    raise NotImplementedError("tp_comm_time_per_step: all the all-reduces of one step")


def comm_fraction(comm_s: float, compute_s: float) -> float:
    """The share of a whole step that is communication, in [0, 1).

    A step is its compute followed by its communication (no overlap). Course verdicts against
    the 8 ms decode step at TP=2: NVLink under 10% ("noise"), 10 GbE over 40% ("fatal").

    Raises ValueError for ``comm_s < 0`` or ``compute_s <= 0``.
    """
    raise NotImplementedError("comm_fraction: communication's share of the step")
