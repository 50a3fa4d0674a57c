"""Spec for kata 12-03: a pushdown machine for JSON, its token mask, and SmolLM2 driven by it.

Oracles that do not share the learner's code: ``json.loads`` for complete documents, and an
enumerator written straight from the grammar (every document up to a length over a small
alphabet) for the brute-force checks of every prefix.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.models import (
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)

pytestmark = pytest.mark.cpu_ok


# -- helpers ------------------------------------------------------------------------------------


def feed_text(machine, text: str | bytes) -> None:
    for b in text.encode() if isinstance(text, str) else text:
        machine.feed(b)


def recognizes(impl, text: str | bytes, **kwargs) -> bool:
    """Does a fresh machine accept ``text`` as a complete document?"""
    machine = impl.JsonMachine(**kwargs)
    try:
        feed_text(machine, text)
    except ValueError:
        return False
    return machine.accepting()


def nesting(value) -> int:
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    return 0


# A toy vocabulary: single bytes, multi-byte tokens that cross productions, a special token
# (b"") and EOS last. Like a byte-level BPE vocabulary, it spells every byte a completion may
# need on its own (a budget can only force a close the vocabulary can spell).
TOY = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"0", b"1", b"-", b".", b"e", b"a", b"\\",
       b"n", b"u", b" ", b"\n", b"true", b"null", b'{"', b'":', b'",', b'"}', b"}}", b"]}",
       b"}]", b'"a"', b"1.", b"0.5", b'\\"', b'a"', b'":{"', b'":[', b"01", b"t", b"r", b"f",
       b"l", b"s", b"", b""]
TOY_EOS = len(TOY) - 1
TOY_SPECIAL = len(TOY) - 2


def toy_text(ids: list[int]) -> str:
    return b"".join(TOY[i] for i in ids).decode()


def fake_model(*preferred: bytes, hated: tuple[bytes, ...] = ()):
    """A fake model over TOY: ``'{"'`` first, then a fixed ranking: ``preferred`` first (in
    order), ``hated`` last, the rest in between (ties: the lowest id)."""
    scores = np.zeros(len(TOY))
    for rank, tok in enumerate(preferred):
        scores[TOY.index(tok)] = 100.0 - rank
    for tok in hated:
        scores[TOY.index(tok)] = -100.0
    opening = np.where(np.arange(len(TOY)) == TOY.index(b'{"'), 1.0, 0.0)
    return lambda out: scores if out else opening


# -- the independent oracle: every document up to a length, from the grammar -----------------

ALPHABET = b'{}[]":,01a-'
ALPHABET_SET = frozenset(ALPHABET)


@functools.cache
def documents(limit: int, depth: int) -> frozenset[bytes]:
    """Every value of at most ``limit`` bytes over ALPHABET, nesting at most ``depth``."""
    out: set[bytes] = set()
    for sign in (b"", b"-"):
        out.add(sign + b"0")
        body = [b"1"]
        while body:
            out.update(sign + b for b in body)
            body = [b + d for b in body for d in (b"0", b"1") if len(sign + b) < limit]
    out.update(b'"' + b"a" * k + b'"' for k in range(limit - 1))
    if depth > 0:
        out.add(b"[]")
        out.add(b"{}")
        for items in sequences(limit - 2, depth - 1, False):
            out.add(b"[" + items + b"]")
        for members in sequences(limit - 2, depth - 1, True):
            out.add(b"{" + members + b"}")
    return frozenset(d for d in out if len(d) <= limit)


@functools.cache
def sequences(limit: int, depth: int, members: bool) -> frozenset[bytes]:
    """Non-empty comma-separated items (values, or ``"key":value`` members) within ``limit``."""
    if limit < 1:
        return frozenset()
    firsts: set[bytes] = set()
    if members:
        for k in range(limit):
            key = b'"' + b"a" * k + b'":'
            firsts.update(key + v for v in documents(limit - len(key), depth))
    else:
        firsts.update(documents(limit, depth))
    out = set(firsts)
    for first in firsts:
        out.update(first + b"," + rest
                   for rest in sequences(limit - len(first) - 1, depth, members))
    return frozenset(x for x in out if len(x) <= limit)


@functools.cache
def prefixes(limit: int, depth: int) -> frozenset[bytes]:
    return frozenset(d[:i] for d in documents(limit, depth) for i in range(len(d) + 1))


def canonical(text: bytes) -> bytes:
    """``text`` with every byte inside a string replaced by ``a`` (ALPHABET has no backslash,
    so a quote always toggles): the documents above only spell string bodies with ``a``."""
    out, inside = bytearray(), False
    for b in text:
        if b == 0x22:
            inside = not inside
            out.append(b)
        else:
            out.append(0x61 if inside else b)
    return bytes(out)


def check_every_prefix(impl, *, limit, depth, max_len, longest) -> int:
    """Walk every viable prefix (up to ``longest`` bytes) through the machine and compare its
    ``allowed()`` (restricted to ALPHABET) with the oracle's. Returns the prefixes checked."""
    docs, live = documents(limit, depth), prefixes(limit, depth)
    todo = [(b"", impl.JsonMachine(max_depth=depth, max_len=max_len))]
    checked = 0
    while todo:
        text, machine = todo.pop()
        checked += 1
        got = machine.allowed()
        expected = {b for b in ALPHABET if canonical(text + bytes([b])) in live}
        mine = {b for b in got if b in ALPHABET_SET}
        assert mine == expected, (
            f"after {text.decode()!r} (max_depth={depth}, max_len={max_len}) the legal next "
            f"bytes are {sorted(chr(b) for b in expected)}, allowed() gave "
            f"{sorted(chr(b) for b in mine)}")
        complete = canonical(text) in docs
        assert (impl.EOS in got) == complete, (
            f"after {text.decode()!r} EOS must be {'legal' if complete else 'illegal'}: "
            f"{'it is' if complete else 'it is not'} a complete document")
        if len(text) < longest:
            for b in sorted(expected):
                if canonical(text + bytes([b])) != text + bytes([b]):
                    continue  # string bodies are explored with "a" only (checked, not expanded)
                child = machine.copy()
                child.feed(b)
                todo.append((text + bytes([b]), child))
    return checked


