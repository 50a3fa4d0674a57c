"""An OpenAI-compatible chat server over mini_vllm: ``/v1/chat/completions`` (JSON or SSE),
``/v1/models``, ``/health``.

Upstream twins (vLLM v0.22.1): ``vllm/entrypoints/openai/api_server.py`` (the FastAPI app and its
routes), ``serving_chat.py: OpenAIServingChat.create_chat_completion`` (validate, render the chat
template, build ``SamplingParams``, generate) and ``chat_completion_stream_generator`` (role chunk,
content deltas, finish chunk, ``[DONE]``), ``protocol.py`` (``ChatCompletionRequest``,
``ErrorResponse``). Needs the ``serve`` extra: ``pip install -e '.[serve]'`` (FastAPI + uvicorn).

How requests share the engine. ``LLMEngine`` is synchronous and not thread-safe, so exactly one
thread owns it (:class:`EngineLoop`, the role of upstream's ``AsyncLLM`` over ``EngineCore``).
HTTP handlers never touch the engine: they post "add" and "abort" commands to the loop's inbox.
The loop adds what arrived, runs one ``engine.step()`` for *all* unfinished requests (continuous
batching: a request that arrives mid-generation joins the next step), and then hands every request
its new token ids through that request's own ``asyncio.Queue``. Each handler turns its ids into
text with a UTF-8-safe :class:`IncrementalDetokenizer` and writes SSE chunks. A client that goes
away mid-stream aborts its request, which frees its KV blocks (upstream: ``abort_request``).

Run it::

    python -m mini_vllm.entrypoints.openai_server <model_dir> --port 8000

or in-process (tests): ``with serve_in_thread(LLM(model_dir)) as server: server.base_url``.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime,
# and `Request` is imported inside build_app (the serve extra is optional).

import argparse
import asyncio
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mini_vllm.engine import _FINISH_REASONS
from mini_vllm.request import SamplingParams

SERVE_HINT = "pip install -e '.[serve]'"

#: The chat template used when the tokenizer has none (mini_vllm's byte tokenizer): ChatML, the
#: format SmolLM2's own template writes, so both models see prompts of the same shape.
MINIMAL_CHAT_TEMPLATE = "<|im_start|>{role}\n{content}<|im_end|>\n"
GENERATION_PROMPT = "<|im_start|>assistant\n"
ROLES = ("system", "user", "assistant", "tool")


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt for ``messages`` with the assistant turn opened: the tokenizer's own chat
    template when it has one (SmolLM2's, from its tokenizer files), else ChatML."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
    turns = "".join(MINIMAL_CHAT_TEMPLATE.format(role=m["role"], content=m["content"])
                    for m in messages)
    return turns + GENERATION_PROMPT


class IncrementalDetokenizer:
    """Token ids in, text deltas out, never half a character.

    Each call decodes the request's whole output so far and emits what is new, except a trailing
    run of U+FFFD: that is (or may be) a multi-byte character whose last bytes have not arrived
    yet, so it waits for the next token. ``finish`` emits whatever is left (an honest U+FFFD if
    the output really ends mid-character). Re-decoding is O(n) per token; upstream decodes a
    short window instead (``vllm/v1/engine/detokenizer.py``), which matters only for long outputs.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.sent = ""

    def feed(self, token_ids: Sequence[int]) -> str:
        self.token_ids.extend(token_ids)
        stable = self.tokenizer.decode(self.token_ids).rstrip("\ufffd")
        if not stable.startswith(self.sent):
            return ""
        delta, self.sent = stable[len(self.sent):], stable
        return delta

    def finish(self) -> str:
        text = self.tokenizer.decode(self.token_ids)
        delta = text[len(self.sent):] if text.startswith(self.sent) else ""
        self.sent = text
        return delta


# ------------------------------------------------------------------------------ the engine loop


@dataclass
class _Tracked:
    request: Any
    sent: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue


