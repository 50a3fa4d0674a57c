"""Kata 09-04: one random stream per request. The course's contract on a numpy sampler, then the
learner's sampler driving mini_vllm's engine on the tiny Llama (float64)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from katas.phase09.seeded_rng_batch_invariance.scaffold import EngineSampler, SharedRngSampler
from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

VOCAB = 50
STEPS = 12
SEED_A = 7


def _logits_stream(seed: int, steps: int = STEPS, vocab: int = VOCAB) -> np.ndarray:
    """A fixed stream of logits rows, soft enough that the draw decides the token."""
    return np.random.default_rng(seed).normal(0.0, 1.0, size=(steps, vocab))


A_LOGITS = _logits_stream(100)


def _tokens(sampler: Any, rid: str, stream: np.ndarray, seed: int | None,
            temperature: float = 1.0) -> list[int]:
    return [sampler.sample(rid, row, temperature, seed) for row in stream]


def _a_with_neighbors(sampler: Any, num_neighbors: int) -> list[int]:
    """A's tokens when ``num_neighbors`` seeded requests sample before it in every step."""
    neighbors = [(f"n{i}", _logits_stream(200 + i), 1000 + i) for i in range(num_neighbors)]
    out = []
    for step in range(STEPS):
        for rid, stream, seed in neighbors:
            sampler.sample(rid, stream[step], 1.0, seed)
        out.append(sampler.sample("A", A_LOGITS[step], 1.0, SEED_A))
    return out


def test_same_seed_reproduces_across_instances(impl) -> None:
    first = _tokens(impl.PerRequestSampler(), "A", A_LOGITS, SEED_A)
    second = _tokens(impl.PerRequestSampler(seed=123), "A", A_LOGITS, SEED_A)
    assert len(first) == STEPS and all(isinstance(t, int) for t in first), (
        f"sample must return one int token per call, got {first!r}")
    assert first == second, (
        f"same seed, same logits, two sampler instances: the stream must be a pure function of "
        f"the request's seed (not of the sampler's own seed); got {first} vs {second}")


def test_different_seeds_diverge(impl) -> None:
    a = _tokens(impl.PerRequestSampler(), "A", A_LOGITS, SEED_A)
    b = _tokens(impl.PerRequestSampler(), "A", A_LOGITS, SEED_A + 1)
    assert a != b, (f"seeds {SEED_A} and {SEED_A + 1} gave the same {STEPS} tokens {a}: the "
                    "request's generator must be created from its seed")


@pytest.mark.parametrize("num_neighbors", [1, 5])
def test_batch_invariance(impl, num_neighbors: int) -> None:
    alone = _a_with_neighbors(impl.PerRequestSampler(), 0)
    crowded = _a_with_neighbors(impl.PerRequestSampler(), num_neighbors)
    assert crowded == alone, (
        f"request A (seed {SEED_A}) alone drew {alone}; with {num_neighbors} seeded neighbors "
        f"sampling before it every step it drew {crowded}: a neighbor's draws must never come "
        "from A's generator")


def test_shared_rng_breaks_batch_invariance(impl) -> None:
    # The control: the same scenario on the natural shared-generator sampler does shift A.
    ours = _a_with_neighbors(impl.PerRequestSampler(), 5)
    alone = _a_with_neighbors(SharedRngSampler(), 0)
    crowded = _a_with_neighbors(SharedRngSampler(), 5)
    assert crowded != alone, "fixture check: the shared-generator control should be broken"
    assert ours == _a_with_neighbors(impl.PerRequestSampler(), 0), (
        f"with 5 neighbors your sampler drew {ours} for A, like the broken shared-generator "
        "control; A must draw the same stream as alone")


def test_greedy_ignores_seed_and_rng_state(impl) -> None:
    sampler = impl.PerRequestSampler(seed=5)
    before = sampler.shared.bit_generator.state
    row = A_LOGITS[0]
    got = [sampler.sample(f"g{seed}", row, 0.0, seed) for seed in (None, 1, 2, 99)]
    want = int(np.argmax(row))
    assert got == [want] * 4, f"temperature 0 is argmax ({want}) whatever the seed, got {got}"
    assert sampler.generators == {}, (
        f"a greedy request must not create a generator, found {sorted(sampler.generators)}")
    assert sampler.shared.bit_generator.state == before, (
        "a greedy request must draw nothing, not even from the shared generator")
    ties = np.zeros(VOCAB)
    ties[[3, 9]] = 1.0
    assert sampler.sample("t", ties, 0.0, None) == 3, "greedy ties go to the lowest index"


