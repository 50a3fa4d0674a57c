"""Fake images and the placeholder runs they occupy in a prompt.

Upstream twins: ``vllm/multimodal/inputs.py: PlaceholderRange`` (``offset``, ``length``; upstream
adds ``is_embed``, the mask of positions that really receive an embedding, which mini_vllm leaves
out: every position of a run gets one) and ``MultiModalFeatureSpec`` (one item of a request: its
content hash ``identifier`` and its ``mm_position``), plus ``vllm/multimodal/hasher.py:
MultiModalHasher`` (a content hash of the item's raw bytes).

A fake image is its bytes. Its size decides how many placeholder tokens it occupies, by the
course's mini-build rule (phase 13): ``len(data) // 64 + 1``. Its hash (SHA-256 of the bytes) is
its identity everywhere: the encoder-cache key, the encoder's seed, and the extra key folded into
the prefix-cache hash of every KV block its run overlaps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

#: Bytes of fake image per placeholder token (the course's mini-build rule).
BYTES_PER_IMAGE_TOKEN = 64


@dataclass(frozen=True)
class PlaceholderRange:
    """A run of ``length`` placeholder tokens starting at prompt position ``offset``.

    The prompt ``A A A A x B B B B ...`` (A, B two images' runs) has A at ``(offset=0,
    length=4)`` and B at ``(offset=5, length=4)``. ``ValueError`` for a negative offset or a
    length below 1.
    """

    offset: int
    length: int

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ValueError(f"PlaceholderRange.offset must be an int >= 0, got {self.offset!r}")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise ValueError(f"PlaceholderRange.length must be an int >= 1, got {self.length!r}")

    @property
    def end(self) -> int:
        """One past the run's last position."""
        return self.offset + self.length

    def overlaps(self, start: int, stop: int) -> bool:
        """Whether the run shares a position with ``[start, stop)``."""
        return self.offset < stop and start < self.end


def check_image(data: object) -> bytes:
    """``data`` as ``bytes``; ``ValueError`` unless it is non-empty bytes (or bytearray)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ValueError(f"an image must be non-empty bytes, got {type(data).__name__} "
                         f"{data!r:.40}")
    return bytes(data)


def image_hash(data: bytes) -> str:
    """The image's identity: SHA-256 of its bytes, hex (upstream: ``MultiModalHasher``)."""
    return hashlib.sha256(check_image(data)).hexdigest()


def num_image_tokens(data: bytes) -> int:
    """Placeholder tokens one fake image occupies: ``len(data) // 64 + 1`` (so >= 1)."""
    return len(check_image(data)) // BYTES_PER_IMAGE_TOKEN + 1


@dataclass(frozen=True)
class MultiModalFeature:
    """One image of one request: its hash, its run in the prompt and its bytes.

    Upstream ``MultiModalFeatureSpec`` (``identifier`` there is ``mm_hash`` here;
    ``mm_position`` is the same). A request's features are sorted by offset and disjoint.
    """

    mm_hash: str
    mm_position: PlaceholderRange
    data: bytes = field(default=b"", repr=False)

    @property
    def offset(self) -> int:
        return self.mm_position.offset

    @property
    def length(self) -> int:
        return self.mm_position.length
