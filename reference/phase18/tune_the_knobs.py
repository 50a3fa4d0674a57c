"""Reference for kata 18-01 — an SLO-constrained grid search over mini_vllm's scheduler knobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from katas.phase18.tune_the_knobs.scaffold import Arrival, Config
from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput

MAX_SIM_STEPS = 10_000  # a run longer than this is a bug, not a workload


@dataclass(frozen=True)
class Metrics:
    """What one run of a workload under one config measured (all counted in engine steps)."""

    ttft_steps: list[int]
    max_step_tokens: int
    total_steps: int

    @property
    def worst_ttft(self) -> int:
        """The longest wait any request had for its first token."""
        return max(self.ttft_steps)


def _check_arrivals(arrivals: Sequence[Arrival]) -> None:
    if not arrivals:
        raise ValueError("arrivals is empty: a workload needs at least one request")
    for i, (step, prompt, max_tokens) in enumerate(arrivals):
        if step < 0:
            raise ValueError(f"arrival {i}: arrival_step must be >= 0, got {step}")
        if not prompt:
            raise ValueError(f"arrival {i}: the prompt is empty")
        if max_tokens < 1:
            raise ValueError(f"arrival {i}: max_tokens must be >= 1, got {max_tokens}")


def simulate(arrivals: Sequence[Arrival], config: Config) -> Metrics:
    """Run ``arrivals`` through a fresh engine built with ``config``; measure it."""
    _check_arrivals(arrivals)
    engine = LLMEngine(**config.engine_kwargs())
    params = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True)
              for _, _, m in arrivals]

    step_tokens: list[int] = []  # the probe: total tokens scheduled, one entry per engine step
    last: list[SchedulerOutput] = []
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = schedule()
        step_tokens.append(out.total_num_scheduled_tokens)
        last[:] = [out]
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]

    pending = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    index_of: dict[str, int] = {}
    first_token_step: dict[int, int] = {}
    step = last_busy = 0
    while pending or engine.has_unfinished_requests():
        if step > MAX_SIM_STEPS:
            raise RuntimeError(f"simulate: still running after {MAX_SIM_STEPS} steps")
        # Requests land before this step's schedule(): an idle engine serves them at once.
        while pending and arrivals[pending[0]][0] == step:
            i = pending.pop(0)
            rid = engine.add_request(arrivals[i][1], params[i])
            index_of[rid] = i
        if engine.has_unfinished_requests():
            engine.step()
            last_busy = step
            for request in last[0].scheduled_requests:
                i = index_of[request.request_id]
                if i not in first_token_step and request.output_token_ids:
                    first_token_step[i] = step
        step += 1

    return Metrics(
        ttft_steps=[first_token_step[i] - arrivals[i][0] for i in range(len(arrivals))],
        max_step_tokens=max(step_tokens),
        total_steps=last_busy + 1,  # the clock starts at step 0, idle steps included
    )


def _rank(config: Config, metrics: Metrics) -> tuple[int, int, int]:
    # Throughput first; ties toward the lower worst TTFT, then the lower spike.
    return metrics.total_steps, metrics.worst_ttft, metrics.max_step_tokens


def grid_search(
    arrivals: Sequence[Arrival],
    budgets: Iterable[int],
    thresholds: Iterable[int],
    spike_slo: int,
    *,
    max_num_seqs: int = 256,
) -> tuple[Config, dict[Config, Metrics]]:
    """Every budget x threshold config, simulated; the best one meeting the spike SLO."""
    budgets, thresholds = list(budgets), list(thresholds)
    if not budgets or not thresholds:
        raise ValueError("grid_search needs at least one budget and one threshold")
    results = {
        config: simulate(arrivals, config)
        for config in (Config(b, t, max_num_seqs) for b in budgets for t in thresholds)
    }
    legal = [(c, m) for c, m in results.items() if m.max_step_tokens <= spike_slo]
    if not legal:
        least = min(m.max_step_tokens for m in results.values())
        raise ValueError(
            f"no config meets the spike SLO max_step_tokens <= {spike_slo}: the smallest worst "
            f"step in the grid is {least} tokens"
        )
    best, _ = min(legal, key=lambda cm: _rank(*cm))  # min keeps the first of equals
    return best, results


def _dominates(a: Metrics, b: Metrics) -> bool:
    pa = (a.total_steps, a.max_step_tokens, a.worst_ttft)
    pb = (b.total_steps, b.max_step_tokens, b.worst_ttft)
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb


def pareto_front(results: Mapping[Config, Metrics]) -> list[Config]:
    """The configs no other config dominates, in ``results`` order."""
    return [c for c, m in results.items()
            if not any(_dominates(other, m) for other in results.values())]