def test_request_stream_is_stateful_not_reset(impl) -> None:
    # On a uniform distribution the token is the uniform number itself: re-seeding every step
    # (mini_vllm's phase 00 Sampler) gives the same token every step; one stream does not.
    uniform = np.zeros(VOCAB)
    ref = np.random.default_rng(SEED_A)
    probs = np.full(VOCAB, 1.0 / VOCAB)
    want = [int(ref.choice(VOCAB, p=probs)) for _ in range(2)]
    assert want[0] != want[1], "fixture check: the reference's first two draws should differ"
    sampler = impl.PerRequestSampler()
    got = [sampler.sample("A", uniform, 1.0, SEED_A) for _ in range(2)]
    assert got == want, (
        f"two draws of request A must be default_rng({SEED_A})'s first two choice draws {want}, "
        f"got {got}" + (" (the first draw twice: the generator is re-created every step)"
                        if got == [want[0]] * 2 else ""))


def test_seeded_rows_ignore_batch_order(impl) -> None:
    ids = ["A", "B", "C", "D"]
    seeds: list[int | None] = [SEED_A, 11, None, 13]
    streams = {rid: _logits_stream(300 + i) for i, rid in enumerate(ids)}
    perms = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]
    # Run 1 keeps one order; run 2 another; run 3 reshuffles the rows every step.
    schedules = [[perms[0]] * STEPS, [perms[1]] * STEPS,
                 [perms[step % 3] for step in range(STEPS)]]
    results = []
    for schedule in schedules:
        sampler = impl.PerRequestSampler()
        got: dict[str, list[int]] = {rid: [] for rid in ids}
        for step, order in enumerate(schedule):
            rows = sampler.sample_batch([ids[i] for i in order],
                                        np.stack([streams[ids[i]][step] for i in order]),
                                        [1.0] * 4, [seeds[i] for i in order])
            assert len(rows) == 4, f"sample_batch must return one token per row, got {rows!r}"
            for i, token in zip(order, rows, strict=True):
                got[ids[i]].append(int(token))
        results.append(got)
    for rid in ("A", "B", "D"):
        streams_seen = [r[rid] for r in results]
        assert all(s == streams_seen[0] for s in streams_seen), (
            f"seeded request {rid}'s tokens changed with its row in the batch (rows {perms}, "
            f"fixed or reshuffled every step): "
            f"{streams_seen}; key generators by request, not by row")
    alone = _tokens(impl.PerRequestSampler(), "A", streams["A"], SEED_A)
    assert results[0]["A"] == alone, "sample_batch must give A the same stream as sample alone"


def test_unseeded_rows_use_the_shared_generator(impl) -> None:
    sampler = impl.PerRequestSampler(seed=3)
    shared = np.random.default_rng(3)
    want_c = []
    for step in range(STEPS):
        a, c = sampler.sample_batch(["A", "C"], np.stack([A_LOGITS[step], A_LOGITS[step]]),
                                    [1.0, 1.0], [SEED_A, None])
        z = A_LOGITS[step] - A_LOGITS[step].max()
        p = np.exp(z) / np.exp(z).sum()
        want_c.append(int(shared.choice(VOCAB, p=p)))
        assert c == want_c[-1], (
            f"step {step}: unseeded C must draw from the shared generator default_rng(3) "
            f"(expected {want_c[-1]}, got {c}); it must never take numbers from A's generator")
    assert sorted(sampler.generators) == ["A"], (
        f"only seeded requests own a generator; found {sorted(sampler.generators)}")
    alone = _tokens(impl.PerRequestSampler(), "A", A_LOGITS, SEED_A)
    again = impl.PerRequestSampler(seed=3)
    mixed = [again.sample_batch(["A", "C"], np.stack([A_LOGITS[s]] * 2), [1.0, 1.0],
                                [SEED_A, None])[0] for s in range(STEPS)]
    assert mixed == alone, f"an unseeded neighbor shifted A's stream: {mixed} vs alone {alone}"