class EngineLoop:
    """One thread owns the engine: it adds and aborts requests, steps, and streams new ids.

    ``submit`` is called from the event loop; it returns the request's queue, which receives
    ``(new_token_ids, finish_reason_or_None)`` after every step that changed the request. A
    request the engine refuses (``ValueError``: prompt too long, max_tokens too large) raises
    from ``submit`` before anything is queued.
    """

    def __init__(self, engine: Any, idle_wait: float = 0.05) -> None:
        self.engine = engine
        self.idle_wait = idle_wait
        self._inbox: queue.Queue = queue.Queue()
        self._tracked: dict[str, _Tracked] = {}
        self._stop = threading.Event()
        self.num_steps = 0
        self.max_batch = 0  # the most requests one step has served (shows the batching)
        #: Cleared, the loop still adds and aborts requests but does not step (tests use it to
        #: line several requests up for one batch).
        self.stepping = threading.Event()
        self.stepping.set()
        self._thread = threading.Thread(target=self._run, name="mini-vllm-engine", daemon=True)
        self._thread.start()

    async def submit(self, prompt: str, params: SamplingParams) -> tuple[str, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        added: Future = Future()
        out: asyncio.Queue = asyncio.Queue()
        self._inbox.put(("add", (prompt, params, loop, out, added)))
        request_id = await asyncio.wrap_future(added)  # re-raises the engine's ValueError
        return request_id, out

    @property
    def num_active(self) -> int:
        """Requests added and not yet finished or aborted (read from any thread)."""
        return len(self._tracked)

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("stop", None))
        self._thread.join(timeout=10)

    def _handle(self, command: str, payload: Any) -> None:
        if command == "add":
            prompt, params, loop, out, added = payload
            try:
                request_id = self.engine.add_request(prompt, params)
            except ValueError as exc:
                added.set_exception(exc)
                return
            request = self.engine.get_request(request_id)
            self._tracked[request_id] = _Tracked(request, 0, loop, out)
            added.set_result(request_id)
        elif command == "abort" and payload in self._tracked:  # still unfinished
            del self._tracked[payload]
            self.engine.abort_request(payload)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self.engine.has_unfinished_requests() and self.stepping.is_set()
            try:  # new commands first; block for them only when there is nothing to step
                command, payload = (self._inbox.get_nowait() if busy
                                    else self._inbox.get(timeout=self.idle_wait))
            except queue.Empty:
                command = None
            if command is not None:
                self._handle(command, payload)
            elif busy:
                self._step()

    def _step(self) -> None:
        self.max_batch = max(self.max_batch, len(self._tracked))
        try:
            self.engine.step()
        except Exception as exc:  # fail every waiting request loudly rather than hang them
            for t in self._tracked.values():
                t.loop.call_soon_threadsafe(t.out.put_nowait, exc)
            self._tracked.clear()
            return
        self.num_steps += 1
        for request_id, t in list(self._tracked.items()):
            new = list(t.request.output_token_ids[t.sent:])
            finished = t.request.is_finished
            if not new and not finished:
                continue
            t.sent += len(new)
            reason = _FINISH_REASONS.get(t.request.status) if finished else None
            t.loop.call_soon_threadsafe(t.out.put_nowait, (new, reason))
            if finished:
                del self._tracked[request_id]


# --------------------------------------------------------------------------------------- the app


class OpenAIError(Exception):
    """An error the API reports as ``{"error": {"message", "type", "param", "code"}}``."""

    TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "Error"),
                          "param": self.param, "code": self.status}}


def _sampling_params(body: Mapping[str, Any], prompt_len: int, max_model_len: int | None
                     ) -> SamplingParams:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is None:  # upstream: whatever room the context has left
        max_tokens = (max_model_len - prompt_len) if max_model_len else 16
    if body.get("n", 1) != 1:
        raise OpenAIError(400, "only n=1 is supported", "n")
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.get("temperature") is None else body["temperature"],
            top_p=1.0 if body.get("top_p") is None else body["top_p"],
            seed=body.get("seed"),
        )
    except ValueError as exc:
        raise OpenAIError(400, str(exc), "max_tokens" if "max_tokens" in str(exc) else None
                          ) from None


def _check_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages must be a non-empty list", "messages")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise OpenAIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}",
                              "messages")
        content = m.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise OpenAIError(400, f"messages[{i}].content must be a string", "messages")
        checked.append({"role": m["role"], "content": content})
    return checked


