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

    Recipe (greedy everywhere: ``temperature=0.0, ignore_eos=True``):

    1. ``LLMEngine(long_prefill_token_threshold=threshold,
       max_num_batched_tokens=max_num_batched_tokens)``.
    2. Add the victim: ``VICTIM_PROMPT`` with ``max_tokens``. Step the engine until the victim
       has its first output token (``engine.get_request(id).output_token_ids``): it is now
       decoding. These steps are not measured.
    3. Add the long request: ``LONG_PROMPT_TOKEN * long_prompt_len`` with
       ``max_tokens=LONG_PROMPT_MAX_TOKENS``.
    4. Wrap ``engine.scheduler.schedule`` with a probe that calls the original, keeps the
       ``SchedulerOutput`` and returns it unchanged. Step until the victim finishes (it comes
       back in the list ``engine.step()`` returns).
    5. ``costs``: for each recorded step that scheduled the victim, that step's
       ``total_num_scheduled_tokens``. ``num_steps``: how many steps you recorded.

    Return ``SpikeProfile(costs, victim's output_token_ids, num_steps)``. Raise ``ValueError``
    when ``max_tokens < 2``: a victim that finishes in its first step is never decoding.
    """
    raise NotImplementedError(
        "decode_step_costs: victim decoding, long prompt arrives, record each victim step's total"
    )


def spike_ratio(costs: Sequence[int]) -> float:
    """How much longer the victim's worst step is than its calmest: ``max(costs) / min(costs)``.

    Raise ``ValueError`` for an empty list or a cost that is not positive.
    """
    raise NotImplementedError("spike_ratio: max(costs) / min(costs), ValueError when empty")
