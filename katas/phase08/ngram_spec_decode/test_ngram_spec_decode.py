"""Spec for kata 08-01: n-gram drafts, greedy verification, and the speculative loop.

The target is a deterministic function ``target(context) -> token``. Two of them: a periodic one
(the next token depends only on the context length, so the text repeats every 8 tokens) and a
scrambled one (a hash of the length and the last token over a billion ids: nothing repeats).
"""

from __future__ import annotations

import random

import pytest

from mini_vllm import LLMEngine, SamplingParams, SpeculativeConfig
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

PATTERN = [3, 1, 4, 1, 5, 9, 2, 6]
PROMPT = PATTERN * 2
RANDOM_PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]


def periodic(context: list[int]) -> int:
    return PATTERN[len(context) % len(PATTERN)]


def scrambled(context: list[int]) -> int:
    return random.Random(len(context) * 1_000_003 + context[-1]).randrange(10**9)


def _check_run(result, num_tokens: int) -> tuple[list[int], dict]:
    assert isinstance(result, tuple) and len(result) == 2, (
        f"run_speculative must return (tokens, stats), got {result!r}")
    tokens, stats = result
    assert isinstance(stats, dict) and {"proposed", "accepted", "runs"} <= set(stats), (
        f"stats must be a dict with 'proposed', 'accepted' and 'runs', got {stats!r}")
    assert len(tokens) == num_tokens, (
        f"asked for {num_tokens} tokens, got {len(tokens)}: a run may emit up to k + 1 tokens, "
        f"so the last one must not overshoot (cap its proposal to what is left)")
    return list(tokens), stats


# -- ngram_propose ----------------------------------------------------------------------------


def test_propose_finds_the_most_recent_earlier_occurrence(impl) -> None:
    context = [1, 2, 7, 1, 2, 8, 1, 2]
    got = impl.ngram_propose(context, 2, 1)
    assert got == [8], (
        f"[1, 2] occurs at positions 0 and 3 before the suffix; the most recent (3) is followed "
        f"by 8, the earliest by 7. Expected [8], got {got!r}")
    assert impl.ngram_propose(context, 2, 3) == [8, 1, 2]


def test_propose_never_matches_the_suffix_itself(impl) -> None:
    got = impl.ngram_propose([1, 2, 3, 1, 2], 2, 3)
    assert got == [3, 1, 2], (
        f"the suffix [1, 2] occurs earlier at position 0, followed by 3, 1, 2; got {got!r} (the "
        f"suffix's own position at the end is not an earlier occurrence: nothing follows it)")
    assert impl.ngram_propose([5, 6, 7], 2, 3) == [], "[6, 7] occurs only as the suffix"
    assert impl.ngram_propose([4, 4], 1, 2) == [4], "the earlier 4 is followed by the suffix 4"


def test_propose_returns_at_most_k_tokens(impl) -> None:
    got = impl.ngram_propose([1, 2, 3, 4, 5, 1], 1, 2)
    assert got == [2, 3], f"k = 2: the two tokens after the earlier 1, got {got!r}"
    got = impl.ngram_propose([1, 2, 1], 1, 5)
    assert got == [2, 1], f"a match near the end proposes what there is (fewer than k), got {got!r}"


def test_propose_edge_cases(impl) -> None:
    assert impl.ngram_propose([1, 2, 1, 2], 2, 0) == [], "k = 0 proposes nothing"
    assert impl.ngram_propose([1, 2], 2, 3) == [], "n = len(context): no earlier occurrence"
    assert impl.ngram_propose([1], 4, 3) == [], "n > len(context): nothing to match"
    assert impl.ngram_propose([], 1, 3) == [], "an empty context proposes nothing"
    with expect_raises(ValueError, "an n-gram needs n >= 1", match="n"):
        impl.ngram_propose([1, 2, 1], 0, 2)
    with expect_raises(ValueError, "k cannot be negative", match="k"):
        impl.ngram_propose([1, 2, 1], 1, -1)


# -- verify_greedy -----------------------------------------------------------------------------


def test_verify_accepts_the_matching_prefix_then_corrects(impl) -> None:
    got = impl.verify_greedy(PROMPT, [3, 1, 9, 9], periodic)
    assert got == ([3, 1, 4], 2), (
        f"the target continues 3, 1, 4: accept 3 and 1, then emit the target's 4 instead of the "
        f"draft 9 (the correction) and stop. Expected ([3, 1, 4], 2), got {got!r}")
    got = impl.verify_greedy(PROMPT, [7], periodic)
    assert got == ([3], 0), f"a wrong first draft still yields the correction 3, got {got!r}"


def test_verify_appends_the_bonus_when_all_are_accepted(impl) -> None:
    got = impl.verify_greedy(PROMPT, [3, 1, 4, 1], periodic)
    assert got == ([3, 1, 4, 1, 5], 4), (
        f"all 4 drafts match, so the run also emits the target's next token (5): k accepted "
        f"means k + 1 emitted. Expected ([3, 1, 4, 1, 5], 4), got {got!r}")
    got = impl.verify_greedy(PROMPT, [], periodic)
    assert got == ([3], 0), f"no drafts: the run is a plain decode step, got {got!r}"