# -- the grammar, both directions (the course's cases first) ---------------------------------

VALID = ['{"a":1}', '{"a":{"b":0}}', "0", "123", "{}", "[]", '[1,[2,{}]]', '{"a":[null,false]}',
         "true", "-0", "-0.5e+3", "1E5", "10.25", '"plain"', '"a\\"b\\\\n\\/\\u00e9\\t"',
         '{ "a" : 1 }', "[\n1,\n2\n]", ' {"a": "b"}', '"caf\u00e9"']
INVALID = ["{}}", '{"a":}', '{"a":1,}', "0123", "01", "1.", ".5", "+1", "-", "1e", "1e+",
           "[1}", '{"a"}', '{"a" 1}', "[1,]", "{'a':1}", "tru", "nul", '"a', "[", "",
           '{  "a":1}', "1 ", "{}\n", "\t1", '"\\x"', '"\\u12"', '"\\u12g4"', '"a\nb"',
           "[1]]", '{"a":1}}']


@pytest.mark.parametrize("text", VALID)
def test_recognizes_valid_json(impl, text: str) -> None:
    json.loads(text)  # the independent oracle agrees
    assert recognizes(impl, text), f"{text!r} is valid JSON of the kata's subset: accept it"


@pytest.mark.parametrize("text", INVALID)
def test_rejects_invalid_json(impl, text: str) -> None:
    assert not recognizes(impl, text), (
        f"{text!r} must be rejected (not valid JSON, or outside the subset's whitespace rule)")


def test_illegal_feed_raises_and_changes_nothing(impl) -> None:
    machine = impl.JsonMachine()
    feed_text(machine, '{"a":')
    before = set(machine.allowed())
    for garbage in b"}]:,x":
        with expect_raises(ValueError, f"{bytes([garbage])!r} cannot follow '{{\"a\":'"):
            machine.feed(garbage)
    assert set(machine.allowed()) == before, "a rejected feed must leave the machine unchanged"
    with expect_raises(ValueError, "EOS before the object closes is illegal"):
        machine.feed(impl.EOS)
    feed_text(machine, "1}")
    machine.feed(impl.EOS)
    with expect_raises(ValueError, "nothing may follow EOS"):
        machine.feed(ord(" "))


