"""Reference for kata 13-01: image-token expansion (pixels -> patches -> tokens -> blocks)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from mini_vllm.multimodal.inputs import PlaceholderRange

#: The placeholder id the expansion writes by default (upstream's reserved ``-100``).
IMAGE_PLACEHOLDER_ID = -100


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def image_token_count(width: int, height: int, patch_size: int = 14, merge_size: int = 2) -> int:
    """Tokens an image of ``width`` x ``height`` pixels costs after patching and merging."""
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    patch_size = _positive_int("patch_size", patch_size)
    merge_size = _positive_int("merge_size", merge_size)
    cols = math.ceil(math.ceil(width / patch_size) / merge_size)
    rows = math.ceil(math.ceil(height / patch_size) / merge_size)
    return cols * rows


def expand_prompt(
    token_ids: Sequence[int],
    image_token_id: int,
    num_image_tokens: Sequence[int],
    placeholder_id: int = IMAGE_PLACEHOLDER_ID,
) -> tuple[list[int], list[PlaceholderRange]]:
    """Replace the i-th ``image_token_id`` with ``num_image_tokens[i]`` placeholders."""
    counts = [_positive_int(f"num_image_tokens[{i}]", n) for i, n in enumerate(num_image_tokens)]
    markers = sum(1 for t in token_ids if t == image_token_id)
    if markers != len(counts):
        raise ValueError(
            f"the prompt has {markers} image markers (id {image_token_id}) but "
            f"{len(counts)} images were given: each marker needs exactly one image"
        )
    out: list[int] = []
    ranges: list[PlaceholderRange] = []
    images = iter(counts)
    for token in token_ids:
        if token != image_token_id:
            out.append(int(token))
            continue
        n = next(images)
        ranges.append(PlaceholderRange(offset=len(out), length=n))
        out.extend([placeholder_id] * n)
    return out, ranges


def kv_blocks_needed(num_tokens: int, block_size: int = 16) -> int:
    """KV blocks a sequence of ``num_tokens`` tokens occupies."""
    if not isinstance(num_tokens, numbers.Integral) or isinstance(num_tokens, bool) or (
            num_tokens < 0):
        raise ValueError(f"num_tokens must be an int >= 0, got {num_tokens!r}")
    block_size = _positive_int("block_size", block_size)
    return -(-int(num_tokens) // block_size)
