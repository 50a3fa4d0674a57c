"""Spec for kata 03-02: chunking changes when a prompt is computed, never what comes out."""

from __future__ import annotations

import math
import random
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType, ModuleType
from typing import NamedTuple

import pytest

from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=6, temperature=0.8, top_k=50, top_p=0.9, seed=3, ignore_eos=True)
SENTENCE = "The quick brown fox jumps over the lazy dog"  # 43 tokens
LOOP_LIMIT_S = 2.0  # a hang guard, not a speed test: a correct answer takes microseconds

Schedule = list[list[tuple[str, int]]]  # each step's (request, tokens), in row order

# (prompt_len, threshold, budget) -> a lone request's chunks. Ids: the boundary each case probes.
LONE_CASES = [
    pytest.param(10, 4, 2048, [4, 4, 2], id="10_tokens-threshold_4-remainder_2"),
    pytest.param(64, 16, 2048, [16, 16, 16, 16], id="exact_multiple-no_extra_step"),
    pytest.param(10, 0, 2048, [10], id="threshold_0_is_off-fits_the_budget"),
    pytest.param(5000, 0, 2048, [2048, 2048, 904], id="threshold_0_is_off-the_budget_chunks"),
    pytest.param(100, 64, 32, [32, 32, 32, 4], id="threshold_above_budget-budget_wins"),
    pytest.param(10, 10, 2048, [10], id="threshold_equal_to_prompt-one_step"),
    pytest.param(10, 100, 2048, [10], id="threshold_above_prompt-one_step"),
    pytest.param(1, 16, 2048, [1], id="one_token_prompt"),
    pytest.param(7, 1, 2048, [1] * 7, id="threshold_1-one_token_per_step"),
    pytest.param(4096, 512, 512, [512] * 8, id="4096_tokens-at_512-eight_steps"),
]


# --- calling the learner's code -------------------------------------------------------------------


class EndlessSchedule(AssertionError):
    """chunk_schedule did not return: some step scheduled no prefill token, forever."""


@contextmanager
def _returns_within(seconds: float, what: str, advice: str = "") -> Iterator[None]:
    """Fail with a clear message if the block runs longer than ``seconds``.

    A simulation that never completes a prefill loops forever; this stops it in seconds, not
    at the plugin's per-test limit, and re-arms whatever outer timer was running.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    limit = min(seconds, outer_left) if outer_left else seconds

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise EndlessSchedule(f"{what} was still running after {limit:g} s: {advice}")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    except EndlessSchedule as endless:
        # Raised again from here: the signal can land on an instruction that has no line number,
        # and pytest cannot print a traceback entry whose tb_lineno is None.
        raise EndlessSchedule(str(endless)) from None
    finally:
        mine_left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (limit - mine_left), 1e-3))


def _schedule(
    impl: ModuleType,
    prompts: Mapping[str, int],
    *,
    budget: int,
    threshold: int = 0,
    decoding: Sequence[str] = (),
) -> Schedule:
    """The learner's ``chunk_schedule`` as (request, tokens) rows per step, shape-checked."""
    call = (
        f"chunk_schedule({dict(prompts)}, budget={budget}, threshold={threshold}, "
        f"decoding={list(decoding)})"
    )
    advice = (
        "every step must make progress on some prefill, or the loop never ends. Is a "
        "threshold of 0 treated as 'off'? Does the loop stop once every prompt is prefilled?"
    )
    with _returns_within(LOOP_LIMIT_S, call, advice):
        got = impl.chunk_schedule(prompts, budget=budget, threshold=threshold, decoding=decoding)
    assert isinstance(got, list) and all(isinstance(step, dict) for step in got), (
        f"{call} must return a list with one dict {{request: tokens}} per step; got {got!r:.200}"
    )
    return [list(step.items()) for step in got]


def _first_difference(expected: Schedule, got: Schedule) -> int:
    return next(
        (i for i, (e, g) in enumerate(zip(expected, got, strict=False)) if e != g),
        min(len(expected), len(got)),
    )


