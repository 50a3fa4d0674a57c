"""Spec for kata 18-01: measure an arrival schedule on mini_vllm, search the knobs under an SLO."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from katas.phase18.tune_the_knobs.scaffold import Config, draw_pareto
from mini_vllm import LLMEngine
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.pareto import PNG_SIZE

pytestmark = pytest.mark.cpu_ok

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_STEPS = 300  # per engine; every workload below finishes in under 30

# A 24-token decode stream (8-token prompt, step 0) and two fat 64-token prompts landing at
# step 1, while the stream decodes. Distinct letters: no prefix-cache sharing between them.
STREAM = [(0, "d" * 8, 24), (1, "A" * 64, 4), (1, "B" * 64, 4)]
LONELY = [(0, "A" * 64, 4)]  # one fat prompt, nothing to hide its chunks behind
FAT = [(0, "A" * 64, 4), (0, "B" * 64, 4)]  # two fat prompts at once, short outputs
QUEUE = [(0, "a" * 8, 4), (0, "b" * 8, 4), (1, "c" * 8, 4)]  # three short requests

BUDGETS = [40, 64, 2048]
THRESHOLDS = [0, 32]
GRID = [Config(b, t) for b in BUDGETS for t in THRESHOLDS]  # the lab's 6 configs


@pytest.fixture(autouse=True)
def bounded_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail at once if one engine is stepped MAX_STEPS times (a loop that never ends must not
    spin until the time limit)."""
    step = LLMEngine.step
    counts: dict[int, int] = {}

    def bounded_step(self):  # type: ignore[no-untyped-def]
        counts[id(self)] = counts.get(id(self), 0) + 1
        if counts[id(self)] > MAX_STEPS:
            raise AssertionError(
                f"one engine was stepped {MAX_STEPS} times for a workload that needs under 30 "
                f"steps: stop once every request has arrived and finished"
            )
        return step(self)

    monkeypatch.setattr(LLMEngine, "step", bounded_step)


def _simulate(impl, arrivals, config: Config):  # type: ignore[no-untyped-def]
    """``impl.simulate``, checked to return Metrics with the three fields of the right types."""
    metrics = impl.simulate(arrivals, config)
    assert isinstance(metrics, impl.Metrics), (
        f"simulate returns a Metrics, got {type(metrics).__name__}: {metrics!r}"
    )
    assert isinstance(metrics.ttft_steps, list) and len(metrics.ttft_steps) == len(arrivals), (
        f"ttft_steps holds one entry per arrival ({len(arrivals)}), got {metrics.ttft_steps!r}"
    )
    return metrics


def _search(impl, arrivals, slo: int):  # type: ignore[no-untyped-def]
    result = impl.grid_search(arrivals, BUDGETS, THRESHOLDS, slo)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"grid_search returns (best config, results), got {result!r}"
    )
    best, results = result
    assert list(results) == GRID, (
        f"results maps every config of the grid, budgets outer, thresholds inner: expected "
        f"{[c.label for c in GRID]}, got {[getattr(c, 'label', c) for c in results]}"
    )
    return best, results


def test_throughput_more_budget_never_more_steps(impl) -> None:
    budgets = [16, 32, 40, 64, 128, 2048]
    steps = [_simulate(impl, FAT, Config(b)).total_steps for b in budgets]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False)), (
        f"a bigger token budget must never lengthen the schedule; total_steps for budgets "
        f"{budgets}: {steps}"
    )
    assert steps == [12, 8, 7, 6, 4, 4], (
        f"two 64-token prompts with max_tokens=4, budgets {budgets}: expected total_steps "
        f"[12, 8, 7, 6, 4, 4], got {steps}"
    )


