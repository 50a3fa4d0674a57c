"""Speculative decoding in mini_vllm: lossless greedy, exact sampling, counted acceptance.

Greedy: with any proposer (n-gram, a draft model, an injected function) the engine's tokens are
the plain engine's, token for token, on the tiny Llama in float64, under prefix caching, chunked
prefill and preemption. Sampling: the rejection sampler's output has the target's distribution
(a chi-square test, false-alarm rate stated below). Counts: target forwards, never time.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams, SpeculativeConfig
from mini_vllm.models.loader import load_model
from mini_vllm.models.tiny_llama import TinyLlamaSpec, build_tiny_llama
from mini_vllm.spec_decode import (
    DraftModelProposer,
    NgramProposer,
    RejectionSampler,
    SpecDecodingStats,
    target_probs,
    truncated_model,
)
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs
from pytest_vllm_katas.live.models import (
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)
from pytest_vllm_katas.statistics import chi2_sf

PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat sat on the",
    "Zq7#kP!w2",
    "abcabcabcabcabcabc",
    "0123456789",
    "x",
    # Shares its first 32 bytes with the first prompt: prefix-cache hits.
    "the cat sat on the mat. the cat sat on a hat.",
]
GREEDY = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)


def _outputs(engine: LLMEngine, prompts: list[str], params: SamplingParams) -> list[list[int]]:
    return [o.output_token_ids for o in engine.generate(prompts, params)]


@pytest.fixture(scope="module")
def baseline(tiny_llama) -> list[list[int]]:
    return _outputs(LLMEngine(model=tiny_llama, block_size=4), PROMPTS, GREEDY)


def _ngram(k: int = 4, lo: int = 2, hi: int = 4) -> SpeculativeConfig:
    return SpeculativeConfig(method="ngram", num_speculative_tokens=k, prompt_lookup_min=lo,
                             prompt_lookup_max=hi)


# -- the n-gram rule -------------------------------------------------------------------------


def _vllm_scan(tokens: list[int], lo: int, hi: int, k: int, max_model_len: int) -> list[int]:
    """vLLM 0.32's search, ported line for line from its numba kernel: a KMP pass over the
    reversed tokens; the latest reversed position reaching the longest match (<= hi) wins."""
    total = len(tokens)
    if total < lo:
        return []
    k = min(k, max_model_len - total)
    if k <= 0:
        return []
    rev = tokens[::-1]
    lps = [0] * hi
    longest, position, prev, i = 0, 0, 0, 1
    while i < total:
        if rev[prev] == rev[i]:
            prev += 1
            if prev >= longest:
                longest, position = prev, i
            if i < hi:
                lps[i] = prev
            if prev == hi:
                prev = lps[hi - 1]
            i += 1
        elif prev:
            prev = lps[prev - 1]
        else:
            i += 1
    if longest < lo:
        return []
    start = total - 1 - position + longest
    return tokens[start:start + min(k, total - start)]


def test_ngram_prefers_the_longest_suffix_then_its_earliest_occurrence() -> None:
    proposer = NgramProposer(1, 3, num_speculative_tokens=2)
    # suffix [1, 2] occurs at 0 (followed by 7, 8) and at 4 (followed by 9, 9): earliest wins.
    assert proposer.propose([1, 2, 7, 8, 1, 2, 9, 9, 5, 1, 2]) == [7, 8]
    # the 3-gram [5, 1, 2] beats every 2-gram match.
    assert proposer.propose([1, 2, 7, 5, 1, 2, 6, 5, 1, 2]) == [6, 5]
    # only the suffix itself matches: nothing; a match near the end proposes what is left.
    assert proposer.propose([3, 4, 5]) == []
    assert proposer.propose([4, 4]) == [4]
    assert NgramProposer(3, 3, 2).propose([1, 2, 1, 2]) == [], "no 3-gram repeats"
    assert NgramProposer(1, 2, 5, max_model_len=6).propose([1, 2, 3, 1, 2]) == [3]


def test_ngram_rule_equals_vllms_scan_on_random_sequences() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        tokens = [rng.randrange(rng.choice([2, 3, 5])) for _ in range(rng.randint(1, 25))]
        lo = rng.randint(1, 3)
        hi, k = rng.randint(lo, 5), rng.randint(1, 5)
        mml = rng.choice([1000, len(tokens) + rng.randint(0, 2)])
        got = NgramProposer(lo, hi, k, max_model_len=mml).propose(tokens)
        assert got == _vllm_scan(tokens, lo, hi, k, mml), (tokens, lo, hi, k, mml)


# -- greedy is lossless ----------------------------------------------------------------------


@pytest.mark.parametrize("engine_kwargs", [
    {},
    {"max_num_batched_tokens": 8},  # chunked prefill, drafts squeezed by the budget
    {"enable_caching": False},
    {"long_prefill_token_threshold": 3, "max_num_seqs": 2},
], ids=["plain", "chunked", "no-prefix-cache", "threshold-2-seats"])
def test_ngram_greedy_is_token_identical(tiny_llama, baseline, engine_kwargs) -> None:
    engine = LLMEngine(model=tiny_llama, block_size=4, speculative_config=_ngram(),
                       **engine_kwargs)
    assert_same_outputs(baseline, _outputs(engine, PROMPTS, GREEDY),
                        labels=("plain engine", "ngram speculation"))
    stats = engine.spec_decoding_stats
    assert stats.num_accepted_tokens > 0, "these prompts repeat: some drafts must be accepted"
    pool = engine.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == engine.num_blocks - 1, "lookahead blocks leaked"


@pytest.mark.parametrize("how", ["itself", "first-layer", "other-seed"])
def test_draft_model_greedy_is_token_identical(tiny_llama, baseline, how) -> None:
    if how == "itself":
        config = SpeculativeConfig(method="draft_model", num_speculative_tokens=3)
    elif how == "first-layer":
        config = SpeculativeConfig(method="draft_model", num_speculative_tokens=3,
                                   draft_num_layers=1)
    else:
        other = load_model(build_tiny_llama(TinyLlamaSpec(seed=1)), dtype=np.float64)
        config = SpeculativeConfig(method="draft_model", num_speculative_tokens=2,
                                   draft_model=other)
    engine = LLMEngine(model=tiny_llama, block_size=4, max_num_batched_tokens=16,
                       speculative_config=config)
    assert_same_outputs(baseline, _outputs(engine, PROMPTS, GREEDY),
                        labels=("plain engine", f"draft model ({how})"))
    stats = engine.spec_decoding_stats
    if how == "itself":  # the target drafting for itself is always right
        assert stats.num_accepted_tokens == stats.num_draft_tokens > 0


def test_lossless_under_preemption_in_a_cramped_pool(tiny_llama) -> None:
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    kwargs = {"model": tiny_llama, "block_size": 4, "num_blocks": 30}
    plain = LLMEngine(**kwargs)
    expected = _outputs(plain, PROMPTS, params)
    engine = LLMEngine(**kwargs, speculative_config=_ngram(k=5, lo=1))
    outs = engine.generate(PROMPTS, params)
    assert_same_outputs(expected, [o.output_token_ids for o in outs],
                        labels=("plain engine", "ngram speculation"))
    assert sum(o.num_preemptions for o in outs) > 0, "the pool should force preemptions"
    assert engine.kv_cache_manager.block_pool.get_num_free_blocks() == 29


def test_toy_model_is_lossless_too() -> None:
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    expected = _outputs(LLMEngine(), PROMPTS, params)
    got = _outputs(LLMEngine(speculative_config=_ngram(lo=1)), PROMPTS, params)
    assert_same_outputs(expected, got, labels=("plain engine", "ngram speculation"))


def _oracle(expected: dict[tuple[int, ...], list[int]], k: int, right: int):
    """A proposer that knows the plain engine's continuation: its first ``right`` drafts are
    correct, the rest are wrong on purpose."""
    def propose(token_ids: list[int]) -> list[int]:
        for prompt, output in expected.items():
            if tuple(token_ids[:len(prompt)]) == prompt:
                done = len(token_ids) - len(prompt)
                drafts = output[done:done + k]
                return drafts[:right] + [(t + 1) % 257 for t in drafts[right:]]
        raise AssertionError("unknown sequence")
    return propose


def test_acceptance_is_counted_per_position(tiny_llama, baseline) -> None:
    prompts = PROMPTS[:2]
    table = {tuple(o.prompt_token_ids): o.output_token_ids for o in
             LLMEngine(model=tiny_llama).generate(prompts, GREEDY)}
    config = SpeculativeConfig(num_speculative_tokens=3, proposer=_oracle(table, 3, right=1))
    engine = LLMEngine(model=tiny_llama, speculative_config=config)
    assert_same_outputs(baseline[:2], _outputs(engine, prompts, GREEDY))
    stats = engine.spec_decoding_stats
    # Every verify accepts draft 0 and rejects draft 1 (which ends the step): 2 tokens a step.
    assert stats.num_accepted_tokens_per_pos == [stats.num_drafts, 0, 0]
    assert stats.mean_acceptance_length == 2.0
    # Per request: 1 prefill forward, then 2 tokens per forward, the last step capped by
    # max_tokens (drafts are capped to what max_tokens leaves room for).
    assert engine.model_runner.num_steps == 1 + 20


def test_all_drafts_accepted_emit_the_bonus_and_respect_max_tokens(tiny_llama) -> None:
    params = SamplingParams(max_tokens=23, temperature=0.0, ignore_eos=True)
    outs = LLMEngine(model=tiny_llama).generate(PROMPTS[:1], params)
    table = {tuple(outs[0].prompt_token_ids): outs[0].output_token_ids}
    config = SpeculativeConfig(num_speculative_tokens=4, proposer=_oracle(table, 4, right=4))
    engine = LLMEngine(model=tiny_llama, speculative_config=config)
    got = engine.generate(PROMPTS[:1], params)[0]
    assert got.output_token_ids == outs[0].output_token_ids
    # prefill emits 1; then 5 per verify (4 accepted + bonus): 1 + 5 * 4 = 21, then 2 more.
    assert engine.model_runner.num_steps == 1 + 4 + 1
    stats = engine.spec_decoding_stats
    assert stats.num_drafts == 5 and stats.num_draft_tokens == 4 * 4 + 1


def test_a_stop_inside_the_accepted_drafts_drops_what_follows(tiny_llama, baseline) -> None:
    stop_token = baseline[0][9]  # lands mid-step with k = 4

    def check_stop(request) -> bool:
        from mini_vllm.request import RequestStatus
        if request.output_token_ids[-1] == stop_token:
            request.status = RequestStatus.FINISHED_STOPPED
            return True
        return request.maybe_finish()

    expected = _outputs(LLMEngine(model=tiny_llama, check_stop=check_stop), PROMPTS[:1], GREEDY)
    table = {tuple(LLMEngine(model=tiny_llama).generate(PROMPTS[:1], GREEDY)[0]
                   .prompt_token_ids): baseline[0]}
    config = SpeculativeConfig(num_speculative_tokens=4, proposer=_oracle(table, 4, right=4))
    engine = LLMEngine(model=tiny_llama, check_stop=check_stop, speculative_config=config)
    assert _outputs(engine, PROMPTS[:1], GREEDY) == expected
    assert expected[0][-1] == stop_token and len(expected[0]) <= 10


def test_repetitive_text_needs_fewer_target_forwards(tiny_llama) -> None:
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)

    def tokens_per_forward(prompt: str) -> float:
        engine = LLMEngine(model=tiny_llama, speculative_config=_ngram(lo=2))
        out = engine.generate([prompt], params)[0]
        return len(out.output_token_ids) / engine.model_runner.num_steps

    assert tokens_per_forward(PROMPTS[0]) > 1.5
    assert tokens_per_forward("Zq7#kP!w2") < 1.05  # nothing repeats: one token per forward


# -- sampling is exact -------------------------------------------------------------------------


def test_chi2_sf_matches_known_values() -> None:
    assert abs(chi2_sf(3.841459, 1) - 0.05) < 1e-6
    assert abs(chi2_sf(5.991465, 2) - 0.05) < 1e-6
    assert abs(chi2_sf(7.814728, 3) - 0.05) < 1e-6
    assert abs(chi2_sf(24.99579, 15) - 0.05) < 1e-6


V = 5
PARAMS = SamplingParams(temperature=0.8, top_k=4, top_p=0.95)


def test_temperature_path_samples_the_targets_joint_distribution() -> None:
    """A synthetic target and draft, each a bigram model over 5 tokens (next-token logits depend
    on the previous token and the position), drive the engine's RejectionSampler with k = 2:
    the first two emitted tokens must follow the target's joint distribution p0(a) * p1(b | a)
    after temperature 0.8, top-k 4, top-p 0.95 — for drafts sampled from q, and for one-hot
    drafts (n-gram style, ``draft_probs=None``). Chi-square over the cells the target can emit
    (top-k and top-p empty the others, which must stay empty), 6 000 samples each; the test
    fails when the p-value is below 1e-4, so a correct sampler fails it with
    probability 1e-4 per fixed seed (the seed is fixed: it never flakes).
    """
    rng = np.random.default_rng(1234)
    target_w = rng.normal(size=(4, V + 1, V)) * 1.5  # [position, previous (V = none), next]
    draft_w = target_w + rng.normal(size=target_w.shape)
    sampler = RejectionSampler()

    def p_of(w, position, previous):
        return target_probs(w[position, previous], PARAMS)

    expected = np.zeros((V, V))
    for a in range(V):
        expected[a] = p_of(target_w, 0, V)[a] * p_of(target_w, 1, a)

    for with_probs in (True, False):
        counts = np.zeros((V, V))
        for _ in range(6_000):
            out: list[int] = []
            while len(out) < 2:
                pos, prev = len(out), (out[-1] if out else V)
                drafts, q_rows, rows = [], [], [target_w[pos, prev]]
                for j in range(2):
                    q = p_of(draft_w, pos + j, prev)
                    x = (int(np.searchsorted(np.cumsum(q), rng.random(), side="right"))
                         if with_probs else int(np.argmax(q)))
                    drafts.append(x)
                    q_rows.append(q)
                    rows.append(target_w[pos + j + 1, x])
                    prev = x
                out += sampler(drafts, np.array(rows), PARAMS,
                               draft_probs=np.array(q_rows) if with_probs else None, rng=rng)
            counts[out[0], out[1]] += 1
        n = counts.sum()
        zero = expected == 0
        assert counts[zero].sum() == 0, "a token masked by top-k/top-p was emitted"
        chi2 = float((((counts - n * expected) ** 2)[~zero] / (n * expected[~zero])).sum())
        p_value = chi2_sf(chi2, int((~zero).sum()) - 1)
        assert p_value > 1e-4, (with_probs, chi2, p_value, counts / n, expected)


def test_greedy_rejection_sampler_keeps_the_prefix_plus_one() -> None:
    logits = np.eye(6)[[3, 1, 4, 1]]  # argmaxes 3, 1, 4, 1
    sampler = RejectionSampler()
    greedy = SamplingParams(temperature=0.0)
    assert sampler([3, 1, 5], logits, greedy) == [3, 1, 4], "correction at the first mismatch"
    assert sampler([3, 1, 4], logits, greedy) == [3, 1, 4, 1], "bonus when all match"
    assert sampler([0, 1, 4], logits, greedy) == [3]
    with expect_raises(ValueError, "k drafts need k + 1 logits rows", match="k \\+ 1"):
        sampler([3, 1], logits, greedy)


def test_seeded_temperature_requests_are_reproducible(tiny_llama) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.9, seed=7)
    runs = [_outputs(LLMEngine(model=tiny_llama, speculative_config=_ngram(lo=1)),
                     PROMPTS[:3], params) for _ in range(2)]
    assert runs[0] == runs[1]


# -- configuration -----------------------------------------------------------------------------


def test_config_and_proposer_errors(tiny_llama) -> None:
    with expect_raises(ValueError, "unknown method", match="method"):
        SpeculativeConfig(method="eagle")
    with expect_raises(ValueError, "k must be >= 1", match="num_speculative_tokens"):
        SpeculativeConfig(num_speculative_tokens=0)
    with expect_raises(ValueError, "min > max", match="prompt_lookup_min"):
        SpeculativeConfig(prompt_lookup_min=4, prompt_lookup_max=2)
    assert SpeculativeConfig(prompt_lookup_max=3).prompt_lookup_min == 3
    with expect_raises(ValueError, "the toy has no layers to draft with", match="real draft"):
        LLMEngine(speculative_config=SpeculativeConfig(method="draft_model"))
    bad = LLMEngine(model=tiny_llama,
                    speculative_config=SpeculativeConfig(proposer=lambda ids: [999]))
    with expect_raises(ValueError, "draft ids must be in the vocabulary", match="draft\\[0\\]"):
        bad.generate(["hi"], GREEDY)
    with expect_raises(ValueError, "truncation beyond the model", match="num_layers"):
        truncated_model(tiny_llama, 3)


def test_stats_and_draft_proposer_units(tiny_llama) -> None:
    stats = SpecDecodingStats(num_spec_tokens=3)
    stats.observe_draft(3, 2)
    stats.observe_draft(2, 0)
    assert stats.num_accepted_tokens_per_pos == [1, 1, 0]
    assert stats.num_draft_tokens_per_pos == [2, 2, 1]
    assert stats.acceptance_rate == 2 / 5 and stats.mean_acceptance_length == 2.0
    proposer = DraftModelProposer(tiny_llama, 3)
    ids = list(b"the cat sat")
    drafts = proposer.propose(ids)
    expected = LLMEngine(model=tiny_llama).generate(
        [ids], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))[0]
    assert drafts == expected.output_token_ids, "the model drafting for itself is greedy decoding"
    assert proposer.num_forwards == 3


# -- SmolLM2 -------------------------------------------------------------------------------------


@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_smollm2_speculation_is_lossless() -> None:
    from mini_vllm import LLM

    llm = LLM(smollm2_path(), max_model_len=256)
    prompts = ["the cat sat on the mat. the cat sat on the mat. the cat",
               "The capital of France is"]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    expected = _outputs(llm.engine, prompts, params)
    # A 2-layer draft accepts little, but every one of its drafts is verified: losslessness is
    # what is under test here (acceptance is the tiny Llama's tests' job), at a README-suite cost.
    for config in (_ngram(k=4, lo=1, hi=3),
                   SpeculativeConfig(method="draft_model", num_speculative_tokens=3,
                                     draft_num_layers=2)):
        engine = LLMEngine(model=llm.model, tokenizer=llm.tokenizer, max_model_len=256,
                           num_blocks=64, speculative_config=config)
        assert_same_outputs(expected, _outputs(engine, prompts, params),
                            labels=("plain engine", config.method))
        assert engine.spec_decoding_stats.num_drafts > 0, f"{config.method} never drafted"
        if config.method == "ngram":  # the repeated sentence is the n-gram proposer's home
            assert engine.spec_decoding_stats.num_accepted_tokens > 0


def test_logits_processing_knobs_are_refused_rather_than_ignored(tiny_llama) -> None:
    engine = LLMEngine(model=tiny_llama, block_size=4, speculative_config=_ngram(k=2, lo=1, hi=2))
    with pytest.raises(ValueError, match="does not apply min_tokens, logit_bias yet"):
        engine.add_request("ab", SamplingParams(max_tokens=4, min_tokens=1, logit_bias={5: 1.0}))
    assert not engine.has_unfinished_requests()
    engine.add_request("ab", SamplingParams(max_tokens=4, temperature=0.0))  # plain knobs: fine
