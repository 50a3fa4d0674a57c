"""Kata 19-02 — the mock staff loop, graded: capacity arithmetic and symptom triage.

Fill in the functions; grade them with ``pytest --impl=mine katas/phase19/staff_loop``.

Sizes are bytes (``scaffold`` has ``KiB``/``MiB``/``GiB`` = 2**10/2**20/2**30 and the A100/H100
figures), times seconds. Weight bytes are parameters x dtype bytes in decimal units, as model
cards quote them (70B fp16 = 140e9 bytes). Your kata 00-02 (``kv_memory_calculator``) already
has the KV formula: reuse it or derive it again — a staff answer derives it cold.
"""

from __future__ import annotations

from katas.phase19.staff_loop.scaffold import Knob, Symptom, Topology


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int,
                       dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies across the whole model.

    Llama-3 8B (32 layers, 8 KV heads, head dim 128, fp16) -> 131,072 (128 KiB); Llama-3 70B
    (80 layers, same heads) -> 320 KiB. ``ValueError`` naming the argument when one is not
    positive.
    """
    raise NotImplementedError("kv_bytes_per_token: bytes of K/V one token occupies")


def sequences_that_fit(free_bytes: float, context_tokens: int, kv_bytes_per_token: int) -> int:
    """How many whole sequences of ``context_tokens`` tokens have room for their KV in
    ``free_bytes`` (a part of a sequence serves nobody). 8 GiB, 2,048 tokens, 128 KiB -> 32.
    ``ValueError`` for ``context_tokens`` or ``kv_bytes_per_token`` not positive (message names
    it) or ``free_bytes`` negative (message mentions "free")."""
    raise NotImplementedError("sequences_that_fit: whole sequences in the free memory")


def capacity_sentence(kv_bytes_per_token: int, context_tokens: int, free_bytes: int) -> str:
    """The course's staff sentence, with your numbers:

    ``"128 KiB per token, so 2048-token contexts cost 256 MiB each, so 8 GiB of free HBM holds
    ~32 of them"``

    Sizes in the largest binary unit (GiB, MiB, KiB, else B) in which they are at least 1,
    written as a whole number when exact, else with one decimal (``"1.5 GiB"``); the count is
    ``sequences_that_fit``.
    """
    raise NotImplementedError("capacity_sentence: say the numbers out loud")


def decode_step_floor_s(weight_bytes: float, tp: int, hbm_bytes_per_s: float) -> float:
    """The shortest possible decode step (the ITL floor): decode is memory-bound, so a step
    takes at least the time to read every weight once; ``tp`` ranks each read their share at
    the same time. 8B fp16 (16e9 bytes) on one A100 (2e12 B/s) -> 0.008 s, phase 00's 125 tok/s.
    ``ValueError`` for a non-positive argument."""
    raise NotImplementedError("decode_step_floor_s: the bandwidth floor of one decode step")


def choose_parallelism(weight_bytes: float, gpu_bytes: float, gpus_per_node: int,
                       num_nodes: int, *, max_weight_fraction: float = 0.5,
                       hbm_bytes_per_s: float | None = None,
                       itl_target_s: float | None = None) -> Topology:
    """Place one model on ``num_nodes`` nodes of ``gpus_per_node`` GPUs; return
    ``Topology(tp, pp, replicas)``.

    The rule (this kata's, stated so it can be graded):

    * a group of ``tp x pp`` GPUs fits when the weights per GPU, ``weight_bytes / (tp * pp)``,
      are at most ``max_weight_fraction * gpu_bytes`` (the rest is for KV and activations);
    * when ``itl_target_s`` is given, the group must also meet it:
      ``decode_step_floor_s(weight_bytes, tp, hbm_bytes_per_s) <= itl_target_s`` — only TP
      shortens a step, pipeline stages run one after another;
    * TP stays inside a node (a power of two up to ``gpus_per_node``); PP spans nodes and is
      used only with a full node of TP. Take the first group that fits in the order
      ``tp = 1, 2, 4, ... gpus_per_node`` (``pp = 1``), then ``pp = 2, 3, ... num_nodes`` (``tp =
      gpus_per_node``): the smallest group, so the most replicas;
    * ``replicas`` = all GPUs // (``tp * pp``).

    Scenario (a), 70B fp16 on 2 nodes of 8 A100-80GB: ``Topology(4, 1, 4)``.
    ``ValueError`` when no group works, for ``gpus_per_node`` not a power of two (message says
    "power of two"), for non-positive sizes, and when only one of ``hbm_bytes_per_s`` /
    ``itl_target_s`` is given.
    """
    raise NotImplementedError("choose_parallelism: TP inside a node, PP across, replicas")


def replicas_needed(demand: float, per_replica_capacity: float) -> int:
    """Replicas to serve ``demand`` (concurrent sequences, requests/s, ...) when each replica
    serves ``per_replica_capacity`` of it: 1,000 / 250 -> 4, 1,001 / 250 -> 5, 0 -> 0.
    ``ValueError`` for a capacity that is not positive or a negative demand."""
    raise NotImplementedError("replicas_needed: replicas that cover the demand")


def triage(symptom: Symptom) -> tuple[tuple[int, ...], Knob]:
    """The debugging session: ``(phases, knob)`` for a ``Symptom`` of the course's catalog.

    ``phases`` are the course phases whose mechanism explains it, ascending (the course names
    one or two); ``knob`` is the first thing to check or turn, one of ``Knob``. For example,
    seeded requests that do not reproduce -> ``((9,), Knob.SEED_AND_BATCH_INVARIANCE)``.
    ``ValueError`` for anything that is not a ``Symptom``.
    """
    raise NotImplementedError("triage: symptom to phases and the first knob")