def build_app(llm: Any, model_name: str | None = None) -> Any:
    """The FastAPI app serving ``llm`` (a ``mini_vllm.LLM``) under ``model_name`` (default: its
    model directory, as ``vllm serve <dir>`` names the model). The engine loop starts with the
    app and stops when the app shuts down."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    name = model_name or str(llm.model_dir)
    tokenizer = llm.engine.tokenizer
    engine_loop = EngineLoop(llm.engine)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        engine_loop.stop()

    app = FastAPI(title="mini_vllm OpenAI-compatible server", lifespan=lifespan)
    app.state.engine_loop = engine_loop

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                             "owned_by": "mini_vllm",
                                             "max_model_len": llm.max_model_len}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise OpenAIError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise OpenAIError(400, "the request body must be a JSON object")
        if body.get("model") != name:
            raise OpenAIError(404, f"The model `{body.get('model')}` does not exist.", "model")
        prompt = render_chat(tokenizer, _check_messages(body.get("messages")))
        prompt_len = len(tokenizer.encode(prompt))
        params = _sampling_params(body, prompt_len, llm.max_model_len)
        try:
            request_id, out = await app.state.engine_loop.submit(prompt, params)
        except ValueError as exc:
            raise OpenAIError(400, str(exc), "max_tokens") from None
        chat_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _sse(app.state.engine_loop, request_id, out, tokenizer, chat_id, created, name),
                media_type="text/event-stream")
        return await _complete(app.state.engine_loop, request_id, out, tokenizer, chat_id,
                               created, name, prompt_len)

    return app


async def _tokens(engine_loop: EngineLoop, request_id: str, out: asyncio.Queue
                  ) -> AsyncIterator[tuple[list[int], str | None]]:
    """The request's new ids step by step; aborts the request if the consumer goes away."""
    finished = False
    try:
        while not finished:
            item = await out.get()
            if isinstance(item, Exception):
                raise item
            new, reason = item
            finished = reason is not None
            yield new, reason
    finally:
        if not finished:  # cancelled: the client disconnected
            engine_loop.abort(request_id)


async def _complete(engine_loop: EngineLoop, request_id: str, out: asyncio.Queue, tokenizer: Any,
                    chat_id: str, created: int, name: str, prompt_len: int) -> dict[str, Any]:
    ids: list[int] = []
    reason = None
    async for new, finish_reason in _tokens(engine_loop, request_id, out):
        ids.extend(new)
        reason = finish_reason
    return {
        "id": chat_id, "object": "chat.completion", "created": created, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": tokenizer.decode(ids)},
                     "logprobs": None, "finish_reason": reason}],
        "usage": {"prompt_tokens": prompt_len, "completion_tokens": len(ids),
                  "total_tokens": prompt_len + len(ids)},
    }


async def _sse(engine_loop: EngineLoop, request_id: str, out: asyncio.Queue, tokenizer: Any,
               chat_id: str, created: int, name: str) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        data = {"id": chat_id, "object": "chat.completion.chunk", "created": created,
                "model": name, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish_reason}]}
        return f"data: {json.dumps(data)}\n\n"

    detok = IncrementalDetokenizer(tokenizer)
    yield chunk({"role": "assistant", "content": ""})
    async for new, reason in _tokens(engine_loop, request_id, out):
        text = detok.feed(new) + (detok.finish() if reason is not None else "")
        if text:
            yield chunk({"content": text})
        if reason is not None:
            yield chunk({}, reason)
    yield "data: [DONE]\n\n"


# ------------------------------------------------------------------------------ running it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str  # "http://127.0.0.1:PORT" (the OpenAI client wants base_url + "/v1")
    port: int
    model: str
    app: Any
    start_seconds: float


@contextmanager
def serve_in_thread(llm: Any, model_name: str | None = None, startup_timeout: float = 30.0
                    ) -> Iterator[RunningServer]:
    """Serve ``llm`` on 127.0.0.1 at a free port from a background thread; always stopped (the
    uvicorn server told to exit, the engine loop joined), whatever the body raises."""
    import uvicorn

    started = time.perf_counter()
    app = build_app(llm, model_name)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="mini-vllm-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the mini_vllm server on port {port} exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mini_vllm server on port {port} did not start in "
                                   f"{startup_timeout} s")
            time.sleep(0.01)
        yield RunningServer(f"http://127.0.0.1:{port}", port, model_name or str(llm.model_dir),
                            app, time.perf_counter() - started)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine_loop.stop()  # idempotent; covers a start-up that never reached lifespan


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from mini_vllm.llm import LLM

    parser = argparse.ArgumentParser(prog="python -m mini_vllm.entrypoints.openai_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model directory (config.json + safetensors)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--served-model-name", default=None)
    args = parser.parse_args(argv)
    llm = LLM(args.model, max_model_len=args.max_model_len)
    uvicorn.run(build_app(llm, args.served_model_name), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
