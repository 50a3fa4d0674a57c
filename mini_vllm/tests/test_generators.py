"""Per-request generators (``LLMEngine(generators="per_request")``): one random stream per seeded
request, upstream's rule; ``"per_call"`` (re-seed on every call) stays the default.

Two models: the toy with ``scale=0`` (every logit 0, so every draw is uniform over the 257 ids and
the token *is* the generator's draw: the streams can be written down exactly), and the seeded
tiny Llama in float64 (a real network over the paged cache), on which a seeded request's tokens
must not depend on its neighbours, their arrival order, chunked prefill, prefix hits or
preemption.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mini_vllm import LLMEngine, Sampler, SamplingParams, SpeculativeConfig, ToyModel
from mini_vllm.sample.generators import RequestGenerators
from mini_vllm.tests.builders import dense_last_logits, record_schedules, run_all
from pytest_vllm_katas import expect_raises

V = 257
UNIFORM = np.full(V, 1.0 / V)
SEED = 7
BLOCK = 4
PROMPT_A = list(range(40, 58))  # 18 tokens
NEIGHBORS = {
    "B": (list(range(90, 111)), 11),     # seeded
    "C": (list(range(120, 133)), None),  # unseeded: the engine's generator
    "D": (list(range(150, 166)), "greedy"),
    "E": (PROMPT_A[:12] + [7, 8, 9], 13),  # seeded, shares A's first 3 blocks (prefix hits)
}


def _draws(seed: int, n: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(rng.choice(V, p=UNIFORM)) for _ in range(n)]


def _params(seed: Any, max_tokens: int = 10) -> SamplingParams:
    if seed == "greedy":
        return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, ignore_eos=True)


def _run(model: Any, requests: list[tuple[str, list[int], Any]], **kw: Any
         ) -> tuple[dict[str, list[int]], int]:
    """Each request's output tokens and the number of preemptions, on a per_request engine."""
    kw = {"num_blocks": 64, "block_size": BLOCK, "generators": "per_request"} | kw
    engine = LLMEngine(model=model, **kw)
    for rid, prompt, seed in requests:
        engine.add_request(prompt, _params(seed), request_id=rid)
    out: dict[str, list[int]] = {}
    preemptions = 0
    for _ in range(300):
        for r in engine.step():
            out[r.request_id] = list(r.output_token_ids)
            preemptions += r.num_preemptions
        if not engine.has_unfinished_requests():
            break
    assert not engine.has_unfinished_requests(), "the engine did not finish in 300 steps"
    assert engine.request_generators.generators == {}, "finished requests keep no generator"
    return out, preemptions


def _mixed(order: list[str]) -> list[tuple[str, list[int], Any]]:
    table = {"A": (PROMPT_A, SEED)} | NEIGHBORS
    return [(rid, *table[rid]) for rid in order]


_ALONE: dict[str, list[int]] = {}


@pytest.fixture
def alone(tiny_llama: Any) -> dict[str, list[int]]:
    """Every request of the mixed batch run alone (computed once)."""
    if not _ALONE:
        for rid, prompt, seed in _mixed(["A", *NEIGHBORS]):
            if seed is not None:  # an unseeded request alone is a different draw order
                _ALONE[rid] = _run(tiny_llama, [(rid, prompt, seed)])[0][rid]
    return _ALONE


# -- the two modes on a flat distribution ----------------------------------------------------


def test_per_call_stays_the_default() -> None:
    engine = LLMEngine(model=ToyModel(scale=0.0))
    assert engine.generator_mode == "per_call" and engine.request_generators is None
    out = engine.generate([[1, 2, 3]], _params(SEED, max_tokens=5))[0].output_token_ids
    assert out == [_draws(SEED, 1)[0]] * 5, (
        f"per_call re-seeds default_rng({SEED}) on every call: on a flat distribution every "
        f"token is its first draw; got {out}")


def test_per_request_advances_one_stream_per_request() -> None:
    engine = LLMEngine(model=ToyModel(scale=0.0), generators="per_request")
    out = engine.generate([[1, 2, 3]], _params(SEED, max_tokens=5))[0].output_token_ids
    assert out == _draws(SEED, 5), (
        f"per_request: the tokens are default_rng({SEED})'s first five draws {_draws(SEED, 5)}, "
        f"got {out}")


def test_unseeded_requests_draw_from_the_engines_generator() -> None:
    engine = LLMEngine(model=ToyModel(scale=0.0), generators="per_request", seed=5)
    out = engine.generate([[1, 2, 3], [4, 5, 6]], _params(None, max_tokens=4))
    draws = _draws(5, 8)  # both sample every step, in admission order
    assert [o.output_token_ids for o in out] == [draws[0::2], draws[1::2]], (
        "unseeded requests share default_rng(engine seed 5), drawn in the order they sample")
    assert engine.request_generators.generators == {}, "unseeded requests own no generator"


