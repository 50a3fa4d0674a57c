"""Reference for kata 03-05 — a decode stream's step costs when a long prompt lands beside it."""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase03.decode_latency_spikes.scaffold import (
    LONG_PROMPT_MAX_TOKENS,
    LONG_PROMPT_TOKEN,
    VICTIM_PROMPT,
    SpikeProfile,
)
from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput


def decode_step_costs(
    threshold: int,
    *,
    long_prompt_len: int = 256,
    max_tokens: int = 16,
    max_num_batched_tokens: int = 2048,
) -> SpikeProfile:
    """Stage the collision and measure every step of it from the victim's seat."""
    if max_tokens < 2:
        raise ValueError(
            f"the victim must still be decoding when the long prompt lands: "
            f"max_tokens must be >= 2, got {max_tokens}"
        )
    engine = LLMEngine(
        long_prefill_token_threshold=threshold, max_num_batched_tokens=max_num_batched_tokens
    )
    outputs: list[SchedulerOutput] = []
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = schedule()
        outputs.append(out)
        return out

    greedy = dict(temperature=0.0, ignore_eos=True)
    victim = engine.add_request(VICTIM_PROMPT, SamplingParams(max_tokens=max_tokens, **greedy))
    # The victim must already be streaming when the long prompt lands: step until its first
    # token exists (one step, unless the threshold chunks its own short prompt too).
    finished: dict[str, list[int]] = {}
    while not engine.get_request(victim).output_token_ids:
        engine.step()

    engine.add_request(
        LONG_PROMPT_TOKEN * long_prompt_len,
        SamplingParams(max_tokens=LONG_PROMPT_MAX_TOKENS, **greedy),
    )
    # Measure from the arrival on: the victim's own prefill step is not part of its stream.
    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    while victim not in finished:
        for request in engine.step():
            finished[request.request_id] = request.output_token_ids
    # A step's cost is everyone's tokens: the victim's next token waits for the whole batch.
    costs = [o.total_num_scheduled_tokens for o in outputs if victim in o.num_scheduled_tokens]
    return SpikeProfile(costs, finished[victim], len(outputs))


def spike_ratio(costs: Sequence[int]) -> float:
    """The victim's worst step relative to its calmest one: ``max(costs) / min(costs)``."""
    if not costs:
        raise ValueError("spike_ratio needs at least one step cost")
    if min(costs) <= 0:
        raise ValueError(f"step costs must be positive, got {list(costs)}")
    return max(costs) / min(costs)
