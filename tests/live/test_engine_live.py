"""The live substrate against a real vLLM: start, greedy, step loop, and KV capacity arithmetic.

The KV check is the differential test of issue 4: the KV arithmetic of kata 02-03's reference
(the one source of that formula) must give exactly the block count, token capacity and
concurrency vLLM reports, for both offline models.
"""

from __future__ import annotations

import pytest

from pytest_vllm_katas.live import models
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines
from reference.phase02 import real_vllm_blocks as kv_kata

GiB = 1 << 30
TINY = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)
# The same configuration as kata 17-02, so the session starts SmolLM2 once.
SMOLLM2 = EngineConfig(model="smollm2", kv_cache_gib=1, max_model_len=1024, inprocess=False)


def test_tiny_greedy_runs_exactly_max_tokens_steps(live_engines: LiveEngines) -> None:
    from vllm import SamplingParams

    h = live_engines.get(TINY)
    engine = h.llm.llm_engine
    engine.add_request(
        "probe-0", "hello world", SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    )
    steps, finished = 0, []
    while engine.has_unfinished_requests():
        steps += 1
        finished += [o for o in engine.step() if o.finished]
    assert steps == 5, "the prefill step samples the first token, so steps == max_tokens"
    assert [o.outputs[0].finish_reason for o in finished] == ["length"]
    again = h.llm.generate(
        ["hello world"], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    )
    assert list(again[0].outputs[0].token_ids) == list(finished[0].outputs[0].token_ids)


@pytest.mark.parametrize("config", [TINY, SMOLLM2], ids=["tiny", "smollm2"])
def test_kv_capacity_matches_what_vllm_reports(live_engines: LiveEngines,
                                               config: EngineConfig) -> None:
    h = live_engines.get(config)
    rep = h.kv_report()
    shape = kv_kata.model_shape(h.vllm_config.model_config.hf_config, rep["dtype"])
    predicted = kv_kata.kv_capacity(shape, config.kv_cache_gib * GiB, rep["block_size"],
                                    config.max_model_len)
    assert (predicted.num_blocks, predicted.num_tokens) == (rep["num_blocks"],
                                                            rep["kv_cache_size_tokens"])
    assert predicted.max_concurrency == pytest.approx(rep["max_concurrency"], rel=1e-12)
    assert kv_kata.read_kv_capacity(h.vllm_config) == predicted


def test_smollm2_answers_the_france_question(live_engines: LiveEngines) -> None:
    from vllm import SamplingParams

    h = live_engines.get(SMOLLM2)
    out = h.llm.chat(
        [{"role": "user", "content": models.FRANCE_QUESTION}],
        SamplingParams(max_tokens=30, temperature=0),
    )
    assert out[0].outputs[0].text.strip() == models.FRANCE_ANSWER