def _assert_schedule(got: Schedule, expected: Schedule, why: str) -> None:
    i = _first_difference(expected, got)
    assert got == expected, (
        f"{why}\n  first difference at step {i} (rows in order):\n"
        f"    expected {expected[i : i + 2]}\n    got      {got[i : i + 2]}\n"
        f"  ({len(expected)} steps expected, {len(got)} returned)"
    )


# --- the engine -----------------------------------------------------------------------------------


def _text(name: str, length: int) -> str:
    """A prompt of exactly ``length`` byte tokens, different for every name."""
    return (f"{name}: " + SENTENCE * (length // len(SENTENCE) + 1))[:length]


class EngineRun(NamedTuple):
    steps: Schedule  # after the warm-up: each step's rows, requests by name
    outputs: dict[str, list[int]]  # requests that finished, by name


def _engine_run(
    prompts: Mapping[str, int],
    *,
    budget: int,
    threshold: int,
    decoding: Sequence[str] = (),
    params: SamplingParams = GREEDY,
    until_prefilled: bool = False,
) -> EngineRun:
    """Run mini_vllm's stock engine on the scenario and record its schedule.

    ``decoding`` requests get 1-token prompts and one warm-up step (their prefill, and their
    first sampled token), so when the prompts arrive they are running decodes with a gap of one.
    With ``until_prefilled`` it stops at the step that completes the last prefill (then nobody
    may finish before: use a large ``max_tokens``); otherwise it runs every request to the end.
    """
    engine = LLMEngine(
        enable_caching=False, max_num_batched_tokens=budget, long_prefill_token_threshold=threshold
    )
    names: dict[str, str] = {}
    outputs: dict[str, list[int]] = {}

    def step() -> None:
        for request in engine.step():
            outputs[names[request.request_id]] = request.output_token_ids

    for name in decoding:
        names[engine.add_request("d", params)] = name
    if decoding:
        step()  # warm-up: each 1-token prompt is prefilled and samples its first token
        assert not outputs, "test bug: a decoding request finished during the warm-up"
    for name, length in prompts.items():
        names[engine.add_request(_text(name, length), params)] = name
    steps: Schedule = []
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = schedule()
        steps.append([(names[rid], n) for rid, n in out.num_scheduled_tokens.items()])
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    prefilled = dict.fromkeys(prompts, 0)
    while engine.has_unfinished_requests():
        if until_prefilled and all(prefilled[p] >= n for p, n in prompts.items()):
            break
        if len(steps) > 2000:
            raise AssertionError(f"test bug: the engine run did not end; last {steps[-2:]}")
        step()
        for name, n in steps[-1]:
            if name in prefilled:
                prefilled[name] += n
    return EngineRun(steps, outputs)


class Scenario(NamedTuple):
    prompts: dict[str, int]
    budget: int
    threshold: int
    decoding: tuple[str, ...] = ()

    def kwargs(self) -> dict:
        return dict(budget=self.budget, threshold=self.threshold, decoding=self.decoding)


def _random_scenarios(count: int, seed: int) -> list:
    rng = random.Random(seed)
    found = []
    for i in range(count):
        decoding = tuple(f"D{j}" for j in range(rng.randint(0, 3)))
        prompts = {f"P{j}": rng.randint(1, 40) for j in range(rng.randint(1, 4))}
        budget = rng.randint(len(decoding) + len(prompts), 20)
        threshold = rng.choice([0, 1, 2, 3, 5, 8])
        found.append(
            pytest.param(Scenario(prompts, budget, threshold, decoding), id=f"random_{i}")
        )
    return found


SCENARIOS = [
    pytest.param(Scenario({"A": 11, "B": 7}, 8, 0), id="A_11-B_7-budget_8"),
    pytest.param(Scenario({"B": 256}, 2048, 32, ("A",)), id="decode_A-prompt_256-threshold_32"),
    pytest.param(
        Scenario({"P": 30, "Q": 5, "R": 17}, 10, 4, ("D0", "D1")),
        id="two_decodes-three_prompts-budget_10-threshold_4",
    ),
    pytest.param(Scenario({"A": 20, "B": 3}, 8, 4), id="the_later_prompt_finishes_first"),
    pytest.param(
        Scenario({"A": 13, "B": 9, "C": 2, "E": 6}, 7, 5, ("D",)),
        id="a_decode-four_prompts-budget_7-threshold_5",
    ),
    pytest.param(Scenario({"A": 5000}, 2048, 0), id="5000_tokens-default_budget"),
    *_random_scenarios(12, seed=3),
]


# --- the lone request: the course's formula ---------------------------------------------------


@pytest.mark.parametrize(
    ("prompt_len", "threshold", "budget", "chunks"),
    [*LONE_CASES, pytest.param(0, 16, 2048, [], id="empty_prompt-nothing_to_prefill")],
)
def test_num_prefill_steps(impl, prompt_len: int, threshold: int, budget: int, chunks: list[int]):
    got = impl.num_prefill_steps(prompt_len, threshold, budget)
    assert got == len(chunks), (
        f"a lone {prompt_len}-token prompt at threshold {threshold} and budget {budget} takes "
        f"{len(chunks)} prefill steps ({chunks}); got {got}"
    )


@pytest.mark.parametrize(("prompt_len", "threshold", "budget", "chunks"), LONE_CASES)
def test_a_lone_prompt_is_cut_into_equal_chunks_and_a_remainder(
    impl, prompt_len: int, threshold: int, budget: int, chunks: list[int]
) -> None:
    got = _schedule(impl, {"A": prompt_len}, budget=budget, threshold=threshold)
    _assert_schedule(
        got,
        [[("A", c)] for c in chunks],
        f"a lone {prompt_len}-token prompt at threshold {threshold} (0: off) and budget {budget} "
        f"is prefilled in chunks {chunks}",
    )


def test_steps_are_the_ceiling_everywhere_on_a_grid(impl) -> None:
    wrong = []
    for prompt_len in range(0, 41):
        for threshold in range(0, 12):
            for budget in range(1, 12):
                chunk = min(threshold or budget, budget)
                steps = impl.num_prefill_steps(prompt_len, threshold, budget)
                if steps != math.ceil(prompt_len / chunk):
                    wrong.append(("num_prefill_steps", prompt_len, threshold, budget, steps))
                if prompt_len == 0:
                    continue
                got = _schedule(impl, {"A": prompt_len}, budget=budget, threshold=threshold)
                sizes = [n for step in got for _, n in step]
                if len(got) != steps or sum(sizes) != prompt_len or max(sizes) > chunk:
                    wrong.append(("chunk_schedule", prompt_len, threshold, budget, got))
    assert not wrong, (
        f"{len(wrong)} (prompt_len, threshold, budget) cases out of 5,412 (num_prefill_steps) "
        f"+ 5,280 (chunk_schedule) break: steps == ceil(prompt_len / chunk) where chunk = "
        f"min(threshold or budget, budget); a lone prompt's chunks add up to the prompt, none "
        f"above the chunk, one step each. First few: {wrong[:3]}"
    )


# --- company: the multi-request schedule ----------------------------------------------------------


def test_two_prompts_share_a_budget_of_8(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"A": 11, "B": 7}, budget=8),
        [[("A", 8)], [("A", 3), ("B", 5)], [("A", 1), ("B", 2)]],
        "A (11 tokens) takes the whole budget of 8; next step it finishes with 3 and B is "
        "admitted for the 5 left; then A decodes (1) and B finishes (2)",
    )
    _assert_schedule(
        _schedule(impl, {"A": 11, "B": 7}, budget=2048),
        [[("A", 11), ("B", 7)]],
        "with a budget of 2048 both prompts are prefilled whole in the first step",
    )


