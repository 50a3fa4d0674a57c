"""Structured outputs (phase 12): regex -> DFA over bytes -> token masks, and the engine seam.

The grammar and engine tests run on the byte tokenizer and the toy model; the SmolLM2 ones run
on its real 49,152-token byte-level BPE vocabulary and skip until ``katas models fetch``.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.config import SpeculativeConfig
from mini_vllm.grammar import RegexMatcher, compile_regex, token_mask_table
from mini_vllm.sampler import apply_token_mask
from mini_vllm.structured_output import GrammarMatcher, token_bytes
from mini_vllm.tokenizer import EOS_TOKEN_ID, ByteTokenizer
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

BYTE_VOCAB = token_bytes(ByteTokenizer())
DATE = r"\d{4}-\d{2}-\d{2}"
EMAIL = r"[a-z]{2,8}(\.[a-z]{2,8})?@[a-z]{2,8}\.(com|org|net)"
ENUM = r"(red|green|blue)"
SHORT_EMAIL = r"[a-z]{2,6}@[a-z]{2,6}\.(com|org)"  # at most ~10 tokens: the batch stays short


def _byte_matcher(pattern: str) -> RegexMatcher:
    return RegexMatcher(pattern, BYTE_VOCAB, EOS_TOKEN_ID)


# -- the DFA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [
    DATE, EMAIL, ENUM, r"[0-9]+[0-9]", r"a*b?(c|dé)+.", r"0x[0-9a-f]+", r"[^a-c]{2}",
    r"(ab|a)*b{2,}", r"\w+\s\W?", r"x{0,2}y{3}", r"\.\+\{"])
def test_dfa_agrees_with_re_fullmatch(pattern: str) -> None:
    dfa = compile_regex(pattern)
    rnd = random.Random(pattern)
    alphabet = "abcdexy0123456789-.@+{ _\né"
    samples = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 9)))
               for _ in range(3000)]
    samples += ["2024-01-31", "ab.cd@ef.com", "green", "0x1f", "dé!", "abbb", "yyy"]
    # The escapes \d \w \s \D \W \S match ASCII only: on non-ASCII text the DFA's language
    # is a subset of re's; everywhere else they are equal.
    exact = not re.search(r"\\[dwsDWS]", pattern)
    wrong = [s for s in samples if (exact or s.isascii())
             and dfa.fullmatch(s.encode()) != bool(re.fullmatch(pattern, s))]
    assert not wrong, f"{pattern!r}: the DFA and re.fullmatch disagree on {wrong[:5]}"
    extra = [s for s in samples if dfa.fullmatch(s.encode()) and not re.fullmatch(pattern, s)]
    assert not extra, f"{pattern!r}: the DFA accepts {extra[:5]}, which re does not"


def test_dot_is_one_whole_utf8_character() -> None:
    dfa = compile_regex("a.b")
    for ch in ["x", "é", "€", "😀"]:
        assert dfa.fullmatch(f"a{ch}b".encode()), f"'.' must match {ch!r} (all of its bytes)"
    assert not dfa.fullmatch(b"a\nb"), "'.' does not match a newline"
    assert not dfa.fullmatch(b"a\xc3b"), "half a character is not a character"
    assert not dfa.fullmatch(b"a\xff b"), "0xFF never occurs in UTF-8"


@pytest.mark.parametrize("pattern", ["a(b", "a)b", "*a", "a{2,1}", "^a", "a$", r"\bx", "a+?",
                                     "(?=a)", "[b-a]", "[abc"])
def test_unsupported_or_broken_syntax_is_a_value_error(pattern: str) -> None:
    with pytest.raises(ValueError, match="regex"):
        compile_regex(pattern)


def test_every_dfa_state_can_still_reach_acceptance() -> None:
    for pattern in [DATE, EMAIL, ENUM, r"a*b?(c|dé)+."]:
        dfa = compile_regex(pattern)
        reach = dfa.accepting.copy()
        for _ in range(dfa.num_states):
            reach = reach | np.array([reach[row[row >= 0]].any() for row in dfa.transitions])
        assert reach.all(), f"{pattern!r}: states {np.flatnonzero(~reach)} are dead, not pruned"


# -- token masks on the byte vocabulary ------------------------------------------------------


def test_token_bytes_of_the_byte_tokenizer() -> None:
    assert len(BYTE_VOCAB) == 257 and BYTE_VOCAB[65] == b"A" and BYTE_VOCAB[EOS_TOKEN_ID] == b""
    assert token_bytes(ByteTokenizer()) == BYTE_VOCAB


def test_matcher_implements_the_protocol_and_gates_eos() -> None:
    m = _byte_matcher(ENUM)
    assert isinstance(m, GrammarMatcher)
    mask = m.allowed_tokens()
    assert mask.dtype == np.bool_ and mask.shape == (257,)
    assert set(np.flatnonzero(mask)) == {ord("r"), ord("g"), ord("b")}
    for ch in b"re":
        m.accept_token(ch)
    with pytest.raises(ValueError, match="not allowed"):
        m.accept_token(EOS_TOKEN_ID)
    m.accept_token(ord("d"))
    assert set(np.flatnonzero(m.allowed_tokens())) == {EOS_TOKEN_ID}
    m.accept_token(EOS_TOKEN_ID)
    assert m.is_terminated() and not m.allowed_tokens().any()


def test_rollback_restores_bit_identical_masks() -> None:
    m = _byte_matcher(DATE)
    before = [m.allowed_tokens()]
    for ch in b"2024-0":
        m.accept_token(ch)
        before.append(m.allowed_tokens())
    m.rollback(4)
    assert np.array_equal(m.allowed_tokens(), before[2])
    m.rollback(2)
    assert np.array_equal(m.allowed_tokens(), before[0]) and m.state == 0
    with pytest.raises(ValueError):
        m.rollback(1)


def test_a_multibyte_token_may_cross_atoms_and_split_characters() -> None:
    vocab = [b"0x", b"0", b"x", b"\xc3", b"\xa9", b"caf\xc3", b"\xc3\xa9!", b"1x", b""]
    dfa = compile_regex("(0x[0-9]+|café!)")
    table = token_mask_table(dfa, vocab, eos_token_id=8)
    start = {vocab[i] for i in np.flatnonzero(table[0])}
    assert start == {b"0x", b"0", b"caf\xc3"}, start
    half = dfa.walk(0, b"caf\xc3")
    assert {vocab[i] for i in np.flatnonzero(table[half])} == {b"\xa9"}


# -- the engine seam, on the toy model ------------------------------------------------------


class WorstAllowed:
    """An adversarial sampler: the allowed (finite) token the model likes LEAST."""

    def sample(self, logits, params):
        x = np.asarray(logits, dtype=np.float64)
        return int(np.argmin(np.where(np.isfinite(x), x, np.inf)))


@pytest.mark.parametrize("pattern", [DATE, EMAIL, ENUM])
def test_toy_engine_outputs_fully_match_even_with_an_adversarial_sampler(pattern: str) -> None:
    for sampler in (None, WorstAllowed()):
        engine = LLMEngine(sampler=sampler)
        prompts = ["hello", "xyz", "The date"]
        params = [SamplingParams(max_tokens=64, temperature=t, seed=5) for t in (0.0, 0.9, 1.5)]
        outs = engine.generate(prompts, params,
                               structured_outputs=[_byte_matcher(pattern) for _ in prompts])
        for out in outs:
            assert out.finish_reason == "stop" and re.fullmatch(pattern, out.text), (
                f"{pattern!r} with sampler {sampler}: got {out.text!r} ({out.finish_reason})")


def test_unconstrained_neighbours_are_unaffected() -> None:
    prompts = ["hello world", "goodbye", "the quick brown fox"]
    params = [SamplingParams(max_tokens=10, temperature=0.0),
              SamplingParams(max_tokens=10, temperature=0.8, seed=1),
              SamplingParams(max_tokens=10, temperature=1.0, seed=2, ignore_eos=True)]
    alone = LLMEngine().generate(prompts, params)
    mixed = LLMEngine().generate(
        ["2024", *prompts, "x"], [SamplingParams(max_tokens=12), *params,
                                  SamplingParams(max_tokens=12, temperature=0.7, seed=4)],
        structured_outputs=[_byte_matcher(DATE), None, None, None, _byte_matcher(ENUM)])
    assert [o.output_token_ids for o in mixed[1:4]] == [o.output_token_ids for o in alone]
    assert re.fullmatch(DATE, mixed[0].text) and re.fullmatch(ENUM, mixed[4].text)


def test_a_mask_with_one_survivor_samples_it_with_probability_one() -> None:
    logits = np.linspace(5.0, -5.0, 257)
    allowed = np.zeros(257, dtype=bool)
    allowed[200] = True
    masked = apply_token_mask(logits, allowed)
    assert np.isneginf(masked[~allowed]).all() and masked[200] == logits[200]
    engine = LLMEngine()
    for seed in range(20):
        out = engine.generate(["hi"], SamplingParams(max_tokens=2, temperature=2.0, seed=seed),
                              structured_outputs=_byte_matcher("é"))[0]
        assert out.output_token_ids == [0xC3, 0xA9], out.output_token_ids


class DeadEnd:
    def allowed_tokens(self):
        return np.zeros(257, dtype=bool)

    def accept_token(self, token_id):
        raise AssertionError("never reached")

    def is_terminated(self):
        return False


def test_a_dead_end_names_the_request() -> None:
    engine = LLMEngine()
    rid = engine.add_request("hi", SamplingParams(max_tokens=4), structured_output=DeadEnd())
    with pytest.raises(RuntimeError, match=f"request '{rid}'.*dead end"):
        engine.step()


def test_bad_structured_output_arguments_are_refused() -> None:
    engine = LLMEngine()
    m = _byte_matcher(ENUM)
    with pytest.raises(ValueError, match="GrammarMatcher"):
        engine.add_request("hi", structured_output="(red|blue)")
    with pytest.raises(ValueError, match="n > 1"):
        engine.add_request("hi", SamplingParams(n=2), structured_output=m)
    with pytest.raises(ValueError, match="same matcher"):
        engine.generate(["a", "b"], structured_outputs=[m, m])
    with pytest.raises(ValueError, match="one per prompt|2 prompts"):
        engine.generate(["a", "b"], structured_outputs=m)
    with pytest.raises(ValueError, match="1 structured outputs for 2 prompts"):
        engine.generate(["a", "b"], structured_outputs=[m])
    spec = LLMEngine(speculative_config=SpeculativeConfig(num_speculative_tokens=2))
    with pytest.raises(ValueError, match="speculative_config"):
        spec.add_request("hi", structured_output=m)
    assert not engine.has_unfinished_requests()


# -- SmolLM2: the real 49,152-token byte-level vocabulary ------------------------------------

smollm2 = pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())


@pytest.fixture(scope="module")
def llm():
    from mini_vllm import LLM

    return LLM(smollm2_path(), max_model_len=128)


@smollm2
def test_smollm2_vocabulary_as_bytes(llm) -> None:
    vocab = token_bytes(llm.tokenizer)
    assert len(vocab) == 49152 == llm.model.vocab_size
    assert vocab[llm.tokenizer.eos_token_id] == b""
    assert sum(not b for b in vocab) == 17, "the 17 special tokens spell no bytes"
    assert any(len(b) > 1 and b[-1] >= 0xC0 for b in vocab), "some tokens end mid-character"
    text = "Größe 2024 — ok"
    ids = llm.tokenizer.encode(text)
    assert b"".join(vocab[i] for i in ids).decode() == text


@smollm2
@pytest.mark.parametrize("pattern", [DATE, EMAIL, ENUM])
def test_smollm2_masks_have_no_dead_end_and_ban_no_legal_byte(llm, pattern: str) -> None:
    vocab = token_bytes(llm.tokenizer)
    eos = llm.tokenizer.eos_token_id
    dfa = compile_regex(pattern)
    table = RegexMatcher(pattern, vocab, eos).masks
    single = {v[0]: i for i, v in enumerate(vocab) if len(v) == 1}
    for state in range(dfa.num_states):
        assert table[state].any(), f"{pattern!r}: DFA state {state} allows nothing (dead end)"
        assert table[state, eos] == dfa.accepting[state]
        for byte in np.flatnonzero(dfa.transitions[state] >= 0):
            assert table[state, single[int(byte)]], (
                f"{pattern!r}: state {state} bans the single-byte token {bytes([byte])!r}, a "
                "legal continuation")
        # And nothing illegal: every allowed token walks alive.
        for t in np.flatnonzero(table[state])[:2000]:
            if t != eos:
                assert dfa.walk(state, vocab[t]) >= 0


@smollm2
def test_smollm2_outputs_fully_match_and_neighbours_are_unaffected(llm) -> None:
    vocab = token_bytes(llm.tokenizer)
    eos = llm.tokenizer.eos_token_id
    cases = [
        ("Today's date, in ISO format, is ", DATE, 0.0),
        ("The date of the meeting is ", DATE, 0.9),
        ("Write an email address: ", SHORT_EMAIL, 0.0),
        ("Pick a colour. My favourite colour is ", ENUM, 0.0),
        ("Pick a colour. My favourite colour is ", ENUM, 1.0),
    ]
    free = ("The capital of France is", SamplingParams(max_tokens=4, temperature=0.0))
    prompts = [p for p, _, _ in cases] + [free[0]]
    params = [SamplingParams(max_tokens=16, temperature=t, seed=7) for _, _, t in cases]
    matchers = [RegexMatcher(p, vocab, eos) for _, p, _ in cases]
    outs = llm.engine.generate(prompts, [*params, free[1]],
                               structured_outputs=[*matchers, None])
    for (_, pattern, t), out, m in zip(cases, outs, matchers, strict=False):
        assert out.finish_reason == "stop" and re.fullmatch(pattern, out.text), (
            f"{pattern!r} at temperature {t}: SmolLM2 wrote {out.text!r} ({out.finish_reason})")
        assert m.is_terminated()
    alone = llm.engine.generate([free[0]], free[1])[0]
    assert outs[-1].output_token_ids == alone.output_token_ids, (
        "an unconstrained request's tokens changed because constrained neighbours shared its "
        "batch")