def test_numbers_follow_json_not_intuition(impl) -> None:
    for text in ["0", "-0", "7", "-12", "0.5", "3.25", "1e5", "1E+5", "2e-3", "-0.0e0"]:
        assert recognizes(impl, text), f"{text!r} is a JSON number"
    for text in ["01", "-01", "00", "1.", "-", "1e", "1e-", ".5", "+1", "0x1", "1.e5", "--1"]:
        assert not recognizes(impl, text), f"{text!r} is not a JSON number"
    machine = impl.JsonMachine()
    machine.feed(ord("0"))
    digits = set(b"0123456789") & set(machine.allowed())
    assert not digits, (
        f"after a leading '0' no digit may follow (JSON has no 0123), allowed {digits}")


def test_string_escapes(impl) -> None:
    machine = impl.JsonMachine()
    feed_text(machine, '"a\\"')
    assert not machine.accepting(), '"a\\" is still inside the string: \\" is an escaped quote'
    feed_text(machine, '"')
    assert machine.accepting(), 'the next " closes it'
    for text in ['"\\\\"', '"\\n\\r\\b\\f\\t\\/"', '"\\uABCD"', '"\\u00e9x"']:
        assert recognizes(impl, text), f"{text!r} is a string with legal escapes"
    for text in ['"\\a"', '"\\u00"', '"\\uXYZW"', '"\\\\\\"']:
        assert not recognizes(impl, text), f"{text!r} must be rejected"
    machine = impl.JsonMachine()
    feed_text(machine, '"\\')
    assert set(machine.allowed()) == set(b'"\\/bfnrtu'), (
        "after a backslash exactly the escape letters are legal")


def test_depth_is_the_stack(impl) -> None:
    machine = impl.JsonMachine(max_depth=8)
    for level in range(1, 9):
        feed_text(machine, '{"a":' if level % 2 else "[")
        assert machine.depth == level, f"after {level} opens the depth is {level}"
    assert not ({ord("{"), ord("[")} & set(machine.allowed())), (
        "at max_depth=8 a ninth opener must be masked")
    feed_text(machine, "0")
    closers = "]}" * 4
    for i, closer in enumerate(closers):
        other = "}" if closer == "]" else "]"
        assert ord(other) not in machine.allowed(), (
            f"the open container is {'[' if closer == ']' else '{'}: {other!r} cannot close it "
            "(a counter is not enough once there are two bracket kinds)")
        machine.feed(ord(closer))
        assert machine.depth == 7 - i, f"each closer pops one level (expected {7 - i})"
    assert machine.accepting(), "all 8 levels closed: the document is complete"
    assert recognizes(impl, "[" * 3 + "]" * 3, max_depth=3)
    assert not recognizes(impl, "[" * 4 + "]" * 4, max_depth=3), "4 levels exceed max_depth=3"


def test_whitespace_is_bounded(impl) -> None:
    machine = impl.JsonMachine()
    feed_text(machine, "{ ")
    assert not (impl.WS_BYTES & set(machine.allowed())), (
        f"one whitespace byte in a gap is the limit (WS_MAX={impl.WS_MAX}): a model must not "
        "spin on spaces")
    for text in ['{"a": 1}', '{\n"a":1\n}', "[ 1 , 2 ]"]:
        assert recognizes(impl, text), f"{text!r}: one space or newline per gap is fine"
    for text in ["[1,  2]", "[\t1]", "[1]\n", '{"a":1}  ']:
        assert not recognizes(impl, text), f"{text!r} breaks the whitespace rule"


def test_mask_depends_on_the_stack(impl) -> None:
    """Exercise 10: the same mode (after a value), different legal sets, because of the stack."""
    in_object, in_array = impl.JsonMachine(), impl.JsonMachine()
    feed_text(in_object, '[{"a":1')
    feed_text(in_array, '{"a":[1')
    got_obj, got_arr = set(in_object.allowed()), set(in_array.allowed())
    assert ord("}") in got_obj and ord("]") not in got_obj, (
        f"inside an object after a value: '}}' may close, ']' may not; got {sorted(got_obj)}")
    assert ord("]") in got_arr and ord("}") not in got_arr, (
        f"inside an array after a value: ']' may close, '}}' may not; got {sorted(got_arr)}")


