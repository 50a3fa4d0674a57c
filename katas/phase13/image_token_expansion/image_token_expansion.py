"""Kata 13-01: image-token expansion — what an image costs before the model sees a pixel.

Fill in the three functions. ``PlaceholderRange`` is mini_vllm's (``offset``, ``length``).
"""

from __future__ import annotations

from collections.abc import Sequence

from mini_vllm.multimodal.inputs import PlaceholderRange

#: The placeholder id the expansion writes by default (upstream's reserved ``-100``).
IMAGE_PLACEHOLDER_ID = -100


def image_token_count(width: int, height: int, patch_size: int = 14, merge_size: int = 2) -> int:
    """Number of tokens an image of ``width`` x ``height`` pixels becomes.

    The vision tower cuts the image into ``patch_size`` x ``patch_size`` patches (a partial
    patch at the right or bottom edge still counts as a patch), then merges each ``merge_size``
    x ``merge_size`` neighbourhood of patches into one token (a partial neighbourhood still
    counts). Columns and rows are independent.

    Worked numbers (defaults): 336 x 336 -> 144 tokens; 337 x 337 -> 169; any image of at most
    28 x 28 pixels -> 1 token (never 0). With ``merge_size=1``, 336 x 336 -> 576.

    ``ValueError`` (naming the argument) when any argument is not an int >= 1.
    """
    raise NotImplementedError("image_token_count: pixels -> patches -> merged tokens")


def expand_prompt(
    token_ids: Sequence[int],
    image_token_id: int,
    num_image_tokens: Sequence[int],
    placeholder_id: int = IMAGE_PLACEHOLDER_ID,
) -> tuple[list[int], list[PlaceholderRange]]:
    """Expand every image marker of a prompt into that image's run of placeholder tokens.

    ``token_ids``: the prompt, with one ``image_token_id`` marker per image. ``num_image_tokens
    [i]``: how many tokens the i-th image (in prompt order) costs. Returns ``(ids, ranges)``:
    ``ids`` is a new list, the prompt with the i-th marker replaced by ``num_image_tokens[i]``
    copies of ``placeholder_id`` and every other token kept, in order; ``ranges[i]`` is the
    ``PlaceholderRange`` of the i-th run in ``ids`` (ordered, disjoint, every position inside
    holds ``placeholder_id``). ``token_ids`` is not modified.

    Example: ``expand_prompt([5, 9, 6], 9, [3])`` -> ``([5, -100, -100, -100, 6],
    [PlaceholderRange(offset=1, length=3)])``.

    ``ValueError`` when the number of markers differs from ``len(num_image_tokens)``, or when a
    count is not an int >= 1.
    """
    raise NotImplementedError("expand_prompt: one marker -> that image's placeholder run")


def kv_blocks_needed(num_tokens: int, block_size: int = 16) -> int:
    """KV-cache blocks of ``block_size`` slots a sequence of ``num_tokens`` tokens occupies.

    0 tokens -> 0 blocks; 16 -> 1; 17 -> 2. ``ValueError`` for ``num_tokens < 0`` or
    ``block_size < 1`` (or non-int values).
    """
    raise NotImplementedError("kv_blocks_needed: the block bill of a sequence")
