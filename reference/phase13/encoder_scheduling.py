"""Reference for kata 13-03: the encoder budget meets chunked prefill."""

from __future__ import annotations

import numbers
from collections.abc import Collection, Sequence
from typing import Any


def _count(name: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def plan_chunk(
    num_computed_tokens: int,
    num_new_tokens: int,
    placeholders: Sequence[Any],
    encoder_budget: int,
    cached: Collection[str],
) -> tuple[int, list[str]]:
    """Shrink a prefill chunk so that every image position it computes has its encoding."""
    num_computed_tokens = _count("num_computed_tokens", num_computed_tokens)
    num_new_tokens = _count("num_new_tokens", num_new_tokens)
    encoder_budget = _count("encoder_budget", encoder_budget)
    previous_end = 0
    for item in placeholders:
        if item.offset < previous_end:
            raise ValueError(f"placeholders must be sorted by offset and disjoint, got "
                             f"{item.mm_hash!r} at {item.offset} before position {previous_end}")
        previous_end = item.offset + item.length
    to_encode: list[str] = []
    end = num_computed_tokens + num_new_tokens
    for item in placeholders:
        start = item.offset
        if start >= end:
            break  # this and every later image lie past the chunk
        if start + item.length <= num_computed_tokens:
            continue  # already computed: its embeddings are not needed again
        if item.mm_hash in cached or item.mm_hash in to_encode:
            continue  # its encoding exists (or is being made this step)
        if item.length > encoder_budget:
            # Stop at the doorstep: compute only the tokens before the image.
            num_new_tokens = max(start - num_computed_tokens, 0)
            break
        encoder_budget -= item.length  # the whole image, however little of it the chunk uses
        to_encode.append(item.mm_hash)
    return num_new_tokens, to_encode