def test_spike_threshold_is_per_request_budget_is_global(impl) -> None:
    wide = _simulate(impl, STREAM, Config(2048, 0))
    chunked = _simulate(impl, STREAM, Config(2048, 32))
    assert wide.max_step_tokens == 129, (
        f"without a threshold step 1 schedules both fat prompts whole plus the stream's decode: "
        f"64 + 64 + 1 = 129 tokens, got max_step_tokens={wide.max_step_tokens}"
    )
    assert chunked.max_step_tokens == 65, (
        f"threshold=32 caps each request, not the step: two 32-token chunks + one decode = 65 "
        f"tokens in one step, got max_step_tokens={chunked.max_step_tokens} (count every "
        f"request's tokens in a step, decodes included)"
    )
    for threshold in THRESHOLDS:
        capped = _simulate(impl, STREAM, Config(40, threshold))
        assert capped.max_step_tokens == 40, (
            f"only the budget caps a whole step: budget=40, threshold={threshold} gives a worst "
            f"step of exactly 40 tokens, got {capped.max_step_tokens}"
        )
    assert (wide.total_steps, chunked.total_steps) == (24, 24), (
        f"the 24-token decode stream sets the schedule's length and hides the chunks: 24 steps "
        f"with and without threshold=32, got {wide.total_steps} and {chunked.total_steps}"
    )
    alone, alone_chunked = (_simulate(impl, LONELY, Config(2048, t)) for t in (0, 32))
    assert (alone.total_steps, alone_chunked.total_steps) == (4, 5), (
        f"a lonely 64-token prompt (max_tokens=4) has nothing to hide behind: 4 steps whole, 5 "
        f"when chunked at 32, got {alone.total_steps} and {alone_chunked.total_steps}"
    )


def test_queueing_shows_up_in_ttft(impl) -> None:
    one_seat = _simulate(impl, QUEUE, Config(2048, 0, max_num_seqs=1))
    assert one_seat.ttft_steps == [0, 4, 7], (
        f"max_num_seqs=1, three 8-token requests (max_tokens=4) arriving at steps 0, 0, 1: each "
        f"waits for the one before it to finish, so TTFT = [0, 4, 7] steps from arrival, got "
        f"{one_seat.ttft_steps} (TTFT counts from arrival, not from admission)"
    )
    roomy = _simulate(impl, QUEUE, Config(2048, 0))
    assert roomy.ttft_steps == [0, 0, 0], (
        f"with 256 seats nobody queues: TTFT [0, 0, 0], got {roomy.ttft_steps}"
    )


def test_ttft_is_measured_from_arrival(impl) -> None:
    late = _simulate(impl, [(5, "a" * 8, 3)], Config(2048))
    assert late.ttft_steps == [0], (
        f"an idle engine serves a short prompt's first token in its arrival step: TTFT 0, got "
        f"{late.ttft_steps} (add a request before the schedule of its arrival step; TTFT is "
        f"first-token step minus arrival step)"
    )
    split = _simulate(impl, [(2, "A" * 64, 2)], Config(40))
    assert split.ttft_steps == [1], (
        f"a 64-token prompt on a 40-token budget needs two steps of prefill: TTFT 1, got "
        f"{split.ttft_steps}"
    )


def test_ttft_follows_the_order_of_the_arrivals_given(impl) -> None:
    shuffled = [QUEUE[2], QUEUE[0], QUEUE[1]]
    metrics = _simulate(impl, shuffled, Config(2048, 0, max_num_seqs=1))
    assert metrics.ttft_steps == [7, 0, 4], (
        f"ttft_steps[i] belongs to arrivals[i] as given: the step-1 arrival listed first waits 7 "
        f"steps, expected [7, 0, 4], got {metrics.ttft_steps}"
    )


def test_total_steps_count_from_step_zero(impl) -> None:
    metrics = _simulate(impl, [(3, "a" * 8, 2), (10, "b" * 8, 2)], Config(2048))
    assert metrics.total_steps == 12, (
        f"requests at steps 3 and 10, two tokens each: the last busy step is 11, so the clock "
        f"that starts at 0 reads total_steps = 12 (idle ticks count), got {metrics.total_steps}"
    )


def test_worst_ttft_is_the_longest_wait(impl) -> None:
    metrics = impl.Metrics(ttft_steps=[0, 4, 7, 2], max_step_tokens=8, total_steps=12)
    assert metrics.worst_ttft == 7, f"worst_ttft of [0, 4, 7, 2] is 7, got {metrics.worst_ttft}"


def test_bad_arrivals_are_refused(impl) -> None:
    cases = {
        "an empty workload": [],
        "a negative arrival step": [(-1, "a" * 8, 2)],
        "max_tokens=0": [(0, "a" * 8, 0)],
        "an empty prompt": [(0, "", 2)],
    }
    for what, arrivals in cases.items():
        with expect_raises(ValueError, f"simulate must refuse {what}"):
            impl.simulate(arrivals, Config(2048))


