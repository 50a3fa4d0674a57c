"""Provided for kata 06-03: the AWQ format's facts and the shape of what ``awq_pack`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: AWQ's nibble order inside one int32: bit field ``p`` (bits ``4p .. 4p + 3``) of a packed word
#: holds column ``AWQ_PACK_ORDER[p]`` of its 8 consecutive output columns. Field 0 holds column 0,
#: field 1 column 2, field 2 column 4, ... field 4 column 1. A plain packer would put column ``p``
#: in field ``p``. (vLLM undoes it with the inverse permutation ``[0, 4, 1, 5, 2, 6, 3, 7]``.)
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)

#: Nibbles per int32 word.
AWQ_PACK_FACTOR = 8

#: GGUF Q4_1: 32 weights per block, stored as a float16 scale ``d``, a float16 minimum ``m`` and
#: 16 bytes of nibbles: 20 bytes per block.
Q4_1_BLOCK = 32
Q4_1_BLOCK_BYTES = 20


@dataclass(frozen=True)
class AwqTensors:
    """One linear layer in AutoAWQ's checkpoint layout (``in`` = in_features, ``G`` = groups).

    ``qweight``: ``(in, out // 8)`` int32, 8 unsigned nibbles per word along the output dim;
    ``qzeros``: ``(G, out // 8)`` int32, one unsigned zero point per group and output column,
    packed the same way; ``scales``: ``(G, out)`` float16. Weight ``[o, i]`` is
    ``(nibble - zero) * scale`` of its group ``i // group_size``.
    """

    qweight: np.ndarray
    qzeros: np.ndarray
    scales: np.ndarray
