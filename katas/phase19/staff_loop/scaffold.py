"""Provided for kata 19-02: hardware figures, the answer shape, and the debugging vocabulary."""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Per-GPU figures the course uses: memory in bytes, HBM bandwidth in bytes per second.
A100_80GB = 80 * GiB
A100_BANDWIDTH = 2.0e12  # phase 00's A100 figure: 8B fp16 decodes at most 125 tok/s
H100_80GB = 80 * GiB
H100_BANDWIDTH = 3.35e12


class Topology(NamedTuple):
    """How a cluster serves one model: ``tp`` GPUs of one node share every layer, ``pp`` such
    groups (on different nodes) each hold a slice of the layers, ``replicas`` independent
    copies of that TP x PP group serve traffic side by side."""

    tp: int
    pp: int
    replicas: int


class Symptom(Enum):
    """The course's debugging catalog (lab 19-02, session 4)."""

    P99_ITL_SPIKES_HOURLY = "p99 inter-token latency spikes every hour"
    THROUGHPUT_DOWN_30_PERCENT_AFTER_MODEL_SWAP = "throughput fell 30% after a model swap"
    ONE_TENANT_COMPLAINS_DASHBOARDS_GREEN = "tenant 7 complains; the dashboards are green"
    SEEDED_REQUESTS_DO_NOT_REPRODUCE = "seeded requests do not reproduce"
    OUTPUTS_DIFFER_ACROSS_TP_SIZES = "outputs differ between TP sizes"
    VLM_TTFT_DOUBLED = "a vision-language model's TTFT doubled"


class Knob(Enum):
    """The first thing to look at or turn, one per mechanism."""

    LONG_PREFILL_TOKEN_THRESHOLD = "long_prefill_token_threshold: cap the prefill tokens per step"
    ATTENTION_BACKEND = "the attention backend line of the startup log (a fallback kernel?)"
    MAX_LORAS = "max_loras: adapter slots per batch (slot thrash)"
    SEED_AND_BATCH_INVARIANCE = "the per-request seed, and whether sampling is batch-invariant"
    TOLERANCE = "no bug: reduction order moved the last ulp; compare with a tolerance"
    IMAGE_SIZE = "image resolution: the image tokens each request brings"
