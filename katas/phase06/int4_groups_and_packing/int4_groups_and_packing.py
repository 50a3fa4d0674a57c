"""Kata 06-03 — int4 with group-wise scales, two nibbles per byte, and two real formats.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase06/int4_groups_and_packing``.

Conventions (every function): a weight matrix is ``(out_features, in_features)``, the layout of a
PyTorch / Hugging Face ``Linear.weight``. A *group* is ``group_size`` consecutive weights of one
row, along the input dim. Symmetric int4 uses the 15 levels ``-7 .. 7``; a stored nibble is the
value plus 8 (``0 .. 15``). Bad input raises one ``ValueError`` that says what is wrong.
"""

from __future__ import annotations

import numpy as np

from katas.phase06.int4_groups_and_packing.scaffold import AwqTensors


def quantize_grouped(W: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 with one scale per group: returns ``(q, scales)``.

    - ``q``: int8, the shape of ``W``, every value in ``[-7, 7]``;
    - ``scales``: float16, ``(out_features, in_features // group_size)``; the scale of a group
      is its largest magnitude divided by 7, *as stored in float16*, and ``q`` is rounded
      (numpy's ``np.round``) against that stored scale, so ``q * scale`` is the reconstruction;
    - an all-zero group gets scale 1.0 (its ``q`` is 0), never a division by zero.

    Errors (``ValueError``): ``W`` not a 2-D float array; ``group_size`` not an int >= 1;
    ``in_features`` not a multiple of ``group_size`` (name both numbers); a scale that float16
    cannot hold (overflows to inf or underflows to 0).

    Example: row ``[7, -3.4, 2.6, 0.2, 0.7, -0.35, 0.1, 0]`` with groups of 4 gives scales
    ``[1.0, 0.1]`` (float16: 0.0999755859375) and q ``[7, -3, 3, 0, 7, -4, 1, 0]``.
    """
    raise NotImplementedError("quantize_grouped: int4 values and one float16 scale per group")


def dequantize_grouped(q: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """The float32 ``(out, in)`` matrix ``q`` and ``scales`` stand for: each weight times its
    group's scale. ``ValueError`` when ``scales`` is not ``(out, in // group_size)``."""
    raise NotImplementedError("dequantize_grouped: weights back from int4 values and scales")


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Two int4 values per byte along the last axis: uint8, last axis ``ceil(n / 2)`` long.

    Value ``v`` (``-8 .. 7``) is stored as the nibble ``v + 8``. The value at an even index
    ``2j`` goes to the low nibble (bits 0-3) of byte ``j``; the odd index ``2j + 1`` to its
    high nibble. An odd count is padded with one zero weight (nibble 8) in the last high nibble.
    ``(16, 64) -> (16, 32)``; ``[[-8, 7, 0, 1]] -> [[0xF0, 0x98]]``.

    ``ValueError`` for a non-integer array or a value outside ``[-8, 7]``.
    """
    raise NotImplementedError("pack_int4: two int4 values per byte")


def unpack_int4(packed: np.ndarray, n: int | None = None) -> np.ndarray:
    """The exact inverse of ``pack_int4``: int8 values in ``[-8, 7]``.

    ``n`` is the number of values per row to return (default ``2 * packed.shape[-1]``); it
    must be that or one less (an odd row packed with its padding). ``ValueError`` for a
    non-uint8 array or any other ``n``.
    """
    raise NotImplementedError("unpack_int4: int4 values back out of the bytes")


def memory_bytes_grouped(out_features: int, in_features: int, group_size: int) -> int:
    """Bytes of a packed int4 matrix plus its float16 scales (2 bytes each).

    Each row packs into ``ceil(in_features / 2)`` bytes. 4096 x 4096 at group 128 is 8,650,752
    bytes: 0.515625 bytes per weight. ``ValueError`` as in ``quantize_grouped``.
    """
    raise NotImplementedError("memory_bytes_grouped: bytes of packed weights and their scales")


def scale_overhead(group_size: int) -> float:
    """The float16 scales' bits per weight as a fraction of the 4-bit payload.

    Group 128: 16 / 128 = 0.125 bit per weight, 0.03125 of the 4 payload bits. ``ValueError``
    when ``group_size`` is not an int >= 1.
    """
    raise NotImplementedError("scale_overhead: scale bits per weight over the 4-bit payload")


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """GGUF's Q4_1 blocks, as ``gguf``'s reader hands them over, to float32 weights.

    ``raw`` is uint8 with the bytes of each row on its last axis: a row of ``k`` weights is
    ``k / 32`` blocks of 20 bytes. One block: float16 ``d`` (bytes 0-1, little-endian), float16
    ``m`` (bytes 2-3), then 16 bytes of nibbles: byte ``j`` holds weight ``j`` of the block in
    its low nibble and weight ``j + 16`` in its high nibble. Weight = ``d * nibble + m``
    (unsigned nibbles ``0 .. 15``, no offset), computed in float32. Returns float32 with the
    same leading shape and ``32`` weights per block on the last axis: equal, to the bit, to
    ``gguf.quants.dequantize`` on the same bytes.

    ``ValueError`` for non-uint8 input or a row that is not a whole number of blocks.
    """
    raise NotImplementedError("dequantize_q4_1: weights out of GGUF Q4_1 blocks")


def awq_pack(q: np.ndarray, scales: np.ndarray) -> AwqTensors:
    """``quantize_grouped``'s ``(q, scales)`` of one layer in AutoAWQ's checkpoint layout.

    ``q``: ``(out, in)`` int values in ``[-7, 7]``; ``scales``: ``(out, G)`` float16, with
    ``in / G`` the group size. Returns ``AwqTensors`` (see ``scaffold.py``):

    - ``qweight``: ``(in, out // 8)`` int32. Input row ``i`` of the checkpoint is output
      column ``o`` of ``q``: stored nibble ``q[o, i] + 8``, packed 8 output columns per word
      in AWQ's field order ``scaffold.AWQ_PACK_ORDER`` (bit field ``p`` holds column
      ``AWQ_PACK_ORDER[p]`` of the word's 8 columns), so vLLM reads every value back;
    - ``qzeros``: ``(G, out // 8)`` int32, every zero point 8 (symmetric), packed alike;
    - ``scales``: ``(G, out)`` float16, the transpose of ``scales``.

    Output columns 0..7 holding ``-7, -6, ..., 0`` in one input row pack to the word
    ``0x86427531`` (a plain in-order packer would write ``0x87654321``).

    ``ValueError`` when ``out`` is not a multiple of 8 or the shapes disagree.
    """
    raise NotImplementedError("awq_pack: one layer in AWQ's qweight / qzeros / scales layout")
