"""Kata 16-02: both sides of an OpenAI chat stream.

Three rings. Recorded streams and error bodies (core, no extra packages). mini_vllm's own
OpenAI-compatible server on the tiny Llama, in-process (needs the serve extra:
``pip install -e '.[serve]'``). vLLM's server on SmolLM2 (``live``: one server for the module,
started through the project's launcher only after your code has answered a recorded case).
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from typing import Any

import pytest

from katas.phase16.openai_server.scaffold import (
    BONJOUR_STREAM,
    MAX_TOKENS_400_BODY,
    WEATHER_TOOL_STREAM,
    RecordedHTTPError,
    chunk,
)
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.gpu_opt

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}
TAGGED = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
SERVE_MISSING = [m for m in ("fastapi", "uvicorn", "openai") if find_spec(m) is None]
SERVE_REASON = f"needs {', '.join(SERVE_MISSING)}: pip install -e '.[serve]'"


def ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))  # mini_vllm's byte tokenizer


def deltas_of(chunks: list[dict]) -> list[dict]:
    assert chunks and all(len(c["choices"]) == 1 for c in chunks), (
        f"every chunk of stream_chunks has exactly one choice; got {chunks!r}")
    return [c["choices"][0]["delta"] for c in chunks]


def reasons_of(chunks: list[dict]) -> list[str | None]:
    return [c["choices"][0]["finish_reason"] for c in chunks]


# ------------------------------------------------------------------------- to_openai_tool_call

def test_tool_call_arguments_become_a_json_string(impl) -> None:
    got = impl.to_openai_tool_call(WEATHER, "call_0")
    assert got.get("id") == "call_0" and got.get("type") == "function", (
        f"an OpenAI tool call has the given id and type 'function', got {got!r}")
    function = got.get("function", {})
    assert function.get("name") == "get_weather", f"function.name is the call's name: {got!r}"
    arguments = function.get("arguments")
    assert isinstance(arguments, str), (
        f"function.arguments is a JSON *string* in the OpenAI API, got {type(arguments).__name__}"
        f" {arguments!r}")
    assert json.loads(arguments) == {"city": "Paris"}, (
        f"json.loads(arguments) must give the call's arguments back, got {arguments!r}")


def test_tool_call_arguments_keep_non_ascii_and_nesting(impl) -> None:
    call = {"name": "launch", "arguments": {"emoji": "🚀", "where": {"lat": 48.85, "ok": True}}}
    arguments = impl.to_openai_tool_call(call, "c")["function"]["arguments"]
    assert json.loads(arguments) == call["arguments"], (
        f"arguments must be JSON (double quotes, true not True), got {arguments!r}")


def test_tool_call_without_arguments_has_the_empty_object(impl) -> None:
    got = impl.to_openai_tool_call({"name": "now"}, "c")
    assert json.loads(got["function"]["arguments"]) == {}, (
        f"a call without arguments has arguments '{{}}', got {got['function']['arguments']!r}")


@pytest.mark.parametrize("call", [{"arguments": {}}, {"name": ""}, {"name": 3},
                                  {"name": "f", "arguments": "{\"a\": 1}"}])
def test_tool_call_without_a_usable_name_or_arguments_is_refused(impl, call: dict) -> None:
    with expect_raises(ValueError, f"{call!r} is not a call the API can send"):
        impl.to_openai_tool_call(call, "c")


# ------------------------------------------------------------------------------ stream_chunks

def test_server_stream_is_role_then_content_then_finish(impl) -> None:
    chunks = impl.stream_chunks(ids("Bonjour !"), "stop", completion_id="chatcmpl-7", model="m")
    deltas = deltas_of(chunks)
    assert deltas[0] == {"role": "assistant", "content": ""}, (
        f"the first chunk opens the assistant's message: delta {{'role': 'assistant', "
        f"'content': ''}}, got {deltas[0]!r}")
    assert deltas[-1] == {} and reasons_of(chunks)[-1] == "stop", (
        f"the last chunk has an empty delta and the finish reason, got {chunks[-1]!r}")
    assert reasons_of(chunks)[:-1] == [None] * (len(chunks) - 1), (
        "only the last chunk may carry a finish_reason")
    middle = deltas[1:-1]
    assert all(set(d) == {"content"} for d in middle), f"content chunks only: {middle!r}"
    assert "".join(d["content"] for d in middle) == "Bonjour !"
    assert {(c["id"], c["object"], c["model"]) for c in chunks} == {
        ("chatcmpl-7", "chat.completion.chunk", "m")}, "every chunk carries the stream's id/model"


def test_server_stream_sends_each_character_once_it_is_complete(impl) -> None:
    text = "naïve café — 你好 🚀🇫🇷"
    pieces = [d["content"] for d in deltas_of(impl.stream_chunks(ids(text), "length"))[1:-1]]
    assert "".join(pieces) == text, f"the deltas must spell the text, got {pieces!r}"
    assert all(p and "\ufffd" not in p for p in pieces), (
        f"a delta is never empty and never half a character: {pieces!r}")
    assert len(pieces) == len(text), (
        f"each character is sent as soon as its last byte arrives: {len(text)} deltas for "
        f"{len(text)} characters, got {len(pieces)}: {pieces!r}")


def test_server_stream_never_shows_the_tool_call_block(impl) -> None:
    chunks = impl.stream_chunks(ids(TAGGED), "stop")
    deltas = deltas_of(chunks)
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Sure. ", f"only the text around the block is content, got {text!r}"
    calls = [d["tool_calls"] for d in deltas if d.get("tool_calls")]
    assert len(calls) == 1 and len(calls[0]) == 1, f"one tool_calls chunk, one call: {calls!r}"
    call = calls[0][0]
    assert call.get("index") == 0 and call.get("id") == "call_0", (
        f"the first call has index 0 and id 'call_0', got {call!r}")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert isinstance(call["function"]["arguments"], str), "arguments is a JSON string"
    assert reasons_of(chunks)[-1] == "tool_calls", (
        f"a stream that sent a call finishes with 'tool_calls' (the engine said 'stop'), got "
        f"{reasons_of(chunks)[-1]!r}")


def test_server_stream_numbers_two_calls_in_order(impl) -> None:
    two = TAGGED + ' and <tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>'
    deltas = deltas_of(impl.stream_chunks(ids(two), "stop"))
    calls = [c for d in deltas for c in d.get("tool_calls") or []]
    got = [(c.get("index"), c.get("id"), c["function"]["name"]) for c in calls]
    assert got == [(0, "call_0", "get_weather"), (1, "call_1", "get_time")], (
        f"calls are numbered 0, 1, ... in text order, got {got}")
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Sure.  and ", f"content keeps the text between blocks, got {text!r}"


def test_server_stream_keeps_the_engines_reason_without_calls(impl) -> None:
    chunks = impl.stream_chunks(ids("a < b, b <") + [256], "length")
    assert reasons_of(chunks)[-1] == "length", "no call: the engine's finish reason stands"
    text = "".join(d.get("content") or "" for d in deltas_of(chunks))
    assert text == "a < b, b <", (
        f"a '<' that opens no tag is content, even the last one (held back as a possible tag "
        f"until the end); EOS is no text; got {text!r}")


def test_server_stream_refuses_an_unclosed_call(impl) -> None:
    with expect_raises(ValueError, "the output ended inside a <tool_call> block"):
        impl.stream_chunks(ids('<tool_call>{"name": "f"'), "length")


# ----------------------------------------------------------------------------- collect_stream

def test_client_reads_the_course_capture(impl) -> None:
    got = impl.collect_stream(BONJOUR_STREAM)
    assert got.role == "assistant", f"role comes from the first chunk, got {got.role!r}"
    assert got.deltas == [None, " Bon", "jour", " !", None], (
        f"the course printed the deltas None ' Bon' 'jour' ' !' None, got {got.deltas!r}")
    assert got.content == " Bonjour !", f"content joins the deltas, got {got.content!r}"
    assert got.finish_reason == "stop" and got.tool_calls == []


def test_client_merges_tool_call_fragments_by_index(impl) -> None:
    got = impl.collect_stream(WEATHER_TOOL_STREAM)
    assert got.finish_reason == "tool_calls", f"got finish_reason {got.finish_reason!r}"
    assert got.tool_calls == [{"id": "chatcmpl-tool-1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}], (
        f"three fragments of index 0 are one call; its arguments string is their pieces "
        f"joined; got {got.tool_calls!r}")
    assert got.content == "" and got.deltas == ["", None, None, None, None], (
        f"a usage chunk (no choices) is skipped; got content {got.content!r}, "
        f"deltas {got.deltas!r}")


def test_client_parses_a_call_sent_as_text(impl) -> None:
    pieces = ["Sure. <tool", "_call>{\"name\": \"get_", "weather\", \"arguments\": ",
              "{\"city\": \"Paris\"}}</tool_", "call>"]
    stream = [chunk({"role": "assistant", "content": ""})]
    stream += [chunk({"content": p}) for p in pieces] + [chunk({}, "stop")]
    got = impl.collect_stream(stream)
    assert got.content == "Sure. ", f"the block is cut out of the content, got {got.content!r}"
    assert got.tool_calls == [impl.to_openai_tool_call(WEATHER, "call_0")], (
        f"a call the server left in the text is parsed on the client, got {got.tool_calls!r}")
    assert got.deltas[1:-1] == pieces, "deltas are recorded raw, as they arrived"


def test_client_treats_null_fields_as_absent(impl) -> None:
    def dumped(delta: dict, reason: str | None = None) -> dict:
        full = {"role": None, "content": None, "tool_calls": None, "function_call": None,
                "refusal": None, **delta}
        return chunk(full, reason)

    stream = [dumped({"role": "assistant", "content": ""}), dumped({"content": "Hi"}),
              dumped({"content": ""}, "stop"),
              {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": {}}]
    got = impl.collect_stream(stream)
    assert (got.role, got.content, got.tool_calls, got.finish_reason) == (
        "assistant", "Hi", [], "stop"), (
        f"model_dump() writes absent fields as None (tool_calls: None): got {got!r}")


@pytest.mark.parametrize(("stream", "why"), [
    (BONJOUR_STREAM[1:], "the first chunk has no role"),
    (BONJOUR_STREAM + [chunk({"content": "!"})], "a chunk came after the finish chunk"),
    (BONJOUR_STREAM[:-1], "the stream ended without a finish reason"),
])
def test_client_refuses_a_stream_out_of_order(impl, stream: list, why: str) -> None:
    with expect_raises(ValueError, why):
        impl.collect_stream(stream)


def test_server_and_client_round_trip(impl) -> None:
    text = "Voilà 🚀 " + TAGGED
    got = impl.collect_stream(impl.stream_chunks(ids(text), "stop"))
    assert (got.role, got.content, got.finish_reason) == ("assistant", "Voilà 🚀 Sure. ",
                                                           "tool_calls"), f"got {got!r}"
    assert got.tool_calls == [impl.to_openai_tool_call(WEATHER, "call_0")], (
        f"the server's tool_calls chunk reads back as one call, got {got.tool_calls!r}")


# -------------------------------------------------------------------------------- chat_stream

class _Dumped:
    def __init__(self, data: dict) -> None:
        self.data = data

    def model_dump(self) -> dict:
        return self.data


class _FakeStream:
    def __init__(self, chunks: list[dict]) -> None:
        self.chunks, self.closed = chunks, False

    def __iter__(self) -> Any:
        return iter([_Dumped(c) for c in self.chunks])

    def close(self) -> None:
        self.closed = True


class _FakeClient:
    """Records what ``chat.completions.create`` was asked and replays a recorded stream."""

    def __init__(self, chunks: list[dict]) -> None:
        self.calls: list[dict] = []
        self.stream = _FakeStream(chunks)
        self.chat = self
        self.completions = self

    def create(self, **kwargs: Any) -> _FakeStream:
        self.calls.append(kwargs)
        return self.stream


def test_chat_stream_asks_for_a_stream_and_closes_it(impl) -> None:
    client = _FakeClient(BONJOUR_STREAM)
    messages = [{"role": "user", "content": "Say hi in French, one word."}]
    got = impl.chat_stream(client, "qwen", messages, max_tokens=8, temperature=0.0)
    assert client.calls == [{"model": "qwen", "messages": messages, "stream": True,
                             "max_tokens": 8, "temperature": 0.0}], (
        f"one create(model=..., messages=..., stream=True, **create_kwargs), got {client.calls}")
    assert got.content == " Bonjour !" and got.finish_reason == "stop", f"got {got!r}"
    assert client.stream.closed, "the stream must be closed once read (or on an error)"


# ------------------------------------------------------------------------------------ error_of

def test_error_of_reads_the_servers_body(impl) -> None:
    inner = MAX_TOKENS_400_BODY["error"]
    for body in (inner, MAX_TOKENS_400_BODY):
        got = impl.error_of(RecordedHTTPError(400, body))
        assert got == (400, "BadRequestError", inner["message"]), (
            f"(status, body type, body message) whether body is the inner object or the whole "
            f"{{'error': ...}}; exc.message is the client's summary, not the server's text; "
            f"got {got!r} for body {body!r}")


@pytest.mark.parametrize("exc", [ConnectionError("refused"), RecordedHTTPError(502, "<html>")])
def test_error_of_refuses_what_is_no_error_body(impl, exc: BaseException) -> None:
    with expect_raises(ValueError, f"{exc!r} carries no OpenAI error body"):
        impl.error_of(exc)


# ---------------------------------------------------------------------- mini_vllm's own server

@pytest.fixture(scope="module")
def mini_server() -> Any:
    if SERVE_MISSING:
        pytest.skip(SERVE_REASON)
    import openai

    from mini_vllm import LLM
    from mini_vllm.entrypoints.openai_server import serve_in_thread
    from mini_vllm.models.tiny_llama import build_tiny_llama

    llm = LLM(build_tiny_llama(), dtype="float64", max_model_len=128)
    with serve_in_thread(llm, "tiny") as server:
        yield openai.OpenAI(base_url=server.base_url + "/v1", api_key="-", max_retries=0,
                            timeout=60), LLM(build_tiny_llama(), dtype="float64", max_model_len=128)


def test_mini_vllm_stream_equals_offline_greedy(impl, mini_server: Any) -> None:
    from mini_vllm import SamplingParams
    from mini_vllm.entrypoints.openai_server import render_chat

    client, offline = mini_server
    messages = [{"role": "user", "content": "hi"}]
    got = impl.chat_stream(client, "tiny", messages, max_tokens=10, temperature=0.0)
    prompt = render_chat(offline.engine.tokenizer, messages)
    expected = offline.generate(prompt, SamplingParams(max_tokens=10, temperature=0.0))[0]
    assert (got.role, got.finish_reason) == ("assistant", "length"), f"got {got!r}"
    assert got.content == expected.text, (
        f"the streamed content must equal offline greedy generation: {expected.text!r}, "
        f"got {got.content!r}")


def test_mini_vllm_error_bodies(impl, mini_server: Any) -> None:
    import openai

    client, _ = mini_server
    messages = [{"role": "user", "content": "hi"}]
    for kwargs, status, kind in [({"model": "nope"}, 404, "NotFoundError"),
                                 ({"model": "tiny", "max_tokens": 10**6}, 400, "BadRequestError")]:
        try:
            client.chat.completions.create(messages=messages, **kwargs)
        except openai.APIStatusError as exc:
            got = impl.error_of(exc)
        else:
            pytest.fail(f"{kwargs} should have been refused")
        assert got[:2] == (status, kind) and not got[2].startswith("Error code"), (
            f"{kwargs}: expected ({status}, {kind!r}, the server's message), got {got!r}")


# ------------------------------------------------------------------- live: vLLM's own server

#: ``vllm serve`` flags: a short context, no compilation, and Hermes tool parsing (vLLM refuses
#: ``tool_choice="required"`` without a tool-call parser).
SERVE_ARGS = ("--max-model-len", "512", "--enforce-eager", "--enable-auto-tool-choice",
              "--tool-call-parser", "hermes")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CITY_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
               "properties": {"city": {"type": "string", "maxLength": 20},
                              "population": {"type": "integer"}}}


class _LazyVLLM:
    """vLLM's server for this module, started on first use (so a stub that fails on the
    recorded case first never waits for it) and stopped when the module ends, whatever
    happened; ``start_seconds`` records how long it took to get healthy."""

    def __init__(self, stack: Any) -> None:
        self._stack, self._client, self.model, self.start_seconds = stack, None, "", 0.0

    def client(self) -> Any:
        if self._client is None:
            import time

            from pytest_vllm_katas.live.fixtures import model_path_for, require_vllm
            from pytest_vllm_katas.live.vllm_server import vllm_server

            require_vllm()
            if find_spec("openai") is None:
                pytest.skip("the live part needs the openai client: pip install -e '.[serve]'")
            import openai

            started = time.perf_counter()
            server = self._stack.enter_context(
                vllm_server(model_path_for("smollm2"), *SERVE_ARGS))
            self.start_seconds = time.perf_counter() - started
            self.model = server.model
            self._client = openai.OpenAI(base_url=server.openai_base_url, api_key="-",
                                         max_retries=0, timeout=120)
        return self._client


@pytest.fixture(scope="module")
def vllm_openai() -> Any:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield _LazyVLLM(stack)


@pytest.mark.live
def test_vllm_streams_role_first_and_finish_last(impl, vllm_openai: Any) -> None:
    assert impl.collect_stream(BONJOUR_STREAM).content == " Bonjour !", "the recorded case"
    client = vllm_openai.client()
    got = impl.chat_stream(client, vllm_openai.model, FRANCE, max_tokens=24, temperature=0.0,
                           stream_options={"include_usage": True})
    assert got.role == "assistant" and got.finish_reason == "stop", f"got {got!r}"
    assert "Paris" in got.content, f"SmolLM2 greedy answers Paris, got {got.content!r}"
    whole = client.chat.completions.create(model=vllm_openai.model, messages=FRANCE,
                                           max_tokens=24, temperature=0.0)
    assert got.content == whole.choices[0].message.content, (
        "greedy: the streamed deltas must add up to the non-streamed answer")


@pytest.mark.live
def test_vllm_error_bodies(impl, vllm_openai: Any) -> None:
    recorded = impl.error_of(RecordedHTTPError(400, MAX_TOKENS_400_BODY))
    assert recorded[0] == 400, "the recorded case"
    client = vllm_openai.client()
    import openai

    cases = [({"model": "no-such-model"}, 404, "NotFoundError", "no-such-model"),
             ({"model": vllm_openai.model, "max_tokens": 10**6}, 400, "BadRequestError",
              "max_tokens")]
    for kwargs, status, kind, mentioned in cases:
        try:
            client.chat.completions.create(messages=FRANCE, **kwargs)
        except openai.APIStatusError as exc:
            got = impl.error_of(exc)
        else:
            pytest.fail(f"vLLM accepted {kwargs}")
        assert got[:2] == (status, kind) and mentioned in got[2], (
            f"{kwargs}: expected ({status}, {kind!r}, a message naming {mentioned!r}), got {got}")
        assert not got[2].startswith("Error code"), "the server's message, not the client's"


@pytest.mark.live
def test_vllm_enforces_a_json_schema(impl, vllm_openai: Any) -> None:
    assert impl.collect_stream(BONJOUR_STREAM).finish_reason == "stop", "the recorded case"
    question = [{"role": "user", "content": "Name the largest city of France and its "
                 "population, as JSON."}]
    got = impl.chat_stream(vllm_openai.client(), vllm_openai.model, question, max_tokens=80,
                           temperature=0.0, response_format={"type": "json_schema", "json_schema":
                                                             {"name": "city",
                                                              "schema": CITY_SCHEMA}})
    assert got.finish_reason == "stop", f"a bounded schema ends on 'stop', got {got!r}"
    value = json.loads(got.content)
    assert set(value) == {"city", "population"} and isinstance(value["city"], str) and \
        isinstance(value["population"], int), f"the schema was not enforced: {value!r}"


@pytest.mark.live
def test_vllm_required_tool_choice_streams_a_call(impl, vllm_openai: Any) -> None:
    assert len(impl.collect_stream(WEATHER_TOOL_STREAM).tool_calls) == 1, "the recorded case"
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    got = impl.chat_stream(vllm_openai.client(), vllm_openai.model, question, max_tokens=60,
                           temperature=0.0, tools=[WEATHER_TOOL], tool_choice="required")
    assert got.finish_reason == "tool_calls", f"tool_choice='required' ends on tool_calls: {got}"
    assert got.tool_calls, "the stream carried no tool call"
    for call in got.tool_calls:  # a 135M model's arguments are weak: check the shape only
        assert call["type"] == "function" and call["id"], f"got {call!r}"
        assert call["function"]["name"] == "get_weather", f"got {call!r}"
        arguments = call["function"]["arguments"]
        assert isinstance(arguments, str), f"arguments is a JSON string, got {arguments!r}"
        json.loads(arguments)  # valid JSON, whatever it says
    print(f"vLLM server start: {vllm_openai.start_seconds:.1f} s")