def test_parallel_sampling_children_own_their_streams() -> None:
    engine = LLMEngine(model=ToyModel(scale=0.0), generators="per_request")
    parent = engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4, temperature=1.0, seed=SEED,
                                                         n=3, ignore_eos=True))[0]
    got = [o.output_token_ids for o in parent.outputs]
    assert got == [_draws(SEED + i, 4) for i in range(3)], (
        "child i of a seeded n=3 request is seeded seed + i and owns that stream")


# -- lifecycle --------------------------------------------------------------------------------


def test_generator_made_on_admission_dropped_on_finish_and_abort() -> None:
    engine = LLMEngine(model=ToyModel(scale=0.0), generators="per_request")
    gens = engine.request_generators.generators
    engine.add_request([1, 2], _params(SEED, 3), request_id="s")
    engine.add_request([1, 2], _params(None, 3), request_id="u")
    engine.add_request([1, 2], _params("greedy", 3), request_id="g")
    engine.add_request([1, 2], _params(9, 50), request_id="x")
    assert sorted(gens) == ["s", "x"], f"only seeded random requests own one, got {sorted(gens)}"
    first = gens["s"]
    engine.step()
    assert gens["s"] is first, "the generator is made once, then advanced"
    engine.abort_request("x")
    assert "x" not in gens, "an aborted request gives its generator back"
    done = run_all(engine)
    assert gens == {}, "finished requests give their generators back"
    engine.add_request([1, 2], _params(SEED, 3), request_id="s")  # the id, recycled
    again = run_all(engine)["s"]
    assert again == done["s"] == _draws(SEED, 3), "a recycled id starts a fresh stream"


# -- batch invariance on the tiny Llama -------------------------------------------------------


def test_a_seeded_request_is_its_seeds_stream_over_its_own_logits(tiny_llama: Any) -> None:
    out, _ = _run(tiny_llama, [("A", PROMPT_A, SEED)])
    rng = np.random.default_rng(SEED)
    want: list[int] = []
    for _ in range(10):
        x = dense_last_logits(tiny_llama, PROMPT_A + want)
        p = np.exp(x - x.max())
        p /= p.sum()
        want.append(int(rng.choice(p.size, p=p)))
    assert out["A"] == want, (
        f"A must be default_rng({SEED}) drawn once per token over its own logits: {want}, "
        f"got {out['A']}")


@pytest.mark.parametrize("order", [["A", "B", "C", "D", "E"], ["E", "D", "C", "B", "A"],
                                   ["C", "A", "E", "D", "B"]])
def test_seeded_output_ignores_the_batch(tiny_llama: Any, alone: dict[str, list[int]],
                                         order: list[str]) -> None:
    out, _ = _run(tiny_llama, _mixed(order), enable_caching=True)
    for rid in ("A", "B", "E"):
        assert out[rid] == alone[rid], (
            f"arrival order {order}: seeded {rid} gave {out[rid]}, alone {alone[rid]}")
    assert out["D"] == alone["D"], "greedy D is unaffected"


def test_chunked_prefill_and_prefix_hits_do_not_move_a_stream(
        tiny_llama: Any, alone: dict[str, list[int]]) -> None:
    engine_kw = {"enable_caching": True, "max_num_batched_tokens": 8}
    hits: list[int] = []
    out, _ = _run(tiny_llama, _mixed(["A", "B", "C", "D", "E"]), **engine_kw)
    # Count the prefix hits on a second engine with the same workload.
    engine = LLMEngine(model=tiny_llama, num_blocks=64, block_size=BLOCK,
                       generators="per_request", **engine_kw)
    original = engine.kv_cache_manager.get_computed_blocks

    def probe(request: Any) -> Any:
        blocks, n = original(request)
        hits.append(len(blocks))
        return blocks, n

    engine.kv_cache_manager.get_computed_blocks = probe  # type: ignore[method-assign]
    schedules = record_schedules(engine)
    for rid, prompt, seed in _mixed(["A", "B", "C", "D", "E"]):
        engine.add_request(prompt, _params(seed), request_id=rid)
    assert run_all(engine) == out, "the same workload gives the same tokens"
    assert max(hits) == 3, f"workload check: E hits A's 3 full blocks, hits were {hits}"
    assert max(s.num_scheduled_tokens.get("A", 0) for s in schedules) <= 8, "A is chunked"
    for rid in ("A", "B", "E"):
        assert out[rid] == alone[rid], (
            f"chunked prefill (8 tokens a step) and prefix hits moved seeded {rid}: "
            f"{out[rid]} vs alone {alone[rid]}")