def test_a_decode_rides_along_with_every_chunk(impl) -> None:
    chunked = _schedule(impl, {"B": 256}, budget=2048, threshold=32, decoding=["A"])
    _assert_schedule(
        chunked,
        [[("A", 1), ("B", 32)]] * 8,
        "A is decoding when 256-token B arrives: at threshold 32, B takes 8 chunks of 32 and A "
        "gets its token in every one of those steps (totals 33 x 8)",
    )
    _assert_schedule(
        _schedule(impl, {"B": 256}, budget=2048, threshold=0, decoding=["A"]),
        [[("A", 1), ("B", 256)]],
        "unchunked, B's whole prompt lands in one 257-token step beside A's decode",
    )


def test_decodes_are_served_before_any_prefill(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"P": 20}, budget=8, decoding=["D0", "D1", "D2"]),
        [[("D0", 1), ("D1", 1), ("D2", 1), ("P", 5)]] * 4,
        "the three running decodes take 1 token each first; the 20-token prompt gets the 5 "
        "left of the budget of 8, four steps in a row",
    )


def test_threshold_caps_every_chunk_not_just_the_first(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"A": 20, "B": 20}, budget=100, threshold=6),
        [[("A", 6), ("B", 6)]] * 3 + [[("A", 2), ("B", 2)]],
        "a threshold of 6 caps a running prefill's chunk in every step, not only the chunk it "
        "was admitted with",
    )