def test_min_to_close_worked_numbers(impl) -> None:
    for text, expected in [("", 1), ('{"', 4), ('[{"a":[', 3), ('"\\u0', 4), ("-", 1),
                           ('{"a":1', 1), ("[[", 2), ('{"a"', 3), ('{"a":1,', 5), ("tr", 2)]:
        machine = impl.JsonMachine()
        feed_text(machine, text)
        got = machine.min_to_close()
        assert got == expected, (
            f"after {text!r} the shortest completion is {expected} bytes, got {got}")


def test_copy_is_a_checkpoint(impl) -> None:
    machine = impl.JsonMachine()
    feed_text(machine, '{"a":[')
    saved = machine.copy()
    feed_text(machine, "1]}")
    assert machine.accepting() and not saved.accepting(), "feeding the original moved the copy"
    feed_text(saved, "]}")
    assert saved.accepting(), "the copy resumes from where it was taken"


# -- brute force against the grammar enumerator ----------------------------------------------


def test_every_prefix_matches_the_grammar_oracle(impl) -> None:
    checked = check_every_prefix(impl, limit=10, depth=2, max_len=None, longest=4)
    assert checked > 100


def test_the_budget_allows_exactly_what_can_still_close(impl) -> None:
    for max_len in (5, 8):
        checked = check_every_prefix(impl, limit=max_len, depth=2, max_len=max_len,
                                     longest=max_len)
        assert checked > 10
    with expect_raises(ValueError, "max_len below the shortest document", match="max_len"):
        impl.JsonMachine(schema={"type": "object", "properties": {"a": {"type": "string"}}},
                         max_len=7)


def test_token_mask_is_the_byte_walk_of_every_token(impl) -> None:
    """Brute force over TOY: token t is allowed iff prefix + t is a prefix of a document."""
    limit, depth = 10, 2
    live = prefixes(limit, depth)
    docs = documents(limit, depth)
    todo: list[list[int]] = [[]]
    checked = 0
    while todo:
        ids = todo.pop()
        matcher = impl.JsonMatcher(None, TOY, TOY_EOS, max_depth=depth)
        for t in ids:
            matcher.accept_token(t)
        text = b"".join(TOY[t] for t in ids)
        mask = np.asarray(matcher.allowed_tokens())
        assert mask.shape == (len(TOY),) and mask.dtype == bool, (
            f"allowed_tokens must be bool [{len(TOY)}], got {mask.dtype} {mask.shape}")
        for t, tok in enumerate(TOY[:TOY_SPECIAL]):
            whole = text + tok
            if len(whole) > 5 or not set(whole) <= ALPHABET_SET:
                continue
            ok = canonical(whole) in live
            assert mask[t] == ok, (
                f"after {text.decode()!r}, token {tok.decode()!r} must be "
                f"{'allowed' if ok else 'masked'}: every one of its bytes counts")
        complete = canonical(text) in docs
        assert mask[TOY_EOS] == complete, (
            f"after {text.decode()!r} EOS must be {'allowed' if complete else 'masked'}")
        checked += 1
        if len(text) < 3:
            todo.extend(ids + [int(t)] for t in np.flatnonzero(mask)
                        if t != TOY_EOS and set(TOY[t]) <= ALPHABET_SET)
    assert checked > 20


def test_special_tokens_are_never_allowed(impl) -> None:
    matcher = impl.JsonMatcher(None, TOY, TOY_EOS)
    for step in [None, ord("["), ord('"'), ord("a")]:
        if step is not None:
            matcher.accept_token(TOY.index(bytes([step])))
        assert not matcher.allowed_tokens()[TOY_SPECIAL], (
            "a special token spells no bytes: an empty walk 'succeeds' but must never be allowed")
    with expect_raises(ValueError, "a special token is never allowed"):
        matcher.accept_token(TOY_SPECIAL)


def test_eos_only_when_the_document_is_complete(impl) -> None:
    matcher = impl.JsonMatcher(None, TOY, TOY_EOS)
    for tok, complete in [(b"{", False), (b'"a"', False), (b":", False), (b"1", False),
                          (b"}", True)]:
        matcher.accept_token(TOY.index(tok))
        assert matcher.allowed_tokens()[TOY_EOS] == complete, (
            f"EOS must be {'legal' if complete else 'illegal'} here: the top-level value is "
            f"{'closed' if complete else 'still open'}")
    assert not matcher.is_terminated()
    matcher.accept_token(TOY_EOS)
    assert matcher.is_terminated(), "is_terminated() is True once EOS was accepted"
    assert not matcher.allowed_tokens().any(), "nothing is allowed after EOS"
    with expect_raises(ValueError, "an illegal token", match="not allowed|illegal"):
        impl.JsonMatcher(None, TOY, TOY_EOS).accept_token(TOY.index(b"}"))
    with expect_raises(ValueError, "eos_token_id must be a token of the vocabulary"):
        impl.JsonMatcher(None, TOY, len(TOY))


