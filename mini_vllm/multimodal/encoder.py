"""An encoder stand-in and the splice of its output into the model's input embeddings.

Upstream twins: a model's vision tower + projector (``embed_multimodal``, e.g.
``vllm/model_executor/models/llava.py``) and ``vllm/model_executor/models/utils.py:
merge_multimodal_embeddings`` (``inputs_embeds[is_multimodal] = mm_embeds``).

There is no ViT here: :class:`FakeImageEncoder` maps an image's bytes to ``[num_image_tokens,
hidden_size]`` embeddings drawn from a generator seeded by the image's SHA-256, so the same bytes
always give the same embeddings and different bytes (even of the same length) different ones.
It counts its calls (``num_calls``, ``num_encoded_tokens``): the encoder cache is what keeps
them down.
"""

from __future__ import annotations

import numpy as np

from mini_vllm.multimodal.inputs import image_hash, num_image_tokens


class FakeImageEncoder:
    """``encode(data) -> [num_image_tokens(data), hidden_size]``, deterministic in the bytes."""

    def __init__(self, hidden_size: int, dtype: np.dtype | str = np.float32,
                 scale: float = 0.02) -> None:
        self.hidden_size = int(hidden_size)
        self.dtype = np.dtype(dtype)
        self.scale = float(scale)
        self.num_calls = 0
        self.num_encoded_tokens = 0

    def encode(self, data: bytes) -> np.ndarray:
        seed = int(image_hash(data)[:16], 16)
        n = num_image_tokens(data)
        rng = np.random.default_rng(seed)
        self.num_calls += 1
        self.num_encoded_tokens += n
        return (rng.standard_normal((n, self.hidden_size)) * self.scale).astype(self.dtype)


def merge_multimodal_embeddings(inputs_embeds: np.ndarray, is_multimodal: np.ndarray,
                                mm_embeds: np.ndarray) -> np.ndarray:
    """Write ``mm_embeds`` over the rows of ``inputs_embeds`` where ``is_multimodal`` is true, in
    order (in place; returned). ``ValueError`` with upstream's message when the counts differ."""
    num_slots = int(np.count_nonzero(is_multimodal))
    if len(mm_embeds) != num_slots:
        raise ValueError(f"Attempted to assign {len(mm_embeds)} multimodal tokens to "
                         f"{num_slots} placeholders")
    inputs_embeds[is_multimodal] = mm_embeds
    return inputs_embeds