def test_admissions_get_only_what_the_running_left(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"A": 5, "B": 9, "C": 4}, budget=8),
        [[("A", 5), ("B", 3)], [("A", 1), ("B", 6), ("C", 1)], [("A", 1), ("B", 1), ("C", 3)]],
        "one budget of 8 per step, spent in row order: B is admitted with the 3 A leaves, then "
        "finishes with 6 beside A's decode, leaving C a single token",
    )


def test_a_prompt_that_finishes_early_decodes_in_its_place(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"A": 20, "B": 3}, budget=8, threshold=4),
        [[("A", 4), ("B", 3)]] + [[("A", 4), ("B", 1)]] * 4,
        "B (3 tokens) is prefilled in the first step and then decodes, 1 token a step, in its "
        "own row behind A, whose 20 tokens take five chunks of 4",
    )


def test_no_request_is_admitted_for_zero_tokens(impl) -> None:
    _assert_schedule(
        _schedule(impl, {"A": 8, "B": 4}, budget=8),
        [[("A", 8)], [("A", 1), ("B", 4)]],
        "A's 8 tokens spend the whole budget of 8, so B is not admitted in that step (never "
        "for 0 tokens); next step A decodes and B is prefilled",
    )


@pytest.mark.parametrize(
    ("call", "why"),
    [
        pytest.param(
            lambda m: m.num_prefill_steps(-1, 16, 2048), "a negative prompt length",
            id="steps-negative_prompt",
        ),
        pytest.param(
            lambda m: m.num_prefill_steps(10, -1, 2048), "a negative threshold",
            id="steps-negative_threshold",
        ),
        pytest.param(
            lambda m: m.num_prefill_steps(10, 16, 0), "a budget of 0", id="steps-zero_budget"
        ),
        pytest.param(
            lambda m: m.chunk_schedule({"A": 10}, budget=8, threshold=-1),
            "a negative threshold",
            id="schedule-negative_threshold",
        ),
        pytest.param(
            lambda m: m.chunk_schedule({"A": 10}, budget=0), "a budget of 0",
            id="schedule-zero_budget",
        ),
        pytest.param(
            lambda m: m.chunk_schedule({"A": 10, "B": 0}, budget=8),
            "an empty prompt (the engine refuses one too)",
            id="schedule-empty_prompt",
        ),
        pytest.param(
            lambda m: m.chunk_schedule({"A": 10}, budget=8, decoding=["A"]),
            "a name used twice: A cannot be both decoding and waiting",
            id="schedule-duplicate_name",
        ),
        pytest.param(
            lambda m: m.chunk_schedule({"A": 10}, budget=2, decoding=["D0", "D1"]),
            "3 requests for a budget of 2: the two decodes take the whole budget every step and "
            "A would never be prefilled",
            id="schedule-more_requests_than_the_budget",
        ),
    ],
)
def test_impossible_arguments_raise_value_error(impl, call, why: str) -> None:
    advice = "impossible arguments must raise ValueError before any scheduling starts"
    with _returns_within(LOOP_LIMIT_S, f"the call with {why}", advice):
        with expect_raises(ValueError, f"the arguments are impossible: {why}"):
            call(impl)


