"""Reference for kata 16-01: Hermes tool calls out of text, in one piece and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from katas.phase16.tool_call_parser.scaffold import CLOSE, OPEN, Event
from reference.phase16.streaming_detokenizer import StreamingDetokenizer


def _parse_call(body: str) -> dict[str, Any]:
    """One block's JSON: an object with a string ``name``, else ``ValueError``."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed tool call JSON {body!r}: {exc}") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError(f"a tool call must be a JSON object with a string 'name', got {body!r}")
    return call


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Batch: the text with every OPEN...CLOSE block cut out, and the blocks' calls in order."""
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        end = text.find(CLOSE, start + len(OPEN))  # the FIRST close: blocks never span two
        if end < 0:
            raise ValueError(f"unterminated tool call: {text[start:]!r} has no {CLOSE}")
        calls.append(_parse_call(text[start + len(OPEN):end]))
        pos = end + len(CLOSE)
    return "".join(content), calls


def _trailing_tag_prefix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class StreamingToolParser:
    """Chunks of text in; content as early as possible, each call once its block closes."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_block = False

    def feed(self, chunk: str) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while True:
            if self._in_block:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return events  # partial JSON (or a partial CLOSE): nothing to show yet
                events.append(("tool_call", _parse_call(self._buffer[:end])))
                self._buffer = self._buffer[end + len(CLOSE):]
                self._in_block = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                if start:
                    events.append(("content", self._buffer[:start]))
                self._buffer = self._buffer[start + len(OPEN):]
                self._in_block = True
                continue
            held = _trailing_tag_prefix(self._buffer, OPEN)
            ready = len(self._buffer) - held
            if ready:
                events.append(("content", self._buffer[:ready]))
            self._buffer = self._buffer[ready:]
            return events

    def finish(self) -> list[Event]:
        if self._in_block:
            raise ValueError(f"unterminated tool call at end of stream: {OPEN}{self._buffer!r}")
        events: list[Event] = [("content", self._buffer)] if self._buffer else []
        self._buffer = ""
        return events


def stream_tool_calls(token_ids: Iterable[int],
                      token_bytes: Sequence[bytes] | None = None) -> list[Event]:
    """Token ids -> 16-03's detokenizer -> the streaming parser, one token at a time."""
    detokenizer = StreamingDetokenizer(token_bytes)
    parser = StreamingToolParser()
    events: list[Event] = []
    for token_id in token_ids:
        text = detokenizer.feed(token_id)
        if text:
            events += parser.feed(text)
    tail = detokenizer.flush()
    if tail:
        events += parser.feed(tail)
    return events + parser.finish()
