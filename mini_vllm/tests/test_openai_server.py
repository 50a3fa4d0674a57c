"""mini_vllm's OpenAI-compatible server, hit with the official ``openai`` client.

The server runs in-process on a free port (``serve_in_thread``) over the float64 tiny Llama, so
every answer can be compared token for token with offline greedy ``LLM.generate``; one test asks
SmolLM2 the France question. The detokenizer's tests need nothing; the rest need the serve extra
(``pip install -e '.[serve]'``: FastAPI, uvicorn, the openai client) and skip without it.
"""

from __future__ import annotations

import threading
from importlib.util import find_spec
from typing import Any

import pytest

from mini_vllm import LLM, ByteTokenizer, SamplingParams
from mini_vllm.entrypoints.openai_server import (
    IncrementalDetokenizer,
    render_chat,
    serve_in_thread,
)
from mini_vllm.models.tiny_llama import build_tiny_llama
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

SERVE_MISSING = [m for m in ("fastapi", "uvicorn", "openai", "httpx") if find_spec(m) is None]
needs_serve = pytest.mark.skipif(
    bool(SERVE_MISSING),
    reason=f"needs {', '.join(SERVE_MISSING)}: pip install -e '.[serve]'")
MODEL = "tiny-llama"
HI = [{"role": "user", "content": "hi"}]
BOUND = 500  # no stream in these tests has more chunks than this


# ----------------------------------------------------------------------------- the detokenizer

def test_detokenizer_holds_a_character_until_its_last_byte() -> None:
    detok = IncrementalDetokenizer(ByteTokenizer())
    text = "naïve café — 你好 🚀"
    deltas = [detok.feed([b]) for b in text.encode("utf-8")] + [detok.finish()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas), f"a half character leaked: {deltas}"
    rocket = [detok.feed([b]) for b in "🚀".encode()]
    assert rocket == ["", "", "", "🚀"]


def test_detokenizer_flushes_a_truncated_character_honestly() -> None:
    detok = IncrementalDetokenizer(ByteTokenizer())
    assert detok.feed(list("ok🚀".encode())[:4]) == "ok"
    assert detok.finish() == "\ufffd"


def test_minimal_chat_template_is_chatml() -> None:
    assert render_chat(ByteTokenizer(), HI) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------ the server

@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(build_tiny_llama(), dtype="float64", max_model_len=256)


@pytest.fixture(scope="module")
def offline_llm() -> LLM:
    """A second engine for the expected answers: the served one belongs to the server's thread."""
    return LLM(build_tiny_llama(), dtype="float64", max_model_len=256)


@pytest.fixture(scope="module")
def server(llm: LLM) -> Any:
    if SERVE_MISSING:
        pytest.skip(f"needs {', '.join(SERVE_MISSING)}: pip install -e '.[serve]'")
    with serve_in_thread(llm, MODEL) as running:
        yield running
    assert not running.app.state.engine_loop._thread.is_alive(), "the engine loop outlived it"


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="-", max_retries=0,
                         timeout=60)


def offline(offline_llm: LLM, messages: list[dict[str, str]], max_tokens: int) -> str:
    prompt = render_chat(offline_llm.engine.tokenizer, messages)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return offline_llm.generate(prompt, params)[0].text


def collect(stream: Any) -> list[Any]:
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        assert len(chunks) < BOUND, "the stream does not end"
    return chunks


@needs_serve
def test_health_and_models(server: Any, client: Any) -> None:
    import httpx

    assert httpx.get(server.base_url + "/health").status_code == 200
    assert [m.id for m in client.models.list().data] == [MODEL]


@needs_serve
def test_chat_equals_offline_greedy(offline_llm: LLM, client: Any) -> None:
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == offline(offline_llm, HI, 12)
    assert r.choices[0].finish_reason == "length"
    prompt_len = len(render_chat(ByteTokenizer(), HI).encode())
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_len, 12)


