"""Placeholder expansion: one image marker in the prompt -> that image's run of placeholders.

Upstream twin: ``vllm/multimodal/processing.py`` applying a model's ``PromptReplacement``
(``vllm/model_executor/models/llava.py: BaseLlavaMultiModalProcessor._get_prompt_updates``
replaces one ``image_token_id`` by ``[image_token_id] * num_image_tokens``). mini_vllm, like
LLaVA, repeats the marker id itself, so the expanded prompt stays in the vocabulary; kata 13-01's
``expand_prompt`` has this signature and can replace this one (``MultiModalConfig.expand_prompt``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

from mini_vllm.multimodal.inputs import (
    MultiModalFeature,
    PlaceholderRange,
    check_image,
    image_hash,
    num_image_tokens,
)


def expand_prompt(
    token_ids: Sequence[int],
    image_token_id: int,
    num_image_tokens: Sequence[int],
    placeholder_id: int = -100,
) -> tuple[list[int], list[PlaceholderRange]]:
    """The i-th ``image_token_id`` of the prompt replaced by ``num_image_tokens[i]`` copies of
    ``placeholder_id``; returns ``(ids, ranges)``, one ``PlaceholderRange`` per image in prompt
    order. ``ValueError`` when markers and counts differ in number or a count is below 1."""
    counts = list(num_image_tokens)
    for i, n in enumerate(counts):
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_image_tokens[{i}] must be an int >= 1, got {n!r}")
    markers = sum(1 for t in token_ids if t == image_token_id)
    if markers != len(counts):
        raise ValueError(f"the prompt has {markers} image markers (id {image_token_id}) but "
                         f"{len(counts)} images were given: each marker needs exactly one image")
    out: list[int] = []
    ranges: list[PlaceholderRange] = []
    images = iter(counts)
    for token in token_ids:
        if token != image_token_id:
            out.append(int(token))
            continue
        n = int(next(images))
        ranges.append(PlaceholderRange(offset=len(out), length=n))
        out.extend([placeholder_id] * n)
    return out, ranges


def process_prompt(
    token_ids: Sequence[int],
    images: Sequence[bytes],
    image_token_id: int,
    expand: Callable[..., tuple[list[int], list[PlaceholderRange]]] = expand_prompt,
) -> tuple[list[int], list[MultiModalFeature]]:
    """Expand a prompt's image markers and describe each image (hash, run, bytes).

    Checks the expansion's contract, whoever wrote it: one run per image, of exactly that image's
    token count, sorted and disjoint, every position holding the marker id. ``ValueError``
    otherwise (bad images, markers and images differing in number).
    """
    images = [check_image(data) for data in images]
    counts = [num_image_tokens(data) for data in images]
    ids, ranges = expand(list(token_ids), image_token_id, counts, image_token_id)
    ranges = list(ranges)
    if [r.length for r in ranges] != counts:
        raise ValueError(f"the expansion gave runs of {[r.length for r in ranges]} tokens for "
                         f"images of {counts} tokens")
    previous_end = 0
    for r in ranges:
        if r.offset < previous_end or r.end > len(ids) or any(
                t != image_token_id for t in ids[r.offset : r.end]):
            raise ValueError(f"the expansion's run {r} is out of order, out of the prompt or not "
                             f"all image tokens")
        previous_end = r.end
    features = [MultiModalFeature(image_hash(data), r, data)
                for data, r in zip(images, ranges, strict=True)]
    return [int(t) for t in ids], features
