"""Kata 03-05 — decode-latency spikes, and how chunking kills them. Your work goes here.

A short request is streaming tokens when a long prompt arrives. Measure, from the short
request's seat, how long each of its steps is: the total number of tokens scheduled in that step,
everyone's. Without chunking one step swallows the whole long prefill; with a threshold the same
work is paid in installments.
"""

from __future__ import annotations

from collections.abc import Sequence

# Provided by the lab: the cast of the experiment and the record you return.
from katas.phase03.decode_latency_spikes.scaffold import (  # noqa: F401
    LONG_PROMPT_MAX_TOKENS,
    LONG_PROMPT_TOKEN,
    VICTIM_PROMPT,
    SpikeProfile,
)
from mini_vllm import LLMEngine, SamplingParams  # noqa: F401


def decode_step_costs(
    threshold: int,
    *,
    long_prompt_len: int = 256,
    max_tokens: int = 16,
    max_num_batched_tokens: int = 2048,
) -> SpikeProfile:
    """Stage a long prompt landing on a decoding request; return what the victim went through.

    The experiment, on a fresh ``LLMEngine(long_prefill_token_threshold=threshold,
    max_num_batched_tokens=max_num_batched_tokens)``, every request greedy
    (``temperature=0.0``) and run to exactly its ``max_tokens`` (``ignore_eos=True``):

    - the victim, ``VICTIM_PROMPT`` with ``max_tokens``, is admitted and has its first output
      token (it is decoding) before anything else arrives;
    - then the long request arrives: ``LONG_PROMPT_TOKEN * long_prompt_len`` with
      ``max_tokens=LONG_PROMPT_MAX_TOKENS``;
    - every engine step from that arrival until the step in which the victim finishes is
      measured. The steps before the arrival are not.

    Returns ``SpikeProfile(costs, victim_output_token_ids, num_steps)``: ``costs`` has, for each
    measured step that scheduled the victim, the total number of tokens scheduled in that step
    (everyone's); ``victim_output_token_ids`` is the victim's whole output; ``num_steps`` counts
    the measured steps. Example (defaults): threshold 0 gives costs ``[257, 2, 1 x 13]``,
    threshold 32 gives ``[33 x 8, 2, 1 x 6]``.

    Raises ``ValueError`` when ``max_tokens < 2``: a victim that finishes in its first step is
    never decoding.
    """
    raise NotImplementedError(
        "decode_step_costs: victim decoding, long prompt arrives, record each victim step's total"
    )


def spike_ratio(costs: Sequence[int]) -> float:
    """How many times longer the victim's worst step is than its calmest, as a float.

    ``[257, 2, 1, ...]`` gives 257.0 and ``[33, ..., 2, 1, ...]`` gives 33.0. Raises
    ``ValueError`` for an empty list or a cost that is not positive.
    """
    raise NotImplementedError("spike_ratio: the worst step relative to the calmest one")
