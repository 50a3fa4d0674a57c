"""Spec for kata 09-03: beam search as vLLM emulates it, first on hand-written probability trees
(where every number can be checked by hand), then on mini_vllm's seeded tiny Llama.

The trees spell tokens as capital letters (``A`` is id 0 ... ``Z`` is id 25) and EOS as ``$``
(id 26), so a hypothesis reads as a word: ``"BC"``, ``"S$"``. No tree has two candidates with
the same probability unless the test is about ties (a tie tests the tie-break rule, not the
search).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from katas.phase09.beam_search.scaffold import (
    DenseStepModel,
    EngineStepModel,
    StepModel,
    restricted,
    table_model,
)
from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.beam_search import BeamSearchParams
from mini_vllm.beam_search import beam_search as engine_beam_search
from mini_vllm.tokenizer import EOS_TOKEN_ID
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

EOS = 26
VOCAB = 27
SAME_ORDER = "float64-same-order"  # the same additions in the same order: equal to the last bit
REORDERED = "float64-reordered"  # a sum that may be formed in another order


def ids(word: str) -> tuple[int, ...]:
    return tuple(EOS if c == "$" else ord(c) - ord("A") for c in word)


def word(tokens: tuple[int, ...]) -> str:
    return "".join("$" if t == EOS else chr(ord("A") + t) if 0 <= t < 26 else f"<{t}>"
                   for t in tokens)


def tree(rows: Mapping[str, Mapping[str, float]], *, prompt: str = "",
         default: Mapping[str, float] | None = None) -> StepModel:
    """A ``table_model`` from rows written as words: ``{"A": {"X": 0.51, "Y": 0.49}}``."""
    def row(probs: Mapping[str, float]) -> dict[int, float]:
        return {ids(c)[0]: p for c, p in probs.items()}

    return table_model({ids(k): row(v) for k, v in rows.items()}, VOCAB, prompt=ids(prompt),
                       default=None if default is None else row(default))


class Recorder:
    """A step model that remembers every sequence it was asked about."""

    def __init__(self, step: StepModel) -> None:
        self.step = step
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, tokens: tuple[int, ...]) -> np.ndarray:
        self.calls.append(tuple(int(t) for t in tokens))
        return self.step(tokens)


Hyp = tuple[tuple[int, ...], float]  # (tokens, cum_logprob), as a Beam unpacks


def _hyp(result: object, what: str) -> Hyp:
    assert isinstance(result, tuple) and len(result) == 2, (
        f"{what} is a scaffold.Beam(tokens, cum_logprob), got {result!r}"
    )
    tokens, score = result
    assert isinstance(tokens, tuple) and all(isinstance(t, int) for t in tokens), (
        f"{what}: tokens must be a tuple of Python ints (the generated tokens), got {tokens!r}"
    )
    assert isinstance(score, float), f"{what}: cum_logprob must be a float, got {score!r}"
    return tokens, score


def greedy(impl: Any, step: StepModel, prompt: Sequence[int] = (), *, max_tokens: int,
           eos: int | None = EOS) -> Hyp:
    return _hyp(impl.greedy_decode(step, tuple(prompt), max_tokens=max_tokens,
                                   eos_token_id=eos), "greedy_decode's result")


def beams(impl: Any, step: StepModel, prompt: Sequence[int] = (), *, width: int,
          max_tokens: int, eos: int | None = EOS, alpha: float = 0.0) -> list[Hyp]:
    result = impl.beam_search(step, tuple(prompt), beam_width=width, max_tokens=max_tokens,
                              eos_token_id=eos, length_penalty=alpha)
    assert isinstance(result, list), f"beam_search returns a list of Beam, got {result!r}"
    assert 1 <= len(result) <= width, (
        f"beam_search returns between 1 and beam_width = {width} hypotheses, got {len(result)}: "
        f"{result!r:.300}"
    )
    return [_hyp(b, f"beam_search's result[{i}]") for i, b in enumerate(result)]


def words(hyps: list[Hyp]) -> list[str]:
    return [word(t) for t, _ in hyps]


# -- the fixtures -------------------------------------------------------------------------------

# The course's garden path: greedy takes A (0.6) into a near coin flip (best 0.51, joint 0.306);
# the humble B (0.4) leads to C with 0.9 (joint 0.36).
TRAP = {"": {"A": 0.6, "B": 0.4}, "A": {"X": 0.51, "Y": 0.49}, "B": {"C": 0.9, "D": 0.1}}

# Width 2 keeps AC (0.275) and BF (0.27) and prunes BG (0.18), which would have led to H with
# certainty: the best sequence, BGH at 0.18, is lost. Beam search is not exhaustive search.
PRUNE = {"": {"A": 0.55, "B": 0.45}, "A": {"C": 0.5, "D": 0.4, "E": 0.1},
         "B": {"F": 0.6, "G": 0.4}, "BG": {"H": 1.0}}
PRUNE_DEFAULT = {"X": 0.5, "Y": 0.3, "Z": 0.2}

# S then EOS is the most probable sequence (0.495), found at step 2; the long L... beams keep
# going to max_tokens = 4. Other sequences continue with U 0.8 / V 0.2.
EOS_TREE = {"": {"S": 0.55, "L": 0.45}, "S": {"$": 0.9, "T": 0.1}, "L": {"M": 0.6, "N": 0.4},
            "LM": {"O": 0.6, "P": 0.4}, "LN": {"Q": 0.7, "R": 0.3},
            "LMO": {"U": 0.8, "V": 0.2}, "LNQ": {"U": 0.9, "V": 0.1}}
EOS_DEFAULT = {"U": 0.8, "V": 0.2}

# EOS is only the 4th most likely first token (0.15): vLLM asks the engine for 2 * beam_width
# log-probs per beam, so at width 1 the search never sees it, at width 2 it does.
PROPOSALS = {"": {"A": 0.35, "B": 0.3, "C": 0.2, "$": 0.15}}
PROPOSALS_DEFAULT = {"D": 0.3, "E": 0.25, "F": 0.2, "G": 0.15, "H": 0.1}

FIXTURES = {
    "trap": (lambda: tree(TRAP), 2),
    "prune": (lambda: tree(PRUNE, default=PRUNE_DEFAULT), 3),
    "eos": (lambda: tree(EOS_TREE, default=EOS_DEFAULT), 4),
    "proposals": (lambda: tree(PROPOSALS, default=PROPOSALS_DEFAULT), 2),
}
GREEDY_PATHS = {"trap": ("AX", 0.306), "prune": ("ACX", 0.1375), "eos": ("S$", 0.495),
                "proposals": ("AD", 0.105)}


# -- the course's tests -------------------------------------------------------------------------


def test_greedy_takes_the_garden_path(impl) -> None:
    tokens, score = greedy(impl, tree(TRAP), max_tokens=2, eos=None)
    assert word(tokens) == "AX", (
        f"greedy takes the most probable token at every step: A (0.6), then X (0.51); got "
        f"{word(tokens)}"
    )
    assert_close(score, math.log(0.6) + math.log(0.51), cause=REORDERED,
                 what="greedy's summed log-prob, log 0.6 + log 0.51")
    assert round(math.exp(score), 2) == 0.31, f"joint ~ 0.31, got {math.exp(score):.4f}"


def test_beam_escapes_the_trap(impl) -> None:
    got = beams(impl, tree(TRAP), width=2, max_tokens=2, eos=None)
    assert words(got) == ["BC", "AX"], (
        f"width 2 keeps both first steps; pooling their children, BC (0.4 x 0.9 = 0.36) beats "
        f"AX (0.306), AY (0.294) and BD (0.04): expected [BC, AX], got {words(got)}"
    )
    assert_close([s for _, s in got], [math.log(0.4) + math.log(0.9), math.log(0.6) +
                                       math.log(0.51)], cause=REORDERED,
                 what="cum_logprob of [BC, AX]: the summed log-probs, log 0.36 and log 0.306")
    greedy_score = greedy(impl, tree(TRAP), max_tokens=2, eos=None)[1]
    assert got[0][1] > greedy_score, "the beam's best must strictly beat greedy's 0.306"


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_beam_width_one_is_greedy(impl, fixture: str) -> None:
    make, max_tokens = FIXTURES[fixture]
    path, joint = GREEDY_PATHS[fixture]
    g_tokens, g_score = greedy(impl, make(), max_tokens=max_tokens)
    assert word(g_tokens) == path, (
        f"greedy on the {fixture} tree takes {path} (joint {joint}), stopping right after EOS "
        f"if it comes; got {word(g_tokens)}"
    )
    assert_close(math.exp(g_score), joint, cause=REORDERED, what="greedy's joint probability")
    got = beams(impl, make(), width=1, max_tokens=max_tokens, alpha=0.0)
    assert got[0][0] == g_tokens, (
        f"width 1 with raw summed log-probs (length_penalty 0) is greedy: {path}, got "
        f"{word(got[0][0])}"
    )
    assert_close(got[0][1], g_score, cause=SAME_ORDER, what="width-1 score vs greedy's")


@pytest.mark.parametrize("fixture", ["trap", "prune"])
def test_wider_beams_never_score_worse(impl, fixture: str) -> None:
    # True on these trees (the course's sanity property), not a law of beam search:
    # test_wider_is_not_always_better shows a real model where width 3 loses to width 2.
    make, max_tokens = FIXTURES[fixture]
    best = [beams(impl, make(), width=k, max_tokens=max_tokens)[0] for k in range(1, 6)]
    scores = [round(math.exp(s), 4) for _, s in best]
    expected = {"trap": [0.306, 0.36, 0.36, 0.36, 0.36],
                "prune": [0.1375, 0.1375, 0.1375, 0.18, 0.18]}[fixture]
    assert scores == expected, (
        f"{fixture} tree, best joint probability at widths 1..5 should be {expected} (never "
        f"decreasing on this tree), got {scores} ({[word(t) for t, _ in best]})"
    )


def test_eos_finishes_a_beam(impl) -> None:
    got = beams(impl, tree(EOS_TREE, default=EOS_DEFAULT), width=2, max_tokens=4)
    assert words(got) == ["S$", "LMOU"], (
        "S$ (0.495) finishes at step 2 and must be kept, un-extended, until the final ranking, "
        "where it beats the best 4-token beam LMOU (0.1296); expected [S$, LMOU], got "
        f"{words(got)}"
    )
    assert_close(got[0][1], math.log(0.55) + math.log(0.9), cause=REORDERED,
                 what="the finished beam's cum_logprob (log 0.55 + log 0.9, EOS included)")


def test_finished_beams_take_no_slot_and_are_never_extended(impl) -> None:
    step = Recorder(tree(EOS_TREE, default=EOS_DEFAULT))
    beams(impl, step, width=2, max_tokens=4)
    expected = sorted(ids(w) for w in ("", "S", "L", "LM", "LN", "LMO", "LNQ"))
    assert sorted(step.calls) == expected, (
        "the step model is asked once per live beam per step, with prompt + its tokens: "
        "step 1 '', step 2 S and L, then S$ leaves the live set (it takes no slot) so LM and LN "
        f"are both live at step 3, then LMO and LNQ. Expected calls "
        f"{sorted(word(c) for c in expected)}, got {sorted(word(c) for c in step.calls)}"
    )


def test_only_the_best_k_overall_survive(impl) -> None:
    step = Recorder(tree(PRUNE, default=PRUNE_DEFAULT))
    got = beams(impl, step, width=2, max_tokens=3)
    assert words(got) == ["ACX", "BFX"], (
        "after step 2 the pool is AC .275, BF .27, AD .22, BG .18, AE .055; only the best 2 "
        "overall (AC, BF) live on, so BG, and BGH (0.18, the best sequence), are lost: expected "
        f"[ACX, BFX], got {words(got)}"
    )
    live_at_step_3 = sorted(word(c) for c in step.calls if len(c) == 2)
    assert live_at_step_3 == ["AC", "BF"], (
        f"exactly beam_width = 2 hypotheses live at step 3 (the best 2 of the pooled children "
        f"of all beams, not the best 2 children of each beam); the model saw {live_at_step_3}"
    )


def test_only_a_beams_top_2k_proposals_can_finish(impl) -> None:
    make, _ = FIXTURES["proposals"]
    narrow = beams(impl, make(), width=1, max_tokens=2)
    assert words(narrow) == ["AD"], (
        "at width 1 a beam proposes its 2 most likely tokens (A, B); EOS is 4th, never "
        "proposed, so it cannot finish even though $ (0.15) beats AD (0.105): expected [AD], "
        f"got {words(narrow)}"
    )
    wide = beams(impl, make(), width=2, max_tokens=2)
    assert words(wide) == ["$", "AD"], (
        "at width 2 each beam proposes 4 tokens, EOS among them: expected [$, AD], got "
        f"{words(wide)}"
    )


def test_a_beam_with_few_children_narrows_the_search(impl) -> None:
    few = tree({"": {"A": 1.0}, "A": {"B": 0.7, "C": 0.3}}, default={"D": 1.0})
    got = beams(impl, few, width=3, max_tokens=2)
    assert words(got) == ["AB", "AC"], (
        "impossible tokens (log-prob -inf) are never candidates: A is the only first token and "
        f"it has two children, so width 3 returns [AB, AC] and nothing else, got {words(got)}"
    )


def test_ties_go_to_the_smaller_token_sequence(impl) -> None:
    coin = tree({"": {"A": 0.5, "B": 0.5}}, default={"C": 0.5, "D": 0.5})
    got = beams(impl, coin, width=2, max_tokens=2)
    assert words(got) == ["AC", "AD"], (
        "AC, AD, BC, BD all score log 0.25; equal scores go to the smaller token sequence "
        f"(tuple order), so width 2 keeps [AC, AD], got {words(got)}"
    )
    assert words(beams(impl, coin, width=1, max_tokens=2)) == ["AC"], (
        "width 1 on a tie takes the lower token id, like argmax (and like greedy_decode)"
    )
    assert word(greedy(impl, coin, max_tokens=2)[0]) == "AC", "greedy ties go to the lower id"


def test_scores_are_summed_log_probs(impl) -> None:
    # 0.3 ** 700 is about 1e-366: a product of probabilities underflows to 0, a sum of logs
    # does not.
    steady = tree({}, default={"A": 0.3, "B": 0.25, "C": 0.2, "D": 0.15, "E": 0.1})
    got = beams(impl, steady, width=2, max_tokens=700, eos=None)
    assert got[0][0] == ids("A" * 700) and np.isfinite(got[0][1]), (
        f"700 steps of A (0.3): the best is A x 700 with a finite score, got "
        f"{word(got[0][0])[:12]}... score {got[0][1]}"
    )
    assert_close(got[0][1], 700 * math.log(0.3), cause=REORDERED, what="700 x log 0.3")


# -- vLLM's score and its length penalty -------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "cum", "eos", "alpha", "expected"),
    [
        pytest.param([5, 6, 7, 8], -6.0, 9, 1.0, -1.5, id="length_4"),
        pytest.param([5, 6, 7, 9], -6.0, 9, 1.0, -2.0, id="a_final_eos_does_not_count"),
        pytest.param([9, 6, 7, 8], -6.0, 9, 1.0, -1.5, id="only_a_final_eos_is_discounted"),
        pytest.param([5, 6, 9], -6.0, None, 1.0, -2.0, id="no_eos_id"),
        pytest.param([5, 6, 7, 8], -6.0, 9, 0.0, -6.0, id="alpha_0_is_the_raw_sum"),
        pytest.param([5, 6, 7, 8], -6.0, 9, 0.5, -3.0, id="alpha_half"),
        pytest.param([5, 6, 7, 8], -6.0, 9, 2.0, -0.375, id="alpha_2"),
        pytest.param([9], -1.2, 9, 1.0, -1.2, id="just_eos_counts_as_length_1"),
    ],
)
def test_beam_score_matches_upstream(impl, tokens: list[int], cum: float, eos: int | None,
                                     alpha: float, expected: float) -> None:
    got = impl.beam_score(tokens, cum, eos, alpha)
    assert_close(got, expected, cause="arithmetic",
                 what=f"beam_score({tokens}, {cum}, eos={eos}, length_penalty={alpha}): "
                      "cum_logprob / length ** length_penalty, where the length counts every "
                      "token but a final EOS, and is at least 1")


def test_length_penalty_flips_the_winner(impl) -> None:
    got = beams(impl, tree(EOS_TREE, default=EOS_DEFAULT), width=2, max_tokens=4, alpha=1.0)
    assert words(got) == ["LMOU", "LNQU"], (
        "with length_penalty 1 (vLLM's default) scores are per token: LMOU log(0.1296)/4 = "
        "-0.511 and LNQU -0.544 beat S$ log(0.495)/1 = -0.703 (EOS not counted): expected "
        f"[LMOU, LNQU], got {words(got)}"
    )
    assert_close([s for _, s in got], [math.log(0.1296), math.log(0.1134)], cause=REORDERED,
                 what="cum_logprob stays the raw sum; only the ranking divides")


def test_with_vllms_default_penalty_width_one_is_not_greedy(impl) -> None:
    # EOS first (0.5) is greedy's answer. Width 1 also keeps A (0.45) live, because an EOS
    # proposal takes no slot, and per token AB (log(0.4455) / 2 = -0.404) beats $ (-0.693).
    quick = tree({"": {"$": 0.5, "A": 0.45, "B": 0.05}, "A": {"B": 0.99, "C": 0.01}})
    assert word(greedy(impl, quick, max_tokens=2)[0]) == "$", "greedy stops at EOS at once"
    raw = beams(impl, quick, width=1, max_tokens=2, alpha=0.0)
    assert words(raw) == ["$"], f"length_penalty 0: $ (0.5) beats AB (0.4455), got {words(raw)}"
    per_token = beams(impl, quick, width=1, max_tokens=2, alpha=1.0)
    assert words(per_token) == ["AB"], (
        "length_penalty 1: AB scores log(0.4455) / 2 = -0.404, $ scores log(0.5) / 1 = -0.693 "
        f"(its length is 0, counted as 1), so width 1 answers AB, got {words(per_token)}"
    )


def test_the_length_counts_the_prompt(impl) -> None:
    prompt = ids("HELLO")
    step = tree(EOS_TREE, prompt="HELLO", default=EOS_DEFAULT)
    got = beams(impl, step, prompt, width=2, max_tokens=4, alpha=1.0)
    assert words(got) == ["S$", "LMOU"], (
        "upstream divides by the length of the whole sequence, prompt included: with the "
        "5-token prompt S$ scores log(0.495)/6 = -0.117 and LMOU log(0.1296)/9 = -0.227, so S$ "
        f"wins again: expected [S$, LMOU], got {words(got)}"
    )


def test_bad_arguments_are_refused(impl) -> None:
    step = tree(TRAP)
    with expect_raises(ValueError, "beam_width must be at least 1", match="beam_width"):
        impl.beam_search(step, (), beam_width=0, max_tokens=2, eos_token_id=None)
    with expect_raises(ValueError, "max_tokens must be at least 1", match="max_tokens"):
        impl.beam_search(step, (), beam_width=2, max_tokens=0, eos_token_id=None)
    with expect_raises(ValueError, "max_tokens must be at least 1", match="max_tokens"):
        impl.greedy_decode(step, (), max_tokens=0, eos_token_id=None)


# -- on a real model: mini_vllm's seeded tiny Llama -----------------------------------------------


@pytest.fixture(scope="module")
def llama(tiny_llama: Any) -> DenseStepModel:
    """One memoising step model for the whole module: each sequence runs through the network
    once, however many tests (or beams) ask for it."""
    return DenseStepModel(tiny_llama)


def _honest(llama: DenseStepModel, prompt: tuple[int, ...], tokens: tuple[int, ...]) -> float:
    return sum(float(llama(prompt + tokens[:i])[t]) for i, t in enumerate(tokens))


ENGINE_PROMPTS = ["hello world", "The capital of France is", "Once upon a time"]


def test_width_one_is_the_engines_greedy_output(impl, llama: DenseStepModel,
                                                tiny_llama: Any) -> None:
    engine = LLMEngine(model=tiny_llama, block_size=4)
    outs = engine.generate(ENGINE_PROMPTS, SamplingParams(max_tokens=8, temperature=0.0))
    for text, out in zip(ENGINE_PROMPTS, outs, strict=True):
        prompt = tuple(text.encode())
        expected = tuple(out.output_token_ids)
        g_tokens, g_score = greedy(impl, llama, prompt, max_tokens=8, eos=EOS_TOKEN_ID)
        assert g_tokens == expected, (
            f"{text!r}: greedy_decode must reproduce LLMEngine's greedy tokens {expected}, "
            f"got {g_tokens}"
        )
        got = beams(impl, llama, prompt, width=1, max_tokens=8, eos=EOS_TOKEN_ID)
        assert got[0][0] == expected, (
            f"{text!r}: beam width 1 must reproduce LLMEngine's greedy tokens {expected}, got "
            f"{got[0][0]}"
        )
        assert_close(got[0][1], g_score, cause=SAME_ORDER, what=f"{text!r}: width-1 score")


@pytest.mark.parametrize("text", ["hello world", "The capital of France is"])
def test_wider_beams_beat_greedy_on_the_tiny_llama(impl, llama: DenseStepModel,
                                                   text: str) -> None:
    prompt = tuple(text.encode())
    g_tokens, g_score = greedy(impl, llama, prompt, max_tokens=6, eos=EOS_TOKEN_ID)
    for width in (2, 4):
        got = beams(impl, llama, prompt, width=width, max_tokens=6, eos=EOS_TOKEN_ID)
        assert len(got) == width, f"{text!r}: width {width} returns {width} hypotheses"
        for tokens, score in got:
            assert_close(score, _honest(llama, prompt, tokens), cause=REORDERED,
                         what=f"{text!r} width {width}: the cum_logprob of {tokens}, recomputed "
                              "as the sum of the model's log-probs along it")
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True), f"best first, got scores {scores}"
        assert got[0][1] > g_score, (
            f"{text!r}: width {width} should find a sequence more probable than greedy's "
            f"{g_tokens} ({g_score:.4f}); best found {got[0][0]} ({got[0][1]:.4f})"
        )


def test_wider_is_not_always_better(impl, llama: DenseStepModel) -> None:
    # A fact about this model and prompt, not a law. Width 3 also keeps the prefix (134, 100)
    # at step 2; at step 3 its two children (-11.26, -11.45) push out (134, 127, 246) (-11.53),
    # the prefix width 2's winner grows from, and everything width 3 keeps ends worse.
    prompt = tuple(b"hello world")
    best = {k: beams(impl, llama, prompt, width=k, max_tokens=6, eos=EOS_TOKEN_ID)[0]
            for k in (1, 2, 3)}
    got = {k: round(s, 4) for k, (_, s) in best.items()}
    assert got == {1: -22.5747, 2: -21.867, 3: -22.7751}, (
        "'hello world', 6 tokens: the best summed log-prob at widths 1, 2, 3 is -22.5747 "
        f"(greedy), -21.867, then -22.7751: width 3 ends below greedy. Got {got}"
    )


def test_eos_appears_once_it_is_among_the_proposals(impl, llama: DenseStepModel) -> None:
    # After 'abc' EOS is the model's 7th most likely token (about 1.4%). Widths up to 3 ask for
    # at most 6 log-probs per beam and never see it; width 4 asks for 8, and the empty answer
    # (EOS straight away, log-prob -4.25) beats every 6-token sequence (about -19).
    prompt = tuple(b"abc")
    for width, expected in ((3, (84, 84, 84, 84, 84, 84)), (4, (EOS_TOKEN_ID,))):
        got = beams(impl, llama, prompt, width=width, max_tokens=6, eos=EOS_TOKEN_ID)
        assert got[0][0] == expected, (
            f"'abc' at width {width}: the best hypothesis is {expected}, got {got[0][0]}"
        )
    assert_close(got[0][1], float(llama(prompt)[EOS_TOKEN_ID]), cause=SAME_ORDER,
                 what="the empty answer's score: the log-prob of EOS after 'abc'")


def _exhaustive(step: StepModel, prompt: tuple[int, ...], allowed: Sequence[int],
                horizon: int, alpha: float) -> list[Hyp]:
    """Every sequence of at most ``horizon`` tokens (ending at EOS or at the horizon), ranked
    by upstream's score, best first, ties by token sequence."""
    done: list[Hyp] = []
    frontier: list[Hyp] = [((), 0.0)]
    while frontier:
        tokens, cum = frontier.pop()
        lp = step(prompt + tokens)
        for t in allowed:
            child = (tokens + (t,), cum + float(lp[t]))
            ended = t == EOS_TOKEN_ID or len(child[0]) == horizon
            (done if ended else frontier).append(child)

    def score(h: Hyp) -> float:
        length = len(prompt) + len(h[0]) - (h[0][-1] == EOS_TOKEN_ID)
        return h[1] / max(length, 1) ** alpha

    return sorted(done, key=lambda h: (-score(h), h[0]))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_exhaustive_search_agrees_when_the_beam_is_wide_enough(impl, llama: DenseStepModel,
                                                               alpha: float) -> None:
    # Three tokens plus EOS, three steps: 9 beams hold every unfinished 2-token prefix, and each
    # beam proposes 18 >= 4 tokens, so width 9 must return exactly the 9 best of all sequences.
    prompt, allowed = tuple(b"abc"), (43, 84, 92, EOS_TOKEN_ID)
    step = restricted(llama, allowed)
    truth = _exhaustive(step, prompt, allowed, 3, alpha)
    got = beams(impl, step, prompt, width=9, max_tokens=3, eos=EOS_TOKEN_ID, alpha=alpha)
    assert [t for t, _ in got] == [t for t, _ in truth[:9]], (
        f"length_penalty {alpha}: the 9 best of all {len(truth)} sequences are "
        f"{[t for t, _ in truth[:9]]}; width 9 returned {[t for t, _ in got]}"
    )
    assert_close([s for _, s in got], [s for _, s in truth[:9]], cause=REORDERED,
                 what="cum_logprob of the 9 best")
    narrow = beams(impl, step, prompt, width=1, max_tokens=3, eos=EOS_TOKEN_ID, alpha=alpha)
    assert narrow[0][0] != truth[0][0], (
        f"test premise: width 1 misses the best sequence {truth[0][0]} here (it found "
        f"{narrow[0][0]})"
    )


