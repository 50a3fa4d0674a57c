"""Lab 12-01: regex -> FSM over bytes -> token masks, proved on a toy vocabulary, then driving
mini_vllm on SmolLM2's real 49,152-token vocabulary."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from katas.phase12.regex_fsm_token_masks.scaffold import (
    FSM,
    TOY_EOS_TOKEN_ID,
    TOY_SPECIAL_TOKEN_ID,
    TOY_VOCAB,
    Atom,
    LearnerRegexMatcher,
    toy_token_id,
)
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

pytestmark = pytest.mark.cpu_ok

HEX = "0x[0-9a-f]+"
EOS = TOY_EOS_TOKEN_ID


def _digits(lo: str = "0", hi: str = "9") -> frozenset[int]:
    return frozenset(range(ord(lo), ord(hi) + 1))


def _names(mask: np.ndarray) -> set[str]:
    """The allowed toy tokens, spelled (EOS as "<eos>", the special token as "<special>")."""
    out = set()
    for i in np.flatnonzero(mask):
        if i == EOS:
            out.add("<eos>")
        elif i == TOY_SPECIAL_TOKEN_ID:
            out.add("<special>")
        else:
            out.add(TOY_VOCAB[i].decode("utf-8", errors="backslashreplace"))
    return out


def _check_mask(mask: object) -> np.ndarray:
    assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_, (
        f"allowed_tokens must return a bool numpy array, got {type(mask).__name__} "
        f"{getattr(mask, 'dtype', '')}")
    assert mask.shape == (len(TOY_VOCAB),), (
        f"the mask has one entry per vocabulary token: expected shape ({len(TOY_VOCAB)},), "
        f"got {mask.shape}")
    return mask


def _text(tokens: list[int]) -> str:
    return b"".join(TOY_VOCAB[t] for t in tokens).decode("utf-8", errors="replace")


def _prefers(*texts: str | int):
    """A fake model: logits that rank the given tokens (ids or texts) first, in order."""
    order = [t if isinstance(t, int) else toy_token_id(t) for t in texts]

    def logits_fn(tokens: list[int]) -> np.ndarray:
        logits = np.zeros(len(TOY_VOCAB))
        for rank, t in enumerate(order):
            logits[t] = 100.0 - rank
        return logits

    return logits_fn


def _run(impl, pattern: str, logits_fn, max_tokens: int = 12) -> tuple[list[int], str]:
    fsm = impl.compile_pattern(pattern)
    out = impl.constrained_generate(fsm, TOY_VOCAB, EOS, logits_fn, max_tokens)
    assert isinstance(out, tuple) and len(out) == 2, (
        f"constrained_generate returns (token_ids, finish_reason), got {out!r}")
    tokens, reason = out
    assert len(tokens) <= max_tokens, (
        f"constrained_generate emitted {len(tokens)} tokens with max_tokens={max_tokens}")
    return list(tokens), reason


# -- move 1: compile ----------------------------------------------------------------------------


def test_parse_atoms(impl) -> None:
    got = impl.parse_atoms(HEX)
    hexdigits = _digits() | _digits("a", "f")
    assert list(got) == [Atom(frozenset(b"0")), Atom(frozenset(b"x")), Atom(hexdigits, True)], (
        f"parse_atoms({HEX!r}) should be three atoms: '0', 'x', then [0-9a-f] repeated; "
        f"got {got!r}")
    got = impl.parse_atoms(r"\.[A-C_]+é")
    assert list(got) == [Atom(frozenset(b".")), Atom(frozenset(b"ABC_"), True),
                         Atom(frozenset([0xC3])), Atom(frozenset([0xA9]))], (
        "an escaped '.' is a literal, a class holds its range and single members, and 'é' is "
        f"two atoms (its UTF-8 bytes 0xC3 0xA9); got {got!r}")


@pytest.mark.parametrize("pattern", ["a|b", "a*", "(ab)", "a.b", "a?", "+a", "[abc", r"\d",
                                     "[é]", "é+", "[z-a]"])
def test_parse_atoms_rejects_what_is_outside_the_subset(impl, pattern: str) -> None:
    with expect_raises(ValueError, f"{pattern!r} is outside the lab's subset (literals, "
                       "[...] classes of ASCII, +, backslash before punctuation)"):
        impl.parse_atoms(pattern)


def test_compile_pattern_is_the_course_machine(impl) -> None:
    fsm = impl.compile_pattern(HEX)
    assert isinstance(fsm, FSM), f"compile_pattern returns the scaffold's FSM, got {fsm!r}"
    hexdigits = sorted(_digits() | _digits("a", "f"))
    expected = {(0, ord("0")): 1, (1, ord("x")): 2}
    expected.update({(2, b): 3 for b in hexdigits})
    expected.update({(3, b): 3 for b in hexdigits})
    assert fsm.start == 0 and fsm.accepting == frozenset({3}), (
        f"state i = 'atoms 0..i-1 matched': start 0, accepting {{3}}; got start {fsm.start}, "
        f"accepting {set(fsm.accepting)}")
    assert dict(fsm.transitions) == expected, (
        "0x[0-9a-f]+ is 0 -'0'-> 1 -'x'-> 2 -hex-> 3, and '+' is a self-loop on 3 (keyed by "
        f"(state, byte)); extra or missing: {set(fsm.transitions.items()) ^ set(expected.items())}")


def test_advance_and_death(impl) -> None:
    fsm = impl.compile_pattern("[0-9]+")
    snapshot = dict(fsm.transitions)
    assert impl.advance(fsm, fsm.start, b"12") in fsm.accepting, (
        "'12' is two digits: [0-9]+ must accept after it")
    dead = impl.advance(fsm, fsm.start, b"1x")
    assert dead is None, f"'1x' dies at its second byte: advance must return None, got {dead!r}"
    assert impl.advance(fsm, fsm.start, b"x") is None, "'x' dies at its first byte: None"
    assert dict(fsm.transitions) == snapshot, "advance must not change the machine"
    again = impl.advance(fsm, fsm.start, b"1")
    assert again in fsm.accepting, (
        "after a token died mid-token, the same state must still accept '1' (dying must not "
        f"corrupt the state); got {again!r}")
    assert impl.advance(fsm, fsm.start, b"") == fsm.start, "no bytes: the state is unchanged"
    hexfsm = impl.compile_pattern(HEX)
    assert impl.advance(hexfsm, hexfsm.start, b"00") is None, (
        f"'00' dies at its second byte under {HEX} ('0' is in the pattern, just not there): a "
        "missing transition is death, there must be no explicit dead state to walk into")


@pytest.mark.parametrize("pattern", ["[0-9]+[0-9]", "a+ab", "[ab]+b[ab]", "x[xy]+y+"])
def test_overlapping_plus_matches_exactly_what_re_matches(impl, pattern: str) -> None:
    fsm = impl.compile_pattern(pattern)
    alphabet = sorted(set(re.sub(r"[\[\]+]", "", pattern).replace("0-9", "05")))
    mismatches = []
    for n in range(7):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            end = impl.advance(fsm, fsm.start, text.encode())
            ours = end is not None and end in fsm.accepting
            if ours != (re.fullmatch(pattern, text) is not None):
                mismatches.append(text)
    assert not mismatches, (
        f"{pattern!r}: a '+' whose atom overlaps the next one must keep every way to read the "
        f"text (a subset construction), not greedily stay in the loop; wrong on "
        f"{mismatches[:5]}")


# -- move 2: lift -----------------------------------------------------------------------------


def test_mask_is_exactly_the_survivors(impl) -> None:
    fsm = impl.compile_pattern(HEX)
    mask = _check_mask(impl.allowed_tokens(fsm, fsm.start, TOY_VOCAB, EOS))
    assert _names(mask) == {"0", "0x"}, (
        "from the start of 0x[0-9a-f]+ exactly '0' and '0x' survive ('0x' crosses two atoms "
        f"in one token; '00' dies at its second byte); got {sorted(_names(mask))}")
    after_0x = impl.advance(fsm, fsm.start, b"0x")
    mask = _check_mask(impl.allowed_tokens(fsm, after_0x, TOY_VOCAB, EOS))
    assert _names(mask) == {"0", "1", "7", "9", "00", "12", "a", "f", "ff", "caf"}, (
        "after '0x' every token made only of hex digits survives ('caf' too), EOS does not (no "
        "digit yet); "
        f"got {sorted(_names(mask))}")


def test_mask_walks_the_bytes_of_split_characters(impl) -> None:
    fsm = impl.compile_pattern("café!")
    state = impl.advance(fsm, fsm.start, b"caf")
    mask = _check_mask(impl.allowed_tokens(fsm, state, TOY_VOCAB, EOS))
    assert _names(mask) == {"\\xc3", "é", "é!"}, (
        "after 'caf', the lead byte 0xC3 alone, the whole 'é' and 'é!' are legal: a mask over "
        f"BYTES, not decoded characters; got {sorted(_names(mask))}")
    half = impl.advance(fsm, state, b"\xc3")
    mask = _check_mask(impl.allowed_tokens(fsm, half, TOY_VOCAB, EOS))
    assert _names(mask) == {"\\xa9"}, (
        "half-way through 'é' only its continuation byte 0xA9 is legal; got "
        f"{sorted(_names(mask))}")


def test_special_tokens_are_never_allowed(impl) -> None:
    fsm = impl.compile_pattern("[0-9]+")
    for state in (fsm.start, impl.advance(fsm, fsm.start, b"1")):
        mask = _check_mask(impl.allowed_tokens(fsm, state, TOY_VOCAB, EOS))
        assert not mask[TOY_SPECIAL_TOKEN_ID], (
            f"state {state}: a special token spells no bytes, so walking it 'never dies' -- but "
            "it adds no text and must never be allowed")


# -- move 3: mask per step -------------------------------------------------------------------


def test_eos_only_when_accepting(impl) -> None:
    fsm = impl.compile_pattern("[0-9]+")
    start = _check_mask(impl.allowed_tokens(fsm, fsm.start, TOY_VOCAB, EOS))
    assert not start[EOS], "EOS is illegal before the first digit: the text does not match yet"
    done = impl.advance(fsm, fsm.start, b"7")
    assert _check_mask(impl.allowed_tokens(fsm, done, TOY_VOCAB, EOS))[EOS], (
        "EOS is legal after a digit: '7' fully matches [0-9]+")
    tokens, reason = _run(impl, "[0-9]+", _prefers(EOS, "7"))
    assert (tokens, reason) == ([toy_token_id("7"), EOS], "stop"), (
        "a model that wants to stop at once must emit a digit first (its second choice, '7'), "
        "then stop; got {[_names(np.eye(len(TOY_VOCAB), dtype=bool)[t]) for t in tokens]} "
        f"({reason!r})")


def test_constrained_output_always_matches(impl) -> None:
    tokens, reason = _run(impl, HEX, _prefers("q", "@", "zz", "0x", EOS, "ff", "1"))
    text = _text(tokens[:-1] if tokens and tokens[-1] == EOS else tokens)
    assert reason == "stop" and re.fullmatch(HEX, text), (
        f"a model preferring 'q', '@', 'zz' must still emit valid hex and stop: got {text!r} "
        f"({reason!r})")
    assert tokens == [toy_token_id("0x"), toy_token_id("ff"), EOS], (
        "greedy over the allowed tokens: '0x' (one token, two atoms), then 'ff', then EOS as "
        f"soon as it is legal; got {tokens}")


def test_fuzzed_preferences_never_violate(impl) -> None:
    pattern = "0x[0-9a-f][0-9a-f]"  # at most 3 tokens then EOS: truncation is harmless
    rng = np.random.default_rng(12)
    violations = []
    for _ in range(50):
        order = [int(t) for t in rng.permutation(len(TOY_VOCAB))]
        tokens, reason = _run(impl, pattern, _prefers(*order), max_tokens=8)
        text = _text([t for t in tokens if t != EOS])
        if reason != "stop" or tokens[-1] != EOS or not re.fullmatch(pattern, text):
            violations.append((text, reason))
    assert not violations, f"50 random preference orders, 0 violations allowed; got {violations}"


def test_truncation_caveat_is_real(impl) -> None:
    pattern = r"[0-9]+\."
    tokens, reason = _run(impl, pattern, _prefers("12", "9", "."), max_tokens=5)
    text = _text(tokens)
    fsm = impl.compile_pattern(pattern)
    assert reason == "length" and len(tokens) == 5, (
        f"a digit-loving model loops in [0-9]+ until max_tokens=5: expected 5 tokens and "
        f"'length', got {len(tokens)} tokens and {reason!r}")
    assert re.fullmatch(pattern, text) is None and impl.advance(fsm, fsm.start,
                                                                text.encode()) is not None, (
        f"the output {text!r} is a valid prefix, never a full match: masks guarantee prefix "
        "validity, not completion")


def test_dead_end_raises_value_error(impl) -> None:
    fsm = impl.compile_pattern("0y")
    with expect_raises(ValueError, "after '0' no toy token spells 'y' and EOS is illegal: a dead "
                       "end must be an error, not a silent illegal token"):
        impl.constrained_generate(fsm, TOY_VOCAB, EOS, _prefers("0"), 4)


# -- your masks drive mini_vllm on SmolLM2 ----------------------------------------------------

SMOLLM2_CASES = [  # (prompt, pattern, temperature): one batch, one matcher per row
    ("The meeting starts at ", "[0-9][0-9]:[0-9][0-9]", 0.0),
    ("The train leaves at ", "[0-9][0-9]:[0-9][0-9]", 0.8),
    ("Contact me by email at ", "[a-z]+@[a-z]+\\.com", 0.0),
]


@pytest.fixture(scope="module")
def smollm2():
    if not smollm2_available():
        pytest.skip(smollm2_missing_reason())
    from mini_vllm import LLM
    from mini_vllm.structured_output import token_bytes

    llm = LLM(smollm2_path(), max_model_len=128)
    return llm, token_bytes(llm.tokenizer)


def test_your_masks_drive_smollm2(impl, request) -> None:
    from mini_vllm import SamplingParams
    from mini_vllm.grammar import compile_regex  # an independent oracle for "valid prefix"

    impl.compile_pattern(SMOLLM2_CASES[0][1])  # your code first: a stub fails before the load
    llm, vocab = request.getfixturevalue("smollm2")
    eos = llm.tokenizer.eos_token_id
    matchers = [
        LearnerRegexMatcher(pattern, vocab, eos, compile_pattern=impl.compile_pattern,
                            advance=impl.advance, allowed_tokens=impl.allowed_tokens)
        for _, pattern, _ in SMOLLM2_CASES
    ]
    params = [SamplingParams(max_tokens=16, temperature=t, seed=3) for _, _, t in SMOLLM2_CASES]
    outs = llm.engine.generate([p for p, _, _ in SMOLLM2_CASES], params,
                               structured_outputs=matchers)
    for (_, pattern, _), out in zip(SMOLLM2_CASES, outs, strict=True):
        assert re.fullmatch(pattern, out.text) or (
            out.finish_reason == "length"
            and compile_regex(pattern).walk(0, out.text.encode("utf-8")) >= 0), (
            f"your masks let SmolLM2 write {out.text!r} ({out.finish_reason!r}), which is not "
            f"{'a full match' if out.finish_reason == 'stop' else 'a valid prefix'} of "
            f"{pattern!r}")
        if pattern.startswith("[0-9]"):
            assert out.finish_reason == "stop" and re.fullmatch(pattern, out.text), (
                f"{pattern!r} has one length: SmolLM2 must match it and stop within 16 tokens, "
                f"got {out.text!r} ({out.finish_reason!r})")
