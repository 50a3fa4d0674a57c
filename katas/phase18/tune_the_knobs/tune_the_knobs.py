"""Kata 18-01 — Tune the Knobs: an SLO-constrained grid search on mini_vllm.

Your work: measure a workload (an arrival schedule) under one scheduler config, then search a
budget x threshold grid for the best config that keeps every step under a spike SLO, and find
the grid's Pareto front. The knobs (``Config``), the arrival format and the picture are in
``katas.phase18.tune_the_knobs.scaffold``; the engine is ``mini_vllm.LLMEngine``.

Everything is counted in engine steps. The clock starts at step 0; step ``s`` is one call of
``engine.step()`` when the engine has work, an idle tick when it has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from katas.phase18.tune_the_knobs.scaffold import Arrival, Config


@dataclass(frozen=True)
class Metrics:
    """What one run of a workload under one config measured (all counted in engine steps).

    - ``ttft_steps``: one entry per arrival, in the order of the ``arrivals`` given to
      ``simulate``: the step in which the request got its first output token minus its
      ``arrival_step``. Queueing counts: a request that waits for a seat waits in its TTFT. An
      idle engine serving a short prompt gives 0 (the token comes in the arrival step itself).
    - ``max_step_tokens``: the largest total number of tokens any one step scheduled, over all
      requests in it (prefill chunks and decodes alike): the proxy for the worst inter-token
      stall a streaming user feels.
    - ``total_steps``: the length of the schedule on the clock that starts at step 0: the index
      of the last step that did any work, plus one (idle ticks before or between arrivals
      count). Fewer steps = more throughput at a fixed cost per step.
    """

    ttft_steps: list[int]
    max_step_tokens: int
    total_steps: int

    @property
    def worst_ttft(self) -> int:
        """The longest wait any request had for its first token: the largest ``ttft_steps``."""
        raise NotImplementedError("Metrics.worst_ttft: the longest wait for a first token")


def simulate(arrivals: Sequence[Arrival], config: Config) -> Metrics:
    """Run ``arrivals`` through a fresh ``LLMEngine(**config.engine_kwargs())`` and measure it.

    ``arrivals``: ``(arrival_step, prompt, max_tokens)`` triples, in any order. A request is
    added at its arrival step, before that step's schedule (so an idle engine serves it in that
    very step), with greedy ``SamplingParams(max_tokens=..., temperature=0.0, ignore_eos=True)``.
    The run ends when every request has arrived and finished. The engine must behave exactly as
    without you watching: observe it, do not change what it schedules.

    Returns the ``Metrics`` of the run (see its docstring for each field's definition).

    Worked numbers (``Config(2048)``, no threshold): two 64-token prompts arriving at step 0
    with ``max_tokens=4`` run in 4 steps; the first step schedules 128 tokens; both TTFTs are 0.

    Raises ``ValueError`` naming the problem for an empty ``arrivals``, a negative arrival step,
    an empty prompt or ``max_tokens < 1``.
    """
    raise NotImplementedError("simulate: run an arrival schedule and measure TTFT, spike, steps")


def grid_search(
    arrivals: Sequence[Arrival],
    budgets: Iterable[int],
    thresholds: Iterable[int],
    spike_slo: int,
    *,
    max_num_seqs: int = 256,
) -> tuple[Config, dict[Config, Metrics]]:
    """Simulate every ``Config(budget, threshold, max_num_seqs)`` and pick the best legal one.

    Returns ``(best, results)``: ``results`` maps every config of the grid to its ``Metrics``,
    budgets in the outer loop, thresholds in the inner one (in the order given); ``best`` is the
    chosen config.

    The SLO is a hard constraint: a config is legal only if its ``max_step_tokens <=
    spike_slo``. Among legal configs, fewest ``total_steps`` wins; a tie goes to the lower
    ``worst_ttft``, then to the lower ``max_step_tokens``, then to the config met first in grid
    order.

    Raises ``ValueError`` when no config of the grid meets the SLO (never the least-bad
    violation), and when ``budgets`` or ``thresholds`` is empty.
    """
    raise NotImplementedError("grid_search: best throughput among configs meeting the spike SLO")


def pareto_front(results: Mapping[Config, Metrics]) -> list[Config]:
    """The configs of ``results`` that no other config dominates, in ``results`` order.

    All three objectives are minimised: ``total_steps``, ``max_step_tokens`` and
    ``worst_ttft``. A config dominates another when it is no worse in all three and better in at
    least one; two configs with equal metrics do not dominate each other (both stay or both go).
    """
    raise NotImplementedError("pareto_front: the configs no other config dominates")
