"""Provided for kata 16-01: the Hermes tag convention and the event shape."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

#: Hermes-style tool calls: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
OPEN = "<tool_call>"
CLOSE = "</tool_call>"

#: ``("content", text)`` — text for the user, never empty — or ``("tool_call", call_dict)``.
Event: TypeAlias = tuple[Literal["content", "tool_call"], Any]


def merge_content(events: list[Event]) -> list[Event]:
    """Join neighbouring content events: how a client renders a stream of deltas. Two streams
    are the same to the user exactly when their merged events are equal."""
    merged: list[Event] = []
    for kind, value in events:
        if kind == "content" and merged and merged[-1][0] == "content":
            merged[-1] = ("content", merged[-1][1] + value)
        else:
            merged.append((kind, value))
    return merged