# -- the course's generation tests, at token level --------------------------------------------


def test_brace_hating_model_still_emits_valid_json(impl) -> None:
    model = fake_model(b'":{"', b"a", b"0", b",", hated=(b"}", b"}}", b'"}', b"]}", b"}]"))
    matcher = impl.JsonMatcher(None, TOY, TOY_EOS, max_depth=8, max_len=60)
    ids, reason = impl.constrained_generate(matcher, model, max_tokens=61)
    text = toy_text(ids)
    assert reason == "stop", f"the budget must force the braces shut in time; got {text!r}"
    value = json.loads(text)
    assert nesting(value) == 8, f"the brace-hater should nest to depth 8, got {text!r}"
    assert len(text.encode()) <= 60, f"{len(text.encode())} bytes exceed max_len=60"


def test_truncation_caveat_brace_lover_never_closes(impl) -> None:
    model = fake_model(b'":{"', b"a", hated=(b"}", b"}}", b'"}'))
    matcher = impl.JsonMatcher(None, TOY, TOY_EOS, max_depth=8)
    ids, reason = impl.constrained_generate(matcher, model, max_tokens=40)
    text = toy_text(ids)
    assert reason == "length", f"without a budget nothing makes it stop; got {text!r}"
    assert len(ids) == 40, f"'length' means max_tokens=40 tokens came out, got {len(ids)}"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    # the fix: the same model under a budget closes every brace
    matcher = impl.JsonMatcher(None, TOY, TOY_EOS, max_depth=8, max_len=40)
    ids, reason = impl.constrained_generate(matcher, model, max_tokens=41)
    assert reason == "stop", "with max_len=40 the document must close within 41 tokens"
    json.loads(toy_text(ids))
    with expect_raises(ValueError, "max_tokens must be at least 1"):
        impl.constrained_generate(impl.JsonMatcher(None, TOY, TOY_EOS), model, max_tokens=0)


def test_fuzzed_preferences_always_parse_or_truncate_live(impl, reference_impl) -> None:
    rng = np.random.default_rng(1203)
    for model in range(50):
        weights = rng.normal(size=len(TOY))
        budget = None if model % 2 else 30
        matcher = impl.JsonMatcher(None, TOY, TOY_EOS, max_depth=3, max_len=budget)
        ids, reason = impl.constrained_generate(
            matcher, lambda out, w=weights: w + rng.normal(size=len(TOY)), max_tokens=31)
        text = toy_text(ids)
        if reason == "stop":
            json.loads(text)  # the independent oracle
            continue
        assert budget is None, f"model {model}: a budget of {budget} bytes must end in EOS"
        oracle = reference_impl.JsonMachine(max_depth=3)
        try:
            feed_text(oracle, text)
        except ValueError:
            pytest.fail(f"model {model}: the truncated output {text!r} is not a live prefix")


# -- schema mode --------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "alive": {"type": "boolean"},
        "job": {"enum": ["pirate", "wizard"]},
    },
    "required": ["name", "age", "height", "alive", "job"],
}