def test_a_request_not_sampling_keeps_its_place(impl) -> None:
    # A samples, sits out three steps (chunked prefill, preemption) while B samples, then
    # samples again: its second token is its generator's second draw.
    uniform = np.zeros(VOCAB)
    ref = np.random.default_rng(SEED_A)
    probs = np.full(VOCAB, 1.0 / VOCAB)
    want = [int(ref.choice(VOCAB, p=probs)) for _ in range(2)]
    sampler = impl.PerRequestSampler()
    got = [sampler.sample("A", uniform, 1.0, SEED_A)]
    for _ in range(3):
        sampler.sample_batch(["B"], uniform[None, :], [1.0], [11])
    got.append(sampler.sample("A", uniform, 1.0, SEED_A))
    assert got == want, (
        f"A drew {got}, expected its generator's first two draws {want}: a step in which A "
        "does not sample must not advance A's generator")


def test_finish_drops_the_stream(impl) -> None:
    sampler = impl.PerRequestSampler()
    first = _tokens(sampler, "A", A_LOGITS[:4], SEED_A)
    sampler.finish("A")
    assert "A" not in sampler.generators, "finish must drop the request's generator"
    recycled = _tokens(sampler, "A", A_LOGITS[:4], 42)
    fresh = _tokens(impl.PerRequestSampler(), "X", A_LOGITS[:4], 42)
    assert recycled == fresh, (
        f"a recycled id with seed 42 must start a fresh stream {fresh}, got {recycled} "
        f"(first life drew {first})")
    sampler.finish("never-seen")  # unknown ids are fine


def test_a_live_request_cannot_change_its_seed(impl) -> None:
    sampler = impl.PerRequestSampler()
    sampler.sample("A", A_LOGITS[0], 1.0, SEED_A)
    with expect_raises(ValueError, "request A already draws from seed 7", match="seed"):
        sampler.sample("A", A_LOGITS[1], 1.0, SEED_A + 1)


@pytest.mark.parametrize(("args", "what"), [
    ((["A"], np.zeros(VOCAB), [1.0], [1]), "logits must be 2-D"),
    ((["A", "B"], np.zeros((1, VOCAB)), [1.0, 1.0], [1, 2]), "one id per row"),
    ((["A"], np.zeros((1, VOCAB)), [1.0, 1.0], [1]), "one temperature per row"),
    ((["A", "A"], np.zeros((2, VOCAB)), [1.0, 1.0], [1, 1]), "a request samples once a step"),
    ((["A"], np.zeros((1, VOCAB)), [-0.5], [1]), "temperature >= 0"),
])
def test_bad_batches_raise_value_error(impl, args: tuple, what: str) -> None:
    with expect_raises(ValueError, what):
        impl.PerRequestSampler().sample_batch(*args)


# -- the learner's sampler drives mini_vllm's engine (tiny Llama, float64) ---------------------

BLOCK = 4
PROMPT_A = list(range(40, 58))  # 18 tokens
NEIGHBORS = {
    "B": (list(range(90, 111)), 11),     # seeded
    "C": (list(range(120, 133)), None),  # unseeded: the shared generator
    "D": (list(range(150, 166)), "greedy"),
}
MAX_TOKENS = 10


def _params(seed: Any) -> SamplingParams:
    if seed == "greedy":
        return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    return SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, ignore_eos=True)


def _run(impl: Any, model: Any, requests: list[tuple[str, list[int], Any]],
         **engine_kw: Any) -> tuple[dict[str, list[int]], int]:
    """Run to completion; each request's output tokens and the total number of preemptions."""
    kw = {"num_blocks": 64, "block_size": BLOCK, "enable_caching": False} | engine_kw
    engine = LLMEngine(model=model, sampler=EngineSampler(impl.PerRequestSampler()), **kw)
    for rid, prompt, seed in requests:
        engine.add_request(prompt, _params(seed), request_id=rid)
    out: dict[str, list[int]] = {}
    preemptions = 0
    for _ in range(200):
        for r in engine.step():
            out[r.request_id] = list(r.output_token_ids)
            preemptions += r.num_preemptions
        if not engine.has_unfinished_requests():
            break
    assert not engine.has_unfinished_requests(), "the engine did not finish in 200 steps"
    return out, preemptions


_ALONE: list[list[int]] = []