def _preempting_run(model: Any, workload: list[tuple[str, list[int], Any]], *, forget: bool
                    ) -> tuple[dict[str, list[int]], list[tuple[str, int, bool]]]:
    """Run ``workload`` on a cramped pool; also (id, tokens sampled, generator kept) per
    preemption. ``forget``: the control, an engine that drops the generator at preemption."""
    engine = LLMEngine(model=model, block_size=BLOCK, generators="per_request", num_blocks=12,
                       max_num_batched_tokens=8, enable_caching=False)
    gens = engine.request_generators
    preempt = engine.scheduler._preempt
    log: list[tuple[str, int, bool]] = []

    def probe(request: Any) -> None:
        preempt(request)
        if forget:
            gens.finish(request.request_id)
        log.append((request.request_id, request.num_output_tokens,
                    request.request_id in gens.generators))

    engine.scheduler._preempt = probe  # type: ignore[method-assign]
    for rid, prompt, seed in workload:
        engine.add_request(prompt, _params(seed), request_id=rid)
    return run_all(engine), log


def test_preemption_keeps_the_generator(tiny_llama: Any, alone: dict[str, list[int]]) -> None:
    # vLLM keeps a preempted request's cached state (its generator included) and resumes it;
    # the recomputed tokens are not sampled again, so the stream continues where it stopped.
    workload = _mixed(["B", "C", "A", "D", "E"])
    out, log = _preempting_run(tiny_llama, workload, forget=False)
    mid_stream = {rid for rid, sampled, _ in log if rid in "ABE" and sampled > 0}
    assert mid_stream, f"workload check: a seeded request is preempted mid-stream; log {log}"
    assert all(kept for rid, _, kept in log if rid in "ABE"), (
        f"a preempted seeded request keeps its generator (upstream keeps its cached state): {log}")
    for rid in ("A", "B", "E"):
        assert out[rid] == alone[rid], (
            f"preemption moved seeded {rid}: {out[rid]} vs alone {alone[rid]}; log {log}")

    # The control: an engine that forgot the generator at preemption (a fresh default_rng(seed)
    # on resume) replays the first draws, and the outputs change.
    broken, _ = _preempting_run(tiny_llama, workload, forget=True)
    assert any(broken[rid] != alone[rid] for rid in mid_stream), (
        "control: re-seeding at resume should have changed a preempted request's output")


def test_speculative_decoding_draws_from_the_requests_stream(tiny_llama: Any) -> None:
    # A proposer that always drafts, so that every step after the prefill verifies.
    spec = SpeculativeConfig(num_speculative_tokens=3, proposer=lambda ids: [5, 6, 7])
    prompt = [5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6]
    solo, _ = _run(tiny_llama, [("A", prompt, SEED)], speculative_config=spec)
    mixed, _ = _run(tiny_llama, [("B", NEIGHBORS["B"][0], 11), ("A", prompt, SEED)],
                    speculative_config=spec)
    assert mixed["A"] == solo["A"], (
        f"with speculation a seeded request still draws only from its own generator: alone "
        f"{solo['A']}, beside B {mixed['A']}")
    # The verify step's draws come from A's generator, not from a per-step seed.
    engine = LLMEngine(model=tiny_llama, block_size=BLOCK, generators="per_request",
                       speculative_config=spec)
    engine.add_request(prompt, _params(SEED), request_id="A")
    gen, verified = engine.request_generators.generators["A"], 0
    for _ in range(20):
        request = engine.get_request("A")
        if not request.spec_token_ids:
            engine.step()
            continue
        before, spec_before = gen.bit_generator.state, engine._spec_rng.bit_generator.state
        engine.step()
        assert gen.bit_generator.state != before, "a verify step draws from A's generator"
        assert engine._spec_rng.bit_generator.state == spec_before
        verified += 1
        break
    assert verified, "workload check: the proposer should have drafted for A"


# -- the sampler and bad input ----------------------------------------------------------------


def test_sampler_draws_from_a_given_generator() -> None:
    logits = np.zeros(V)
    params = _params(SEED)
    gen = np.random.default_rng(SEED)
    got = [Sampler().sample(logits, params, generator=gen) for _ in range(3)]
    assert got == _draws(SEED, 3), "sample(..., generator=g) draws from g, one draw per call"
    assert [Sampler().sample(logits, params) for _ in range(2)] == [_draws(SEED, 1)[0]] * 2, (
        "without a generator the sampler still re-seeds per call")
    greedy = _params("greedy")
    state = gen.bit_generator.state
    Sampler().sample(np.arange(V, dtype=float), greedy, generator=gen)
    assert gen.bit_generator.state == state, "temperature 0 draws nothing"


def test_request_generators_follow_upstreams_sampling_types() -> None:
    gens = RequestGenerators(seed=3)
    assert gens.get("g", _params("greedy")) is None
    assert gens.get("u", _params(None)) is gens.shared
    own = gens.get("s", _params(SEED))
    assert own is gens.get("s", _params(SEED)) and own is not gens.shared


def test_bad_generator_options_are_refused() -> None:
    with expect_raises(ValueError, "generators must name a mode", match="generators"):
        LLMEngine(generators="per_step")

    def two_args(logits: Any, params: Any) -> int:
        return 0

    with expect_raises(ValueError, "the sampler must accept generator=", match="generator"):
        LLMEngine(sampler=two_args, generators="per_request")
