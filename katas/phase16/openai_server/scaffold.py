"""Provided for kata 16-02: the result type, and recorded streams and error bodies to test on.

A chunk is the JSON object of one SSE ``data:`` line of ``/v1/chat/completions`` with
``stream=true`` (what ``chunk.model_dump()`` gives for the ``openai`` client's chunk objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Chunk = dict[str, Any]


@dataclass
class StreamResult:
    """What one streamed chat completion amounted to, as a client sees it."""

    role: str | None = None  # from the first chunk's delta ("assistant")
    deltas: list[str | None] = field(default_factory=list)  # every delta.content, in order
    content: str = ""  # the text for the user, tool-call blocks cut out
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI-shaped calls
    finish_reason: str | None = None  # from the last chunk


def chunk(delta: dict[str, Any], finish_reason: str | None = None, *,
          completion_id: str = "chatcmpl-0", model: str = "Qwen/Qwen2.5-0.5B-Instruct") -> Chunk:
    """One chat-completion chunk with a single choice (index 0)."""
    return {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}


#: The course's capture (Qwen2.5-0.5B-Instruct, vLLM 0.22.1): "Say hi in French, one word."
#: printed deltas ``None ' Bon' 'jour' ' !' None``: a role chunk, three deltas, a finish chunk.
BONJOUR_STREAM: list[Chunk] = [
    chunk({"role": "assistant"}),
    chunk({"content": " Bon"}),
    chunk({"content": "jour"}),
    chunk({"content": " !"}),
    chunk({}, "stop"),
]

#: A tool call as vLLM streams it when it parses calls itself (``tool_choice="required"``, or
#: ``--enable-auto-tool-choice``): the first fragment names the call and carries its id, the
#: later ones carry pieces of the arguments string; a usage chunk (no choices) comes last when
#: the request asked for ``stream_options={"include_usage": true}``.
WEATHER_TOOL_STREAM: list[Chunk] = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
    chunk({}, "tool_calls"),
    {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": 0,
     "model": "Qwen/Qwen2.5-0.5B-Instruct", "choices": [],
     "usage": {"prompt_tokens": 180, "completion_tokens": 12, "total_tokens": 192}},
]

#: The course's 400 body for an oversized ``max_tokens`` (vLLM 0.22.1).
MAX_TOKENS_400_BODY: dict[str, Any] = {"error": {
    "message": "max_tokens must be at most 32768 (max_model_len minus the prompt's tokens)",
    "type": "BadRequestError", "param": None, "code": 400}}


class RecordedHTTPError(Exception):
    """Stands in for ``openai.APIStatusError``: ``status_code``, ``body`` and a ``message``
    that, as the client's own, is a summary ("Error code: 400 - {...}"), not the server's text.
    ``body`` is what the client parsed: openai 1.x+ keeps the inner ``{"message", "type", ...}``
    object; older clients and raw HTTP code keep the whole ``{"error": {...}}``."""

    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self.body = body
        self.message = f"Error code: {status_code} - {body}"
        super().__init__(self.message)
