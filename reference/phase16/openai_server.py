"""Reference for kata 16-02: both sides of the OpenAI chat stream, and its errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from katas.phase16.openai_server.scaffold import Chunk, StreamResult, chunk
from reference.phase16.streaming_detokenizer import StreamingDetokenizer
from reference.phase16.tool_call_parser import StreamingToolParser


def to_openai_tool_call(call: dict[str, Any], call_id: str) -> dict[str, Any]:
    """A parsed Hermes call ``{"name", "arguments": {...}}`` as the OpenAI API spells it."""
    name = call.get("name") if isinstance(call, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool call needs a non-empty string 'name', got {call!r}")
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {name!r}: 'arguments' must be an object, got {arguments!r}")
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def stream_chunks(token_ids: Sequence[int], finish_reason: str, *,
                  completion_id: str = "chatcmpl-0", model: str = "mini") -> list[Chunk]:
    """Byte-tokenizer ids -> 16-03 detokenizer -> 16-01 parser -> the chunks of one stream."""
    def emit(delta: dict[str, Any], reason: str | None = None) -> None:
        chunks.append(chunk(delta, reason, completion_id=completion_id, model=model))

    def translate(events: list[tuple[str, Any]]) -> None:
        for kind, value in events:
            if kind == "content":
                if value:
                    emit({"content": value})
            else:
                index = len(calls)
                calls.append(value)
                emit({"tool_calls": [{"index": index,
                                      **to_openai_tool_call(value, f"call_{index}")}]})

    chunks: list[Chunk] = []
    calls: list[dict[str, Any]] = []
    detokenizer, parser = StreamingDetokenizer(), StreamingToolParser()
    emit({"role": "assistant", "content": ""})
    for token_id in token_ids:
        text = detokenizer.feed(token_id)
        if text:
            translate(parser.feed(text))
    tail = detokenizer.flush()
    if tail:
        translate(parser.feed(tail))
    translate(parser.finish())
    emit({}, "tool_calls" if calls else finish_reason)
    return chunks


def collect_stream(chunks: Iterable[Chunk]) -> StreamResult:
    """Read a stream as a client: check its order, merge tool-call fragments, parse tags."""
    result = StreamResult()
    parser = StreamingToolParser()
    by_index: dict[int, dict[str, Any]] = {}  # server-parsed calls, merged by their index
    parsed: list[dict[str, Any]] = []  # calls the client cut out of the text
    text: list[str] = []
    seen_choice = False

    def take(events: list[tuple[str, Any]]) -> None:
        for kind, value in events:
            if kind == "content":
                text.append(value)
            else:
                parsed.append(value)

    for item in chunks:
        choices = item.get("choices") or []
        if not choices:  # the usage chunk
            continue
        choice = choices[0]
        delta = choice.get("delta") or {}
        if result.finish_reason is not None:
            raise ValueError(f"a chunk came after the finish chunk: {item!r}")
        if not seen_choice:
            seen_choice = True
            if not delta.get("role"):
                raise ValueError(f"the first chunk must carry the role, got {item!r}")
            result.role = delta["role"]
        content = delta.get("content")
        result.deltas.append(content)
        if content:
            take(parser.feed(content))
        for fragment in delta.get("tool_calls") or []:
            merged = by_index.setdefault(fragment["index"], {
                "id": None, "type": "function", "function": {"name": None, "arguments": ""}})
            if fragment.get("id"):
                merged["id"] = fragment["id"]
            function = fragment.get("function") or {}
            if function.get("name"):
                merged["function"]["name"] = function["name"]
            merged["function"]["arguments"] += function.get("arguments") or ""
        if choice.get("finish_reason") is not None:
            result.finish_reason = choice["finish_reason"]
    if result.finish_reason is None:
        raise ValueError("the stream ended without a finish chunk (finish_reason never set)")
    take(parser.finish())
    result.content = "".join(text)
    result.tool_calls = [by_index[i] for i in sorted(by_index)]
    result.tool_calls += [to_openai_tool_call(call, f"call_{len(result.tool_calls) + k}")
                          for k, call in enumerate(parsed)]
    return result


def chat_stream(client: Any, model: str, messages: list[dict[str, Any]],
                **create_kwargs: Any) -> StreamResult:
    """One streamed chat completion through the ``openai`` client, collected."""
    stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                            **create_kwargs)
    try:
        return collect_stream(c.model_dump() if hasattr(c, "model_dump") else c for c in stream)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def error_of(exc: BaseException) -> tuple[int, str, str]:
    """``(status, type, message)`` of an HTTP error the client raised, from the server's body."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        raise ValueError(f"{type(exc).__name__} is not an HTTP error response (no status_code)")
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict) or "message" not in body:
        raise ValueError(f"the {status} response has no OpenAI error body: {body!r}")
    return status, str(body.get("type")), str(body["message"])
