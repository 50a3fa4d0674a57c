"""Reference for kata 06-03: group-wise symmetric int4, nibble packing, and two real formats.

Conventions settled here (the course leaves them open):

* groups run along the input dim: ``W`` is ``(out, in)`` and each group is ``group_size``
  consecutive weights of one row, so ``scales`` is ``(out, in // group_size)``;
* an input dim that ``group_size`` does not divide is refused (vLLM's layers cannot hold a
  partial group either);
* scales are stored as float16, and the weights are rounded against the stored float16 scale,
  so ``dequantize_grouped`` multiplies by exactly what was divided by;
* an all-zero group gets scale 1 (its weights quantize to 0);
* ``pack_int4`` pads an odd last column with a zero weight (nibble 8); ``unpack_int4`` takes the
  logical count back to drop it.
"""

from __future__ import annotations

import numpy as np

from katas.phase06.int4_groups_and_packing.scaffold import (
    AWQ_PACK_FACTOR,
    AWQ_PACK_ORDER,
    Q4_1_BLOCK,
    Q4_1_BLOCK_BYTES,
    AwqTensors,
)

QMAX = 7  # symmetric int4 keeps [-7, 7]; -8 is given up so that negation is exact
OFFSET = 8  # stored nibble = q + 8, in 0..15
SCALE_BYTES = 2  # float16


def _check_group(in_features: int, group_size: int) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
            or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of group_size "
                         f"{group_size}: the last group would be partial")


def quantize_grouped(W: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    W = np.asarray(W)
    if W.ndim != 2 or not np.issubdtype(W.dtype, np.floating):
        raise ValueError(f"W must be a 2-D float (out, in) matrix, got {W.dtype} {W.shape}")
    out_features, in_features = W.shape
    _check_group(in_features, group_size)
    groups = W.astype(np.float32).reshape(out_features, in_features // group_size, group_size)
    amax = np.abs(groups).max(axis=-1)
    with np.errstate(over="ignore"):  # a scale float16 cannot hold is refused just below
        scales = np.where(amax > 0, amax / np.float32(QMAX), np.float32(1.0)).astype(np.float16)
    bad = ~np.isfinite(scales) | (scales == 0)
    if bad.any():
        o, g = np.argwhere(bad)[0]
        raise ValueError(f"the scale of row {o}, group {g} (max |w| = {amax[o, g]:.3g}) does "
                         "not fit float16")
    stored = scales.astype(np.float32)[..., None]
    q = np.clip(np.round(groups / stored), -QMAX, QMAX).astype(np.int8)
    return q.reshape(out_features, in_features), scales


def dequantize_grouped(q: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    q, scales = np.asarray(q), np.asarray(scales)
    if q.ndim != 2:
        raise ValueError(f"q must be 2-D (out, in), got shape {q.shape}")
    out_features, in_features = q.shape
    _check_group(in_features, group_size)
    want = (out_features, in_features // group_size)
    if scales.shape != want:
        raise ValueError(f"scales has shape {scales.shape}; q {q.shape} with group_size "
                         f"{group_size} needs {want}")
    per_weight = np.repeat(scales.astype(np.float32), group_size, axis=1)
    return q.astype(np.float32) * per_weight


def pack_int4(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q)
    if q.ndim < 1 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"q must be an integer array, got {q.dtype} {q.shape}")
    if q.size and (q.min() < -OFFSET or q.max() > QMAX):
        raise ValueError(f"int4 values must lie in [-8, 7], got [{q.min()}, {q.max()}]")
    u = (q.astype(np.int16) + OFFSET).astype(np.uint8)
    if u.shape[-1] % 2:  # odd count: pad with a zero weight (nibble 8)
        pad = np.full(u.shape[:-1] + (1,), OFFSET, dtype=np.uint8)
        u = np.concatenate([u, pad], axis=-1)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, n: int | None = None) -> np.ndarray:
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim < 1:
        raise ValueError(f"packed must be a uint8 array, got {packed.dtype} {packed.shape}")
    full = 2 * packed.shape[-1]
    if n is None:
        n = full
    if not full - 1 <= n <= full or n < 0:
        raise ValueError(f"{packed.shape[-1]} bytes per row hold {full - 1} or {full} values, "
                         f"not n={n}")
    low = (packed & 0x0F).astype(np.int8) - OFFSET
    high = (packed >> 4).astype(np.int8) - OFFSET
    both = np.stack([low, high], axis=-1).reshape(packed.shape[:-1] + (full,))
    return both[..., :n]


def memory_bytes_grouped(out_features: int, in_features: int, group_size: int) -> int:
    _check_group(in_features, group_size)
    packed = out_features * -(-in_features // 2)
    scales = out_features * (in_features // group_size) * SCALE_BYTES
    return packed + scales


def scale_overhead(group_size: int) -> float:
    _check_group(0, group_size)  # 0 splits into any number of groups: only the type is checked
    return (8 * SCALE_BYTES / group_size) / 4


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim < 1:
        raise ValueError(f"Q4_1 data must be uint8 bytes, got {raw.dtype} {raw.shape}")
    if raw.shape[-1] % Q4_1_BLOCK_BYTES:
        raise ValueError(f"{raw.shape[-1]} bytes per row is not a whole number of "
                         f"{Q4_1_BLOCK_BYTES}-byte Q4_1 blocks")
    lead = raw.shape[:-1]
    blocks = raw.reshape(-1, Q4_1_BLOCK_BYTES)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 4:]
    # byte j holds weight j in its low nibble and weight j + 16 in its high nibble
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    values = d * nibbles + m
    n_weights = raw.shape[-1] // Q4_1_BLOCK_BYTES * Q4_1_BLOCK
    return values.reshape(lead + (n_weights,))


def awq_pack(q: np.ndarray, scales: np.ndarray) -> AwqTensors:
    q, scales = np.asarray(q), np.asarray(scales)
    if q.ndim != 2 or scales.ndim != 2 or scales.shape[0] != q.shape[0]:
        raise ValueError(f"q (out, in) and scales (out, groups) must agree, got {q.shape} "
                         f"and {scales.shape}")
    out_features, in_features = q.shape
    n_groups = scales.shape[1]
    if n_groups == 0 or in_features % n_groups:
        raise ValueError(f"{n_groups} groups do not split in_features {in_features}")
    if out_features % AWQ_PACK_FACTOR:
        raise ValueError(f"out_features {out_features} is not a multiple of "
                         f"{AWQ_PACK_FACTOR}: AWQ packs 8 output columns per int32")

    def pack_columns(values: np.ndarray) -> np.ndarray:
        """(rows, out) signed int4 -> (rows, out // 8) int32, AWQ's field order."""
        rows = values.shape[0]
        words = values.reshape(rows, out_features // AWQ_PACK_FACTOR, AWQ_PACK_FACTOR)
        # field p of each word holds column AWQ_PACK_ORDER[p]; pack_int4 then fills fields
        # 0..7 in order (even -> low nibble, byte 0 first = little-endian int32)
        reordered = words[:, :, list(AWQ_PACK_ORDER)].reshape(rows, out_features)
        as_bytes = pack_int4(reordered)  # (rows, out // 2) uint8
        return np.ascontiguousarray(as_bytes).view("<i4").astype(np.int32)

    qweight = pack_columns(np.ascontiguousarray(q.T))
    # symmetric: every zero point is the offset 8, i.e. a stored q of 0
    qzeros = pack_columns(np.zeros((n_groups, out_features), dtype=np.int8))
    return AwqTensors(qweight=qweight, qzeros=qzeros,
                      scales=np.ascontiguousarray(scales.T).astype(np.float16))
