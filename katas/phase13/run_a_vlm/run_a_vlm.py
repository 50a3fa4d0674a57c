"""Kata 13-02: count an Idefics3 / SmolVLM image's tokens before the model sees it.

An Idefics3 processor turns one ``<image>`` marker into a run of prompt tokens. Predict that run
from the image's size alone, then check the prediction against the Hugging Face processor and a
real vLLM engine. Defaults are the tiny Idefics3's (SmolVLM's processor sizes, 4 tokens a tile).
"""

from __future__ import annotations


def tokens_per_tile(image_size: int, patch_size: int, scale_factor: int) -> int:
    """Image tokens one square tile of ``image_size`` pixels becomes.

    The vision tower cuts the tile into ``patch_size`` patches; the connector's pixel shuffle then
    folds ``scale_factor x scale_factor`` neighbourhoods of patches into one token.
    Idefics3-8B (364, 14, 2) -> 169; SmolVLM-256M (512, 16, 4) -> 64; the tiny model
    (512, 64, 4) -> 4.

    Raises ValueError when an argument is not an int >= 1, when ``image_size`` is not a whole
    number of patches, or when the patch grid does not fold evenly by ``scale_factor``.
    """
    raise NotImplementedError("tokens_per_tile: image tokens one tile becomes")


def resize_longest_edge(width: int, height: int, longest_edge: int = 2048) -> tuple[int, int]:
    """``(width, height)`` after the processor's first resize.

    The longest side becomes ``longest_edge`` (up or down: a thumbnail is enlarged), the other
    side keeps the aspect ratio, exactly as transformers' ``Idefics3ImageProcessor`` computes it
    (a fraction of a pixel is cut off, an odd result is made even, never below 1). A square
    counts as "wide". 1280x960 -> (2048, 1536).

    Raises ValueError when a size is not an int >= 1 or ``longest_edge`` exceeds 4096.
    """
    raise NotImplementedError("resize_longest_edge: the size before tiling")


def tile_grid(width: int, height: int, longest_edge: int = 2048,
              tile_size: int = 512) -> tuple[int, int]:
    """``(rows, cols)`` of ``tile_size`` tiles the processor cuts the resized image into.

    Partial tiles count (the processor stretches the image to whole tiles first). ``(0, 0)``
    when the resized image fits one tile: it is then not split, only the global image is sent.
    1280x960 -> (3, 4).

    Raises ValueError for sizes that are not ints >= 1 (as ``resize_longest_edge``).
    """
    raise NotImplementedError("tile_grid: rows and columns of tiles")


def num_image_tokens(width: int, height: int, longest_edge: int = 2048, tile_size: int = 512,
                     image_seq_len: int = 4) -> int:
    """How many ``<image>`` tokens one ``width x height`` image occupies in the prompt.

    These are the positions that receive vision embeddings: every tile and the downscaled
    global image each contribute ``image_seq_len`` of them. Text the processor adds around them
    does not count. What vLLM's ``Idefics3ProcessingInfo.get_num_image_tokens`` returns and what
    the Hugging Face processor writes: 1280x960 -> 52 with the defaults.

    Raises ValueError for arguments that are not ints >= 1.
    """
    raise NotImplementedError("num_image_tokens: <image> tokens for one image")


def placeholder_length(rows: int, cols: int, image_seq_len: int = 4) -> int:
    """Every prompt token one ``<image>`` marker becomes, for a ``rows x cols`` tile grid.

    Each tile is ``<fake_token_around_image><row_R_col_C>`` then its image tokens; a newline ends
    each row of tiles; then a newline, ``<fake_token_around_image><global-img>``, the global
    image's tokens and a closing ``<fake_token_around_image>``. An image that was not split
    (``0, 0``) is the global part alone, without the newline. Every special and every newline is
    one token. 3 x 4 tiles of 4 tokens -> 83. This is the length of vLLM's ``PlaceholderRange``.

    Raises ValueError when ``image_seq_len`` is not an int >= 1, a count is negative or not an
    int, or exactly one of ``rows``, ``cols`` is 0.
    """
    raise NotImplementedError("placeholder_length: prompt tokens one image marker becomes")


def expected_prefix_hit(prompt_len: int, image_offset: int, block_size: int,
                        same_image: bool) -> int:
    """Prompt tokens a second request finds in vLLM's prefix cache.

    The first request (already finished) had the same ``prompt_len``-token prompt with its image
    placeholder starting at ``image_offset``; the second carries the same image
    (``same_image``) or a different one of the same size. Only whole ``block_size`` blocks hit,
    a block holding any image token hits only for the same image, and the last prompt token is
    always computed.

    Raises ValueError when ``prompt_len`` or ``block_size`` is not an int >= 1 or
    ``image_offset`` is not an int in ``[0, prompt_len)``.
    """
    raise NotImplementedError("expected_prefix_hit: cached prompt tokens of a repeat request")