def test_verify_uses_the_evolving_context(impl) -> None:
    got = impl.verify_greedy(PROMPT, [3, 1, 4], periodic)
    assert got == ([3, 1, 4, 1], 3), (
        f"draft i must be checked against target(context + accepted[:i]), not target(context): "
        f"expected ([3, 1, 4, 1], 3), got {got!r}")


# -- the loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "prompt"), [(periodic, PROMPT), (scrambled, RANDOM_PROMPT)],
                         ids=["periodic", "random"])
@pytest.mark.parametrize(("n", "k"), [(1, 4), (2, 4), (3, 1), (2, 7)])
def test_output_equals_baseline(impl, target, prompt, n, k) -> None:
    expected = impl.run_baseline(prompt, target, 30)
    assert len(expected) == 30, f"run_baseline must return 30 tokens, got {len(expected)}"
    tokens, _ = _check_run(impl.run_speculative(prompt, target, n, k, 30), 30)
    first = next((i for i, (a, b) in enumerate(zip(tokens, expected, strict=True)) if a != b),
                 None)
    assert tokens == expected, (
        f"speculation must not change greedy output: first difference at token {first} "
        f"(got {tokens[first]}, greedy decoding gives {expected[first]})")


def test_baseline_is_plain_greedy(impl) -> None:
    assert impl.run_baseline(PROMPT, periodic, 5) == [3, 1, 4, 1, 5]
    assert impl.run_baseline(PROMPT, periodic, 0) == []


def test_periodic_text_needs_few_runs(impl) -> None:
    _, stats = _check_run(impl.run_speculative(PROMPT, periodic, 2, 4, 42), 42)
    assert stats == {"proposed": 33, "accepted": 33, "runs": 9}, (
        f"on the periodic text every draft is right: 8 runs of 4 drafts + bonus (40 tokens), "
        f"then one run proposing the 1 draft that fits before 42 (+ bonus). Expected "
        f"proposed=33, accepted=33, runs=9, got {stats!r}")
    tokens_per_run = (stats["accepted"] + stats["runs"]) / stats["runs"]
    assert tokens_per_run == 42 / 9


def test_random_text_needs_one_run_per_token(impl) -> None:
    _, stats = _check_run(impl.run_speculative(RANDOM_PROMPT, scrambled, 2, 4, 30), 30)
    assert stats["accepted"] == 0 and stats["proposed"] == 3, (
        f"the prompt's repeat yields one proposal [3, 1, 2], which the target rejects; nothing "
        f"repeats after that. Expected proposed=3, accepted=0, got {stats!r}")
    assert stats["runs"] == 30, (
        f"every run emits exactly one token when nothing is accepted, and a run with no "
        f"proposal is still a run: expected 30, got {stats['runs']}")


def test_no_overshoot_past_num_tokens(impl) -> None:
    for num_tokens in (1, 3, 7, 43):
        tokens, stats = _check_run(impl.run_speculative(PROMPT, periodic, 2, 4, num_tokens),
                                   num_tokens)
        assert stats["accepted"] + stats["runs"] == num_tokens, (
            f"each run emits accepted + 1 tokens and none may be dropped: accepted + runs must "
            f"be {num_tokens}, got {stats!r}")
    assert impl.run_speculative(PROMPT, periodic, 2, 4, 0)[0] == []


# -- your proposer in mini_vllm ----------------------------------------------------------------

ENGINE_PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat sat on the",
    "abcabcabcabcabcabc",
    "Zq7#kP!w2",
]


def _engine_run(model, n: int, k: int, proposer=None, **kwargs):
    config = None if proposer is None else SpeculativeConfig(num_speculative_tokens=k,
                                                             proposer=proposer)
    engine = LLMEngine(model=model, speculative_config=config, **kwargs)
    params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    return engine, [o.output_token_ids for o in engine.generate(ENGINE_PROMPTS, params)]


def test_your_proposer_drives_the_engine(impl, tiny_llama) -> None:
    calls = []

    def propose(token_ids):
        calls.append(len(token_ids))
        return impl.ngram_propose(token_ids, 2, 4)

    _, expected = _engine_run(tiny_llama, 2, 4)
    engine, got = _engine_run(tiny_llama, 2, 4, proposer=propose, block_size=4,
                              max_num_batched_tokens=24)
    assert calls, "the engine never called your proposer"
    assert_same_outputs(expected, got, labels=("plain engine", "your proposer"))
    stats = engine.spec_decoding_stats
    assert stats.num_accepted_tokens > 0, "your drafts were never accepted on repetitive text"
    emitted = sum(map(len, got))
    assert engine.model_runner.num_steps < emitted, (
        f"{emitted} tokens took {engine.model_runner.num_steps} target forwards: accepted drafts "
        f"must save forwards")
