"""Tiny builders shared by mini_vllm's tests (one copy of each, imported where needed)."""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput


def greedy(max_tokens: int = 4) -> SamplingParams:
    """The course's deterministic setting: argmax, run exactly max_tokens."""
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def record_schedules(engine: LLMEngine) -> list[SchedulerOutput]:
    """Observe-don't-modify probe: wrap schedule(), keep each output, return it unchanged."""
    outputs: list[SchedulerOutput] = []
    original = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = original()
        outputs.append(out)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    return outputs


def compositions(outputs: Sequence[SchedulerOutput], names: dict[str, str]) -> list[dict[str, int]]:
    """Per-step {name: tokens}, with request ids renamed (ids are process-global)."""
    return [{names[rid]: n for rid, n in out.num_scheduled_tokens.items()} for out in outputs]


def run_all(engine: LLMEngine) -> dict[str, list[int]]:
    """Step until idle; return each request finished on the way as {id: output token ids}."""
    done: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        done.update({r.request_id: r.output_token_ids for r in engine.step()})
    return done


def output_ids(
    engine: LLMEngine, prompts: Sequence[str], params: SamplingParams
) -> list[list[int]]:
    return [r.output_token_ids for r in engine.generate(list(prompts), params)]