# --- the engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_your_schedule_is_the_engines_step_for_step(impl, scenario: Scenario) -> None:
    yours = _schedule(impl, scenario.prompts, **scenario.kwargs())
    long = SamplingParams(max_tokens=512, temperature=0.0, ignore_eos=True)
    engine = _engine_run(scenario.prompts, **scenario.kwargs(), params=long, until_prefilled=True)
    _assert_schedule(
        yours,
        engine.steps,
        f"mini_vllm's scheduler (max_num_batched_tokens={scenario.budget}, "
        f"long_prefill_token_threshold={scenario.threshold}, decoding {list(scenario.decoding)} "
        f"when prompts {scenario.prompts} arrive) schedules differently from your prediction",
    )


@pytest.mark.parametrize("threshold", [1, 3, 16, 42], ids=lambda t: f"threshold_{t}")
@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_chunked_and_unchunked_runs_emit_identical_tokens(
    impl, threshold: int, params: SamplingParams
) -> None:
    steps = impl.num_prefill_steps(len(SENTENCE), threshold, 2048)
    prompt = {"A": len(SENTENCE)}
    plain = _engine_run(prompt, budget=2048, threshold=0, params=params)
    chunked = _engine_run(prompt, budget=2048, threshold=threshold, params=params)
    prefill = _first_steps_covering(chunked.steps, "A", len(SENTENCE))
    assert steps > 1 and prefill == steps, (
        f"chunking really happened: the 43-token prompt should prefill in {steps} steps at "
        f"threshold {threshold}, and the engine took {prefill}"
    )
    assert_same_outputs(plain.outputs, chunked.outputs, labels=("unchunked", "chunked"))


def _first_steps_covering(steps: Schedule, name: str, prompt_len: int) -> int:
    """How many of the first steps it takes to schedule ``prompt_len`` tokens for ``name``."""
    total = 0
    for i, step in enumerate(steps):
        total += dict(step).get(name, 0)
        if total >= prompt_len:
            return i + 1
    return len(steps)


@pytest.mark.parametrize("scenario", SCENARIOS[:5])
def test_company_only_delays_a_prefill_and_changes_no_token(impl, scenario: Scenario) -> None:
    yours = _schedule(impl, scenario.prompts, **scenario.kwargs())
    taken = {p: _first_steps_covering(yours, p, n) for p, n in scenario.prompts.items()}
    alone = {
        p: impl.num_prefill_steps(n, scenario.threshold, scenario.budget)
        for p, n in scenario.prompts.items()
    }
    assert all(taken[p] >= alone[p] for p in taken), (
        f"sharing the budget can only slow a prefill down: in your schedule the prompts finish "
        f"prefilling after {taken} steps, but alone they need {alone}"
    )
    everything = dict(budget=2048, threshold=0, decoding=scenario.decoding)
    plain = _engine_run(scenario.prompts, **everything)
    chunked = _engine_run(scenario.prompts, **scenario.kwargs())
    slowest = max(_first_steps_covering(chunked.steps, p, n) for p, n in scenario.prompts.items())
    assert slowest > 1, "test bug: this scenario no longer chunks any prefill"
    assert_same_outputs(plain.outputs, chunked.outputs, labels=("unchunked", "chunked"))