def test_schema_mode_pins_keys_types_and_enums(impl) -> None:
    good = '{"name":"Ann","age":41,"height":1.7,"alive":true,"job":"wizard"}'
    assert recognizes(impl, good, schema=PERSON), f"{good} matches the schema"
    assert recognizes(impl, '{ "name": "", "age": -3, "height": 2, "alive": false, '
                            '"job": "pirate" }', schema=PERSON)
    def person(**changes: str) -> str:
        fields = {"name": '"Ann"', "age": "41", "height": "1.7", "alive": "true",
                  "job": '"wizard"', **changes}
        return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if v) + "}"

    bad = {
        "keys out of order": '{"age":41,"name":"Ann","height":1.7,"alive":true,"job":"wizard"}',
        "integer with a fraction": person(age="4.5"),
        "string for an integer": person(age='"41"'),
        "value outside the enum": person(job='"cook"'),
        "a missing key": person(job=""),
        "an extra key": person(x="1"),
        "null for a boolean": person(alive="null"),
        "not an object": '["Ann"]',
    }
    assert recognizes(impl, person(), schema=PERSON), f"{person()} matches the schema"
    for why, text in bad.items():
        assert not recognizes(impl, text, schema=PERSON), f"{why}: {text} must be rejected"
    machine = impl.JsonMachine(schema=PERSON)
    assert machine.min_to_close() == len('{"name":"","age":0,"height":0,"alive":true,'
                                         '"job":"pirate"}'), "the shortest schema document"


def test_schema_mode_refuses_what_it_cannot_enforce(impl) -> None:
    for why, schema in [
        ("a nested object", {"type": "object", "properties": {"a": {"type": "object"}}}),
        ("an optional key", {"type": "object", "properties": {"a": {"type": "string"},
                                                              "b": {"type": "string"}},
                             "required": ["a"]}),
        ("an enum of numbers", {"type": "object", "properties": {"a": {"enum": [1, 2]}}}),
        ("a top-level array", {"type": "array"}),
    ]:
        with expect_raises(ValueError, f"the kata's schema subset has no {why}"):
            impl.JsonMachine(schema=schema)


def test_matchers_keep_their_own_state(impl) -> None:
    first = impl.JsonMatcher(None, TOY, TOY_EOS)
    second = impl.JsonMatcher(None, TOY, TOY_EOS)
    first.accept_token(TOY.index(b"["))
    fresh = impl.JsonMatcher(None, TOY, TOY_EOS).allowed_tokens()
    assert np.array_equal(second.allowed_tokens(), fresh), (
        "advancing one request's matcher changed another's mask: grammar state is per request")
    assert first.allowed_tokens()[TOY.index(b"]")], "'[' then ']' is legal"


# -- the real thing: SmolLM2 through mini_vllm ------------------------------------------------

SMOL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "job": {"enum": ["pirate", "astronaut", "wizard"]},
        "alive": {"type": "boolean"},
    },
    "required": ["name", "age", "job", "alive"],
}
SMOL_MAX_LEN = 56  # bytes; every token spells at least one, so max_tokens = 57 always fits


@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_your_mask_drives_smollm2_to_valid_json(impl) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]' for jsonschema")
    structured_output = pytest.importorskip(
        "mini_vllm.structured_output", reason="this mini_vllm has no structured-output hook")
    from mini_vllm import LLM, SamplingParams
    from mini_vllm.tokenizer import HFTokenizer

    tok = HFTokenizer(smollm2_path())
    vocab = structured_output.token_bytes(tok)
    # the matchers first: a stub fails here, before the model is loaded
    matchers = [impl.JsonMatcher(SMOL_SCHEMA, vocab, tok.eos_token_id, max_depth=2,
                                 max_len=SMOL_MAX_LEN) for _ in range(3)]
    prompts = [tok.encode(tok.apply_chat_template([{
        "role": "user",
        "content": f"Describe a fictional {job} as JSON with keys name, age, job, alive."}]))
        for job in ("pirate", "wizard", "astronaut")]
    params = [SamplingParams(max_tokens=SMOL_MAX_LEN + 1, temperature=0.0)] + [
        SamplingParams(max_tokens=SMOL_MAX_LEN + 1, temperature=0.8, seed=s) for s in (1, 2)]
    llm = LLM(smollm2_path(), max_model_len=256)
    outputs = llm.engine.generate(prompts, params, structured_outputs=matchers)
    for out, sp in zip(outputs, params, strict=True):
        label = "greedy" if sp.temperature == 0 else f"seed {sp.seed}"
        assert out.finish_reason == "stop", (
            f"{label}: the budget must close the object before max_tokens; got {out.text!r}")
        try:
            value = json.loads(out.text)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{label}: SmolLM2 under your mask wrote {out.text!r}: not JSON ({exc})")
        try:
            jsonschema.validate(value, SMOL_SCHEMA)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{label}: {out.text!r} breaks the schema: {exc.message}")
    assert all(m.is_terminated() for m in matchers), "every matcher saw its EOS"
