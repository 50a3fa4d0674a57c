"""Kata 16-02 — the OpenAI server, end to end: both sides of a streamed chat completion.

Fill in the five functions below; grade them with
``pytest --impl=mine katas/phase16/openai_server``.

The server side (``stream_chunks``) is the translation layer of vLLM's
``chat_completion_stream_generator``: token ids -> your 16-03 detokenizer -> your 16-01 tool
parser -> OpenAI chunks. The client side (``collect_stream``, ``chat_stream``, ``error_of``) reads
what a real server sends, through the official ``openai`` client. Import your earlier katas (as
below) or copy them in; ``scaffold`` gives ``StreamResult``, ``chunk`` and recorded streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from katas.phase16.openai_server.scaffold import Chunk, StreamResult, chunk  # noqa: F401
from katas.phase16.streaming_detokenizer.streaming_detokenizer import (  # noqa: F401
    StreamingDetokenizer,
)
from katas.phase16.tool_call_parser.tool_call_parser import StreamingToolParser  # noqa: F401


def to_openai_tool_call(call: dict[str, Any], call_id: str) -> dict[str, Any]:
    """A call parsed out of the text (``{"name": str, "arguments": dict}``, the 16-01 parser's
    ``("tool_call", dict)`` payload) as the OpenAI API spells it::

        {"id": call_id, "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}

    ``function.arguments`` is a **string** holding a JSON object (the API's choice, not a nested
    object); ``json.loads`` of it gives back ``call["arguments"]``. A call with no
    ``"arguments"`` has the empty object. ``ValueError`` when ``name`` is missing, empty or not a
    string, or when ``arguments`` is present but not a dict.
    """
    raise NotImplementedError("to_openai_tool_call: a parsed call in the OpenAI API's shape")


def stream_chunks(token_ids: Sequence[int], finish_reason: str, *,
                  completion_id: str = "chatcmpl-0", model: str = "mini") -> list[Chunk]:
    """The server side: the chunks of one streamed completion whose output is ``token_ids``
    (mini_vllm byte-tokenizer ids; EOS 256 is no text) and whose engine finish reason is
    ``finish_reason`` ("stop" or "length").

    Every chunk is ``scaffold.chunk(delta, reason, completion_id=..., model=...)``, in order:

    * first the role chunk: delta ``{"role": "assistant", "content": ""}``;
    * then, as the tokens arrive, one ``{"content": text}`` chunk per piece of user text that
      becomes final — never empty, never half a UTF-8 character, never any part of a
      ``<tool_call>`` block (plain text therefore streams one chunk per character);
    * one ``{"tool_calls": [{"index": i, **to_openai_tool_call(call, f"call_{i}")}]}`` chunk for
      the i-th call (i from 0), when its block closes;
    * last the finish chunk: delta ``{}``, reason ``"tool_calls"`` if any call was sent, else
      ``finish_reason``.

    ``ValueError`` (from the parser) when the output ends inside a ``<tool_call>`` block.
    """
    raise NotImplementedError("stream_chunks: token ids to the chunks of an SSE stream")


def collect_stream(chunks: Iterable[Chunk]) -> StreamResult:
    """The client side: read one stream's chunks (dicts, as ``chunk.model_dump()`` gives them)
    into a ``StreamResult``.

    * A chunk with no choices (the usage chunk) is skipped; otherwise ``choices[0]`` counts.
      A field that is absent and one that is ``None`` mean the same.
    * ``role``: from the first chunk, which must carry one; ``deltas``: every chunk's
      ``delta.content`` (``None`` where there is none), in order; ``finish_reason``: from the
      chunk that sets it, which must be the last.
    * ``content``: the deltas' text through a ``StreamingToolParser``: the user's text with
      any ``<tool_call>`` blocks cut out (a server that does not parse calls sends them as text).
    * ``tool_calls``: first the calls the server sent in ``delta.tool_calls`` — fragments with
      the same ``index`` are one call: id, type and name from the fragment that has them,
      ``function.arguments`` the concatenation of every fragment's piece — in index order; then
      the calls parsed out of the text, as ``to_openai_tool_call(call, f"call_{n}")`` with ``n``
      counting every call so far.

    ``ValueError`` when the first chunk has no role, when a chunk follows the finish chunk, when
    the stream ends without a finish reason, or (from the parser) inside an unclosed block.
    """
    raise NotImplementedError("collect_stream: read a stream's chunks as a client")


def chat_stream(client: Any, model: str, messages: list[dict[str, Any]],
                **create_kwargs: Any) -> StreamResult:
    """One streamed chat completion through an ``openai.OpenAI`` client:
    ``client.chat.completions.create(model=..., messages=..., stream=True, **create_kwargs)``,
    collected with ``collect_stream`` (each chunk object as ``chunk.model_dump()``). The stream
    is closed when this returns or raises, so an abandoned request is aborted on the server.
    """
    raise NotImplementedError("chat_stream: stream a chat completion and collect it")


def error_of(exc: BaseException) -> tuple[int, str, str]:
    """``(status, type, message)`` of an error response the client raised, e.g.
    ``(400, "BadRequestError", "max_tokens must be at most 32768 ...")``: the HTTP status
    (``exc.status_code``) and the server's own ``type`` and ``message`` from the OpenAI error
    body ``exc.body`` — which is ``{"message", "type", ...}`` or the whole
    ``{"error": {"message", "type", ...}}``, depending on the client.

    ``ValueError`` when ``exc`` has no integer ``status_code`` (no response came back: a
    connection error), or its body is not an OpenAI error body.
    """
    raise NotImplementedError("error_of: status, type and message of an API error")
