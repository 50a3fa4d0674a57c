"""Spec for kata 16-01: Hermes tool calls out of text — batch, streamed, and behind 16-03.

The property every incremental parser owes: however the text is cut into chunks, the stream
says the same thing as the batch parse. The tests check it on every 2-way split of several
texts and on seeded random k-way splits, against an oracle written here (a regular
expression), not against the code under test.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from katas.phase16.tool_call_parser.scaffold import CLOSE, OPEN, merge_content
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}
ONE_CALL = f"Let me check. {OPEN}{json.dumps(WEATHER)}{CLOSE} One moment."
TWO_CALLS = (f"a < b, <b>bold</b> and <today>: {OPEN}{json.dumps({'name': 'a', 'arguments': {}})}"
             f"{CLOSE}\n{OPEN} {json.dumps({'name': 'b', 'arguments': {'x': [1, 2]}})} {CLOSE}"
             f" a stray {CLOSE} stays text <tool_c")
ADJACENT = (f"<<{OPEN}{json.dumps({'name': 'rocket', 'arguments': {'s': '🚀 <tool'}})}{CLOSE}"
            f"{OPEN}{json.dumps({'name': 'n', 'arguments': None})}{CLOSE}<")
ONLY_CALL = f"{OPEN}{json.dumps(WEATHER)}{CLOSE}"
PLAIN = "no tools here, just <b>html</b>, a <tool_call without its bracket, and <"
TEXTS = [ONE_CALL, TWO_CALLS, ADJACENT, ONLY_CALL, PLAIN]

_BLOCK = re.compile(re.escape(OPEN) + "(.*?)" + re.escape(CLOSE), re.DOTALL)


def oracle(text: str) -> list[tuple[str, object]]:
    """The merged events a correct parser produces for a complete, well-formed text."""
    events: list[tuple[str, object]] = []
    pos = 0
    for m in _BLOCK.finditer(text):
        if m.start() > pos:
            events.append(("content", text[pos:m.start()]))
        events.append(("tool_call", json.loads(m.group(1))))
        pos = m.end()
    if pos < len(text):
        events.append(("content", text[pos:]))
    return events


def run_stream(impl, chunks) -> list:
    """Feed every chunk, then finish; the raw events, in order."""
    parser = impl.StreamingToolParser()
    events = []
    for chunk in chunks:
        got = parser.feed(chunk)
        assert isinstance(got, list), f"feed must return a list of events, got {got!r}"
        events += got
    done = parser.finish()
    assert isinstance(done, list), f"finish must return a list of events, got {done!r}"
    return events + done


def check_stream(impl, text: str, chunks: list[str], label: str) -> None:
    events = run_stream(impl, chunks)
    empty = [e for e in events if e[0] == "content" and not e[1]]
    assert not empty, f"{label}: content events must not be empty, got {events}"
    expected = oracle(text)
    assert merge_content(events) == expected, (
        f"{label}: chunks {chunks!r}\nstreamed (merged) {merge_content(events)}\n"
        f"expected          {expected}")


# -- batch ------------------------------------------------------------------------------------


def test_batch_parse(impl) -> None:
    content, calls = impl.parse_tool_calls(ONE_CALL)
    assert calls == [WEATHER], f"expected the one call {WEATHER}, got {calls}"
    assert content == "Let me check.  One moment.", (
        "content is the text with the block cut out, everything around it kept exactly "
        f"(both spaces); got {content!r}")
    assert impl.parse_tool_calls(PLAIN) == (PLAIN, []), "text without a block is all content"


def test_multiple_calls_in_order(impl) -> None:
    content, calls = impl.parse_tool_calls(TWO_CALLS)
    names = [c.get("name") if isinstance(c, dict) else c for c in calls]
    assert names == ["a", "b"], f"two blocks give two calls in text order, got {names}"
    assert calls[1] == {"name": "b", "arguments": {"x": [1, 2]}}, calls[1]
    expected = "".join(v for k, v in oracle(TWO_CALLS) if k == "content")
    assert content == expected, f"content around and between blocks: {expected!r}, got {content!r}"


def test_malformed_json_is_loud(impl) -> None:
    bad = f"ok {OPEN}{{'name': 'x'}}{CLOSE}"
    with expect_raises(ValueError, "single-quoted JSON in a block is malformed: the server "
                       "must fail the request, not hand the agent garbage"):
        impl.parse_tool_calls(bad)
    parser = impl.StreamingToolParser()
    with expect_raises(ValueError, "the streaming parser must raise when the malformed block "
                       "closes"):
        parser.feed(bad)


def test_call_must_be_an_object_with_a_name(impl) -> None:
    for body in ('[1, 2]', '{"arguments": {}}', '{"name": 7}', ''):
        with expect_raises(ValueError, f"{OPEN}{body}{CLOSE} is not a call (an object with a "
                           "string 'name')"):
            impl.parse_tool_calls(f"{OPEN}{body}{CLOSE}")


def test_batch_rejects_an_unterminated_block(impl) -> None:
    with expect_raises(ValueError, "a block without its close tag is a truncated call",
                       match="unterminated"):
        impl.parse_tool_calls(f"hi {OPEN}{{\"name\": \"x\"")


# -- streaming equals batch -------------------------------------------------------------------


def test_streaming_equals_batch_for_any_chunking(impl) -> None:
    rng = random.Random(1601)
    for text in TEXTS:
        content, calls = impl.parse_tool_calls(text)
        for trial in range(50):
            cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
            chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            events = run_stream(impl, chunks)
            got_content = "".join(v for k, v in events if k == "content")
            got_calls = [v for k, v in events if k == "tool_call"]
            assert (got_content, got_calls) == (content, calls), (
                f"slicing {trial} {chunks!r}: streaming gave {(got_content, got_calls)}, the "
                f"batch parse {(content, calls)}")


def test_streaming_equals_batch_on_every_two_way_split(impl) -> None:
    for text in TEXTS:
        for i in range(len(text) + 1):
            check_stream(impl, text, [text[:i], text[i:]], f"split at {i}")


def test_streaming_equals_batch_on_random_k_way_splits(impl) -> None:
    rng = random.Random(16)
    for text in TEXTS:
        check_stream(impl, text, list(text), "one character per chunk")
        for trial in range(40):
            k = rng.randint(2, len(text))
            cuts = sorted(rng.sample(range(1, len(text)), k - 1))
            chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            check_stream(impl, text, chunks, f"trial {trial}, {k} chunks")


# -- the hold-back ----------------------------------------------------------------------------


def test_tag_split_across_chunks_is_not_leaked(impl) -> None:
    parser = impl.StreamingToolParser()
    got = parser.feed("Sure. <tool")
    assert got == [("content", "Sure. ")], (
        f"'Sure. ' is safe to show, '<tool' may become a tag: expected [('content', 'Sure. ')], "
        f"got {got}")
    got = parser.feed('_call>{"name": "f"}')
    assert got == [], f"inside a block nothing is shown until it closes, got {got}"
    got = parser.feed(CLOSE)
    assert got == [("tool_call", {"name": "f"})], f"the block closed: one call, got {got}"


def test_false_alarm_prefix_is_released(impl) -> None:
    parser = impl.StreamingToolParser()
    first, second = parser.feed("<to"), parser.feed("day>")
    assert first == [], f"'<to' could start {OPEN}: hold it, got {first}"
    assert second == [("content", "<today>")], (
        f"'<today>' is not a tag: release the held '<to' with it, intact; got {second}")


def test_content_is_emitted_eagerly(impl) -> None:
    parser = impl.StreamingToolParser()
    cases = [("Hello", "Hello"), (" a < b", " a < b"), (" <b>", " <b>"), (" x<t<to", " x<t")]
    got = [parser.feed(chunk) for chunk, _ in cases]
    expected = [[("content", want)] for _, want in cases]
    assert got == expected, (
        "only the longest end of the buffer that could still grow into the tag is held; "
        f"expected {expected}, got {got}")
    rest = parser.feed("ld on")
    assert rest == [("content", "<told on")], (
        f"the held '<to' comes out as soon as 'ld' rules the tag out; got {rest}")


def test_close_tag_split_across_chunks(impl) -> None:
    parser = impl.StreamingToolParser()
    events = parser.feed(f'{OPEN}{{"name": "f"}}</tool') + parser.feed("_ca")
    assert events == [], f"a half close tag inside a block shows nothing, got {events}"
    events = parser.feed("ll>done")
    assert events == [("tool_call", {"name": "f"}), ("content", "done")], (
        f"the close tag completed: the call, then the text after it; got {events}")


def test_content_after_a_call_streams(impl) -> None:
    parser = impl.StreamingToolParser()
    events = parser.feed(ONLY_CALL) + parser.feed(" after") + parser.feed(" and more")
    assert events == [("tool_call", WEATHER), ("content", " after"), ("content", " and more")], (
        f"after a block closes the parser is outside again: text streams; got {events}")


def test_finish_flushes_held_text(impl) -> None:
    parser = impl.StreamingToolParser()
    first = parser.feed("x <tool_call")
    assert first == [("content", "x ")], f"'<tool_call' is one '>' short of a tag, got {first}"
    done = parser.finish()
    assert done == [("content", "<tool_call")], (
        f"at end of stream the held text is content and must be released; got {done}")


def test_unterminated_block_fails_at_finish(impl) -> None:
    parser = impl.StreamingToolParser()
    events = parser.feed(f'Calling. {OPEN}{{"name": "get_weather", "argu')
    assert events == [("content", "Calling. ")], f"text before the block streams, got {events}"
    with expect_raises(ValueError, "a stream truncated inside a call is an error at finish",
                       match="unterminated"):
        parser.finish()


def test_finish_resets_the_parser(impl) -> None:
    parser = impl.StreamingToolParser()
    parser.feed("one <to")
    parser.finish()
    again = parser.feed("two") + parser.finish()
    assert again == [("content", "two")], (
        f"after finish the parser starts clean (nothing held, outside a block); got {again}")


# -- end to end: token ids -> 16-03's detokenizer -> this parser ------------------------------

E2E_CALL = {"name": "send", "arguments": {"text": "Bon voyage 🚀 — 你好"}}
E2E_TEXT = f"Envoi… {OPEN}{json.dumps(E2E_CALL, ensure_ascii=False)}{CLOSE} fait ✅"


def test_end_to_end_bytes_through_the_detokenizer(impl) -> None:
    ids = [*E2E_TEXT.encode(), 256]  # ByteTokenizer ids, then EOS
    events = impl.stream_tool_calls(ids)
    assert merge_content(events) == oracle(E2E_TEXT), (
        f"byte tokens through both hold-backs should give {oracle(E2E_TEXT)}, got {events}")
    bad = [e for e in events if e[0] == "content" and "\ufffd" in e[1]]
    assert not bad, f"no content event may carry U+FFFD for valid text: {bad}"
    cut = list(("ok " + "🚀").encode())[:-1]  # cut inside the rocket
    events = impl.stream_tool_calls(cut)
    assert merge_content(events) == [("content", "ok \ufffd")], (
        f"a stream cut inside a character ends with the detokenizer's honest U+FFFD; got {events}")


def test_end_to_end_on_smollm2_tokens(impl, smollm2_tokenizer) -> None:
    from mini_vllm.structured_output import token_bytes

    tokenizer = smollm2_tokenizer
    ids = tokenizer.encode(E2E_TEXT)
    events = impl.stream_tool_calls(ids, token_bytes(tokenizer))
    assert merge_content(events) == oracle(E2E_TEXT), (
        f"SmolLM2's {len(ids)} BPE tokens through both hold-backs should give "
        f"{oracle(E2E_TEXT)}, got {events}")