@pytest.mark.parametrize(("text", "width", "alpha"), [
    ("hello world", 2, 0.0), ("hello world", 3, 1.0), ("abc", 4, 0.0)])
def test_your_search_on_the_engine_equals_mini_vllms(impl, tiny_llama: Any, text: str,
                                                     width: int, alpha: float) -> None:
    # mini_vllm ships vLLM's beam search too (mini_vllm.beam_search): every live beam a one-token
    # request on the engine. Your search, asking the same engine through EngineStepModel, must
    # return the same hypotheses in the same order with the same scores.
    prompt = tuple(text.encode())
    step = EngineStepModel(LLMEngine(model=tiny_llama, block_size=4))
    got = beams(impl, step, prompt, width=width, max_tokens=6, eos=EOS_TOKEN_ID, alpha=alpha)
    (theirs,) = engine_beam_search(LLMEngine(model=tiny_llama, block_size=4), [list(prompt)],
                                   BeamSearchParams(width, 6, length_penalty=alpha))
    want = [(tuple(s.output_token_ids), s.cum_logprob) for s in theirs.sequences]
    assert [t for t, _ in got] == [t for t, _ in want], (
        f"{text!r}, width {width}, length penalty {alpha}: mini_vllm.beam_search returns "
        f"{[t for t, _ in want]}, yours {[t for t, _ in got]}")
    assert_close([s for _, s in got], [s for _, s in want], cause=REORDERED,
                 what="cum_logprob of each hypothesis, yours vs mini_vllm's")