@pytest.fixture
def alone(tiny_llama: Any, reference_impl: Any) -> list[int]:
    """A's output on the engine with the reference sampler, alone (computed once)."""
    if not _ALONE:
        out, _ = _run(reference_impl, tiny_llama, [("A", PROMPT_A, SEED_A)])
        _ALONE.append(out["A"])
    return _ALONE[0]


def _mixed(order: list[str]) -> list[tuple[str, list[int], Any]]:
    table = {"A": (PROMPT_A, SEED_A)} | NEIGHBORS
    return [(rid, *table[rid]) for rid in order]


def test_engine_seeded_output_survives_any_batch(impl, tiny_llama: Any, alone: list[int]) -> None:
    solo, _ = _run(impl, tiny_llama, [("A", PROMPT_A, SEED_A)])
    assert solo.get("A") == alone, f"A alone on the engine: expected {alone}, got {solo.get('A')}"
    for order in (["A", "B", "C", "D"], ["D", "C", "B", "A"], ["C", "A", "D", "B"]):
        out, _ = _run(impl, tiny_llama, _mixed(order))
        assert out["A"] == alone, (
            f"arrival order {order}: A (seed {SEED_A}) produced {out['A']}, alone it produced "
            f"{alone}; its neighbors (seeded B, unseeded C, greedy D) must not move its stream")
    assert len(set(map(tuple, out.values()))) == 4, "fixture check: four different outputs"


def test_engine_chunked_prefill_and_preemption_keep_the_stream(
        impl, tiny_llama: Any, alone: list[int]) -> None:
    out, preemptions = _run(impl, tiny_llama, _mixed(["B", "C", "A", "D"]), num_blocks=14,
                            max_num_batched_tokens=8)
    assert preemptions > 0, "workload check: the cramped pool should have forced preemption"
    assert out["A"] == alone, (
        f"with chunked prefill (8 tokens a step) and {preemptions} preemptions, A produced "
        f"{out['A']}; alone it produced {alone}: a step in which A does not sample, or "
        "recomputes after preemption, must leave its generator where it was")
    reference, _ = _run(impl, tiny_llama, _mixed(["B", "C", "A", "D"]))
    assert out["B"] == reference["B"], "seeded B must not depend on chunking and preemption"


def test_engine_same_seed_same_output_different_seed_differs(impl, tiny_llama: Any) -> None:
    out, _ = _run(impl, tiny_llama, [("A", PROMPT_A, SEED_A), ("A2", PROMPT_A, SEED_A),
                                     ("A3", PROMPT_A, SEED_A + 1)])
    assert out["A"] == out["A2"], (
        f"two requests with seed {SEED_A} and one prompt gave {out['A']} and {out['A2']}: "
        "each must own a generator made from its seed")
    assert out["A"] != out["A3"], f"seeds {SEED_A} and {SEED_A + 1} gave the same {out['A']}"


def test_engine_your_sampler_equals_the_stock_per_request_mode(impl, tiny_llama: Any) -> None:
    # mini_vllm's engine has the same rule built in: LLMEngine(generators="per_request") gives
    # each seeded request one generator and unseeded ones the engine's default_rng(seed). Your
    # sampler, plugged in through EngineSampler, must produce exactly its tokens.
    workload = _mixed(["B", "C", "A", "D"])
    for engine_kw in ({}, {"num_blocks": 14, "max_num_batched_tokens": 8}):
        yours, _ = _run(impl, tiny_llama, workload, **engine_kw)
        kw = {"num_blocks": 64, "block_size": BLOCK, "enable_caching": False} | engine_kw
        stock = LLMEngine(model=tiny_llama, generators="per_request", seed=0, **kw)
        for rid, prompt, seed in workload:
            stock.add_request(prompt, _params(seed), request_id=rid)
        theirs: dict[str, list[int]] = {}
        for _ in range(200):
            theirs.update({r.request_id: list(r.output_token_ids) for r in stock.step()})
            if not stock.has_unfinished_requests():
                break
        assert yours == theirs, (
            f"engine {engine_kw or 'default'}: your sampler gave {yours}, mini_vllm's "
            f"per_request mode {theirs}: seeded B and A, unseeded C (the shared generator, "
            "seed 0, drawn in the engine's order) and greedy D must all agree")
