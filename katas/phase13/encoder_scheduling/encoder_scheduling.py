"""Kata 13-03: encoder scheduling — chunked prefill meets the vision tower.

Fill in ``plan_chunk``. Placeholders are mini_vllm's ``MultiModalFeature`` objects (or anything
with the same three attributes): ``mm_hash`` (the image's content hash), ``offset`` and
``length`` (its run of placeholder tokens in the prompt).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def plan_chunk(
    num_computed_tokens: int,
    num_new_tokens: int,
    placeholders: Sequence[Any],
    encoder_budget: int,
    cached: Collection[str],
) -> tuple[int, list[str]]:
    """One request's prefill chunk for this step, and the images to encode for it.

    The scheduler wants to compute positions ``[num_computed_tokens, num_computed_tokens +
    num_new_tokens)`` of a prompt whose images occupy ``placeholders`` (sorted by offset,
    disjoint). An image position can only be computed once that image's encoder output exists:
    it is in ``cached`` (by ``mm_hash``) or is encoded this step. An image is encoded all at
    once (never part of it), and encoding it costs its whole ``length`` out of
    ``encoder_budget`` (this step's encoder allowance, in image tokens), however few of its
    positions this chunk covers. An image is considered in prompt order, only if the chunk
    reaches at least one of its positions that is not yet computed.

    Returns ``(n, to_encode)``: ``n <= num_new_tokens`` tokens to compute, and the ``mm_hash``
    of each image to encode this step, in prompt order, each at most once. ``n`` is the
    requested chunk unless an image in it cannot get its encoding this step; then the chunk
    stops just before that image (which can mean ``n == 0``) and nothing at or after it is
    encoded. A chunk that touches no image comes back unchanged.

    Worked numbers: text 0-9, image A (length 100) at 10-109, text 110-119, image B (length 50)
    at 120-169, text 170-179. From 0, a chunk of 50 with budget 100 -> ``(50, [A])``; with
    budget 99 -> ``(10, [])``; with A cached and budget 0 -> ``(50, [])``.

    ``ValueError`` for a negative (or non-int) count or budget, or placeholders that are not
    sorted and disjoint.
    """
    raise NotImplementedError("plan_chunk: fit the chunk to the encoder budget")
