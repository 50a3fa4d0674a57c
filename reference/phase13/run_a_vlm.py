"""Reference for kata 13-02: count an Idefics3 / SmolVLM image's tokens before the model sees it."""

from __future__ import annotations

import math

MAX_IMAGE_SIZE = 4096  # the processor never resizes a side beyond this


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def tokens_per_tile(image_size: int, patch_size: int, scale_factor: int) -> int:
    """Image tokens one tile becomes: its patch grid, folded by the pixel shuffle."""
    _check_positive(image_size=image_size, patch_size=patch_size, scale_factor=scale_factor)
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a whole number of {patch_size}-pixel "
                         f"patches")
    side = image_size // patch_size
    if side % scale_factor:
        raise ValueError(f"a {side}x{side} patch grid does not fold by scale_factor "
                         f"{scale_factor}")
    return side * side // (scale_factor * scale_factor)


def resize_longest_edge(width: int, height: int, longest_edge: int = 2048) -> tuple[int, int]:
    """The size the processor resizes an image to before tiling: the longest edge becomes
    ``longest_edge``, the other keeps the aspect ratio (truncated, then bumped to even)."""
    _check_positive(width=width, height=height, longest_edge=longest_edge)
    if longest_edge > MAX_IMAGE_SIZE:
        raise ValueError(f"longest_edge {longest_edge} exceeds the processor's cap of "
                         f"{MAX_IMAGE_SIZE}")
    aspect_ratio = width / height
    if width >= height:
        new_width = longest_edge
        new_height = int(new_width / aspect_ratio)
        if new_height % 2:
            new_height += 1
    else:
        new_height = longest_edge
        new_width = int(new_height * aspect_ratio)
        if new_width % 2:
            new_width += 1
    return max(new_width, 1), max(new_height, 1)


def tile_grid(width: int, height: int, longest_edge: int = 2048,
              tile_size: int = 512) -> tuple[int, int]:
    """``(rows, cols)`` of tiles the processor cuts; ``(0, 0)`` when the image is not split."""
    _check_positive(tile_size=tile_size)
    new_width, new_height = resize_longest_edge(width, height, longest_edge)
    rows = math.ceil(new_height / tile_size)
    cols = math.ceil(new_width / tile_size)
    if rows * tile_size > tile_size or cols * tile_size > tile_size:
        return rows, cols
    return 0, 0


def num_image_tokens(width: int, height: int, longest_edge: int = 2048, tile_size: int = 512,
                     image_seq_len: int = 4) -> int:
    """How many ``<image>`` tokens (embedding slots) one image occupies in the prompt."""
    _check_positive(image_seq_len=image_seq_len)
    rows, cols = tile_grid(width, height, longest_edge, tile_size)
    return (rows * cols + 1) * image_seq_len


def placeholder_length(rows: int, cols: int, image_seq_len: int = 4) -> int:
    """Every prompt token one ``<image>`` marker becomes: image tokens plus the text around them
    (``<fake_token_around_image>``, ``<row_R_col_C>``, ``<global-img>``, newlines)."""
    _check_positive(image_seq_len=image_seq_len)
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if (rows == 0) != (cols == 0):
        raise ValueError(f"rows and cols are both 0 (not split) or both >= 1, got {rows}, {cols}")
    global_image = 1 + 1 + image_seq_len + 1  # fake, <global-img>, the tokens, closing fake
    if rows == 0:
        return global_image
    per_tile = 1 + 1 + image_seq_len  # fake, <row_R_col_C>, the tokens
    return rows * cols * per_tile + rows + 1 + global_image  # a newline per row, one before


def expected_prefix_hit(prompt_len: int, image_offset: int, block_size: int,
                        same_image: bool) -> int:
    """Prompt tokens a second request finds in the prefix cache after a first one with the same
    text and the same (or a different) image at ``image_offset``."""
    _check_positive(prompt_len=prompt_len, block_size=block_size)
    if isinstance(image_offset, bool) or not isinstance(image_offset, int) \
            or not 0 <= image_offset < prompt_len:
        raise ValueError(f"image_offset must be an int in [0, prompt_len), got {image_offset!r}")
    # A lookup never covers the last prompt token: at least one token is computed.
    reusable = prompt_len - 1
    if not same_image:
        # The first block holding an image token hashes the image: it and all after it miss.
        reusable = min(reusable, image_offset)
    return reusable // block_size * block_size