@needs_serve
def test_stream_is_role_then_deltas_then_finish(offline_llm: LLM, client: Any) -> None:
    chunks = collect(client.chat.completions.create(model=MODEL, messages=HI, max_tokens=12,
                                                    temperature=0, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and not deltas[0].content, "role chunk first"
    assert chunks[-1].choices[0].finish_reason == "length" and deltas[-1].content is None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert "".join(d.content for d in deltas[1:-1]) == offline(offline_llm, HI, 12)
    assert len({c.id for c in chunks}) == 1, "one id for every chunk of a completion"


@needs_serve
def test_sse_wire_format_ends_with_done(server: Any) -> None:
    import httpx

    body = {"model": MODEL, "messages": HI, "max_tokens": 3, "temperature": 0, "stream": True}
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


@needs_serve
def test_two_streams_share_steps_and_keep_their_own_tokens(offline_llm: LLM, server: Any,
                                                           client: Any) -> None:
    loop = server.app.state.engine_loop
    conversations = [[{"role": "user", "content": "hi"}],
                     [{"role": "user", "content": "tell me a story"}]]
    results: dict[int, list[Any]] = {}
    loop.stepping.clear()  # line both requests up before the first step
    loop.max_batch = 0
    try:
        def run(i: int) -> None:
            results[i] = collect(client.chat.completions.create(
                model=MODEL, messages=conversations[i], max_tokens=20, temperature=0,
                stream=True))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for _ in range(2000):
            if loop.num_active == 2:
                break
            threading.Event().wait(0.005)
        assert loop.num_active == 2, "both requests should be waiting in the engine loop"
    finally:
        loop.stepping.set()
    for t in threads:
        t.join(timeout=60)
    assert loop.max_batch == 2, "the two requests should have been stepped together"
    for i, messages in enumerate(conversations):
        text = "".join(c.choices[0].delta.content or "" for c in results[i])
        assert text == offline(offline_llm, messages, 20), f"stream {i} got other tokens"


@needs_serve
def test_a_client_that_leaves_mid_stream_aborts_its_request(llm: LLM, client: Any,
                                                            server: Any) -> None:
    loop = server.app.state.engine_loop
    loop.stepping.clear()  # the request cannot finish: only an abort can end it
    try:
        stream = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=200,
                                                temperature=0, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        assert llm.engine.has_unfinished_requests()
        stream.close()
        for _ in range(2000):
            if loop.num_active == 0:
                break
            threading.Event().wait(0.005)
        assert loop.num_active == 0, "the server did not notice the client leave"
        assert not llm.engine.has_unfinished_requests(), "the abandoned request is still queued"
    finally:
        loop.stepping.set()
    pool = llm.engine.scheduler.kv.block_pool
    assert pool.get_num_free_blocks() == llm.engine.num_blocks - 1, "KV blocks were not freed"


@needs_serve
@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "gpt-4", "messages": HI}, 404, "model"),
    ({"model": MODEL, "messages": HI, "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": MODEL, "messages": HI, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
])
def test_errors_are_openai_error_bodies(client: Any, body: dict, status: int,
                                        param: str) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**body)
    exc = info.value
    assert exc.status_code == status
    assert exc.body["param"] == param and exc.body["code"] == status
    assert exc.body["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]
    assert exc.body["message"]


@needs_serve
def test_the_server_is_gone_after_the_block() -> None:
    import httpx

    # Its own engine: one engine is only ever driven by one engine loop.
    with serve_in_thread(LLM(build_tiny_llama(), max_model_len=64), MODEL) as running:
        assert httpx.get(running.base_url + "/health").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.base_url + "/health", timeout=2)
    assert not running.app.state.engine_loop._thread.is_alive()


@needs_serve
@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_smollm2_streams_the_france_answer() -> None:
    import openai

    smol = LLM(smollm2_path(), max_model_len=256)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with serve_in_thread(smol, "smollm2") as running:
        client = openai.OpenAI(base_url=running.base_url + "/v1", api_key="-", max_retries=0)
        chunks = collect(client.chat.completions.create(
            model="smollm2", messages=question, max_tokens=30, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "Paris" in text, text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert text == smol.chat(question, SamplingParams(max_tokens=30, temperature=0.0))[0].text