def test_grid_search_respects_the_slo(impl) -> None:
    best, results = _search(impl, FAT, 64)
    fastest = min(results, key=lambda c: results[c].total_steps)
    assert results[fastest].max_step_tokens > 64 and fastest != best, (
        f"the throughput-optimal config {fastest.label} breaks the spike SLO of 64 and must be "
        f"rejected, got best={best!r}"
    )
    assert best == Config(64, 32), (
        f"two fat prompts, SLO max_step_tokens <= 64: budget=64 thr=32 is legal (a worst step "
        f"of exactly 64 meets the SLO) and runs in 5 steps, the fewest of the legal configs; "
        f"got {best!r}"
    )
    assert results[best].max_step_tokens <= 64, f"the chosen config breaks the SLO: {results[best]}"


def test_grid_search_breaks_ties_toward_lower_worst_ttft(impl) -> None:
    best, results = _search(impl, STREAM, 64)
    steps = {c.label: results[c].total_steps for c in results}
    assert set(steps.values()) == {24}, f"every config of the stream workload takes 24 steps: " \
                                        f"{steps}"
    assert best == Config(64, 0), (
        f"the legal configs (budget 40 and 64) tie at 24 steps; budget=64 has the lower worst "
        f"TTFT (2 steps vs 3), and thr=0 comes first in the grid: expected budget=64 thr=0, got "
        f"{best!r}"
    )


def test_unsatisfiable_slo_is_loud(impl) -> None:
    with expect_raises(ValueError, "no config of the grid keeps every step <= 10 tokens: "
                                   "grid_search must raise, not return the least-bad config"):
        impl.grid_search(FAT, BUDGETS, THRESHOLDS, 10)


def test_pareto_front_membership(impl) -> None:
    _, results = _search(impl, FAT, 64)
    front = impl.pareto_front(results)
    assert isinstance(front, list), f"pareto_front returns a list of configs, got {front!r}"

    def objectives(c: Config) -> tuple[int, int, int]:
        m = results[c]
        return m.total_steps, m.max_step_tokens, max(m.ttft_steps)

    def dominated(c: Config) -> bool:
        return any(all(x <= y for x, y in zip(objectives(o), objectives(c), strict=True))
                   and objectives(o) != objectives(c) for o in results)

    bad = [c.label for c in front if dominated(c)]
    assert not bad, f"dominated configs are on your front: {bad}"
    missing = [c.label for c in results if not dominated(c) and c not in front]
    assert not missing, (
        f"undominated configs are missing from your front: {missing} (configs with equal "
        f"metrics do not dominate each other)"
    )
    assert front == [Config(40, 0), Config(40, 32), Config(64, 32), Config(2048, 0),
                     Config(2048, 32)], (
        f"expected the front in results order, without budget=64 thr=0 (budget=64 thr=32 is as "
        f"spiky but faster and quicker to first token), got {[c.label for c in front]}"
    )


def test_pareto_png_is_written(impl, tmp_path: Path) -> None:
    best, results = _search(impl, FAT, 64)
    front = impl.pareto_front(results)
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib: pip install -e '.[dev]'")
    target = tmp_path / "pareto.png"
    got = draw_pareto(FAT, results, front, best, 64, target)
    assert Path(got) == target and target.is_file(), f"draw_pareto writes {target}, got {got!r}"
    data = target.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", (
        f"the file is not a PNG: it starts {data[:16]!r}"
    )
    size = struct.unpack(">II", data[16:24])
    assert size == PNG_SIZE, f"the PNG should be {PNG_SIZE[0]}x{PNG_SIZE[1]} px, got {size}"


def test_pareto_text_when_matplotlib_is_missing(impl, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    best, results = _search(impl, FAT, 64)
    front = impl.pareto_front(results)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "pareto.png"
    text = draw_pareto(FAT, results, front, best, 64, target)
    assert isinstance(text, str) and not target.exists(), (
        f"without matplotlib the picture is a text table and no file, got {text!r}"
    )
    lines = {line.split("  ")[0][2:].strip(): line for line in text.splitlines()
             if line[:2] in ("* ", "+ ", "- ")}
    chosen = [label for label, line in lines.items() if line.startswith("* ")]
    assert chosen == [f"{best.label} ttft<={results[best].worst_ttft}"], (
        f"one line, the chosen config's, starts with '*':\n{text}"
    )
    assert "breaks SLO" in lines["budget=2048 thr=0 ttft<=0"], (
        f"budget=2048 thr=0 (a 128-token step) is marked as breaking the SLO:\n{text}"
    )
    off_front = [label for label, line in lines.items() if line.startswith("- ")]
    assert off_front == ["budget=64 thr=0 ttft<=2"], (
        f"only the dominated config (budget=64 thr=0) is off the front:\n{text}"
    )
    assert text.splitlines()[-1] == "SLO: max_step_tokens (ITL spike) <= 64", text
