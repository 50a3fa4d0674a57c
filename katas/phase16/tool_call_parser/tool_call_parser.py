"""Kata 16-01 — tool-call parsing: structure out of a token stream.

Fill in ``parse_tool_calls``, ``StreamingToolParser`` and ``stream_tool_calls``; grade them
with ``pytest --impl=mine katas/phase16/tool_call_parser``.

Convention (Hermes, ``--tool-call-parser hermes``): a call is ``<tool_call>`` + a JSON object
with a string ``"name"`` (usually also ``"arguments"``) + ``</tool_call>``; everything outside
blocks is content for the user. ``scaffold`` gives ``OPEN``, ``CLOSE``, the ``Event`` shape —
``("content", text)`` or ``("tool_call", call_dict)`` — and ``merge_content``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from katas.phase16.tool_call_parser.scaffold import CLOSE, OPEN, Event  # noqa: F401


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Batch parse of a complete text: ``(content, calls)``.

    ``calls`` are the parsed JSON objects of every ``OPEN ... CLOSE`` block, in text order; a
    block ends at the first ``CLOSE`` after its ``OPEN``. ``content`` is the text with the
    blocks (tags included) cut out and every other character kept exactly, whitespace too:
    ``'Hi. <tool_call>{...}</tool_call> Bye.'`` -> ``'Hi.  Bye.'``. A ``CLOSE`` outside a block
    is content.

    ``ValueError`` when a block's body is not valid JSON, is not an object, or has no string
    ``"name"``, and when an ``OPEN`` has no ``CLOSE`` (message contains "unterminated").
    """
    raise NotImplementedError("parse_tool_calls: cut the tool-call blocks out of a text")


class StreamingToolParser:
    """The same parse over text that arrives in chunks split anywhere (inside a tag, inside
    the JSON). One parser per stream; ``feed`` each chunk, then ``finish`` once.

    Chunking invariance: for any split of a text into chunks, the content events joined are
    the batch ``content`` and the tool-call events are the batch ``calls``, in the same
    interleaving as in the text.
    """

    def __init__(self) -> None:
        raise NotImplementedError("StreamingToolParser: a buffer and whether you are in a block")

    def feed(self, chunk: str) -> list[Event]:
        """Events that this chunk made certain, in order.

        Content is emitted as soon as it cannot become part of a tag: only the longest end of
        the text so far that is a proper prefix of ``OPEN`` (``"<"``, ``"<tool"``, ...
        ``"<tool_call"``) is held back, and released as soon as the next chunk rules the tag
        out (``"<to"`` then ``"day>"`` -> ``("content", "<today>")``). Inside a block nothing is
        emitted until ``CLOSE`` arrives; then one ``("tool_call", dict)``. No empty content
        events. ``ValueError`` as in ``parse_tool_calls`` when a block closes on a bad body.
        """
        raise NotImplementedError("feed: emit what is certain, hold what might be a tag")

    def finish(self) -> list[Event]:
        """End of stream: the held-back text as a final content event (if any), and the parser
        back to its initial state. ``ValueError`` (message contains "unterminated") when the
        stream ended inside a block — a truncated call is an error, not a call."""
        raise NotImplementedError("finish: release held text, refuse a truncated call")


def stream_tool_calls(token_ids: Iterable[int],
                      token_bytes: Sequence[bytes] | None = None) -> list[Event]:
    """The server's text pipeline end to end: every token id goes through a 16-03
    ``StreamingDetokenizer(token_bytes)`` and whatever text it emits into a
    ``StreamingToolParser``; at the end the detokenizer is flushed (its remnant fed too) and
    the parser finished. Returns all events in order. ``token_bytes=None`` means
    ``ByteTokenizer`` ids (EOS 256 spells nothing).

    Use your kata 16-03: ``from katas.phase16.streaming_detokenizer.streaming_detokenizer
    import StreamingDetokenizer`` (or copy it here).
    """
    raise NotImplementedError("stream_tool_calls: detokenizer, then parser, token by token")
