"""Kata 04-04 — flash-decoding: split the keys, summarise each range, merge the summaries.

Fill in the four bodies; grade them with ``pytest --impl=mine katas/phase04/flash_decoding``.

One query ``q [d]``, keys ``K [n, d]`` and values ``V [n, d_v]``, float64. The score of key ``i``
is ``s_i = k_i . q / sqrt(d)``. A *summary* of attention over a key range is the tuple
``(m, denom, acc)``:

- ``m``: the largest score in the range (a float; ``-inf`` for an empty range);
- ``denom``: the sum over the range of ``exp(s_i - m)`` (a float; ``0.0`` for an empty range);
- ``acc``: the sum over the range of ``exp(s_i - m) * v_i``, *not* divided by ``denom`` (a
  vector of shape ``[d_v]``; zeros for an empty range).

The attention output a summary stands for is ``acc / denom``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: ``(m, denom, acc)``: max score, sum of exp(score - m), unnormalized weighted sum of values.
Summary = tuple[float, float, np.ndarray]


def attend_partial(q: np.ndarray, K: np.ndarray, V: np.ndarray) -> Summary:
    """The summary ``(m, denom, acc)`` of ``q`` attending to the key range ``K`` / ``V``.

    ``K`` is ``[n, d]`` and ``V`` is ``[n, d_v]``, ``n >= 0``. The values are exactly the ones
    defined in the module docstring: ``m`` is the range's largest score, and ``denom`` and
    ``acc`` are taken relative to it, so no exponent is positive. The summary is never
    normalised (``denom`` is not 1 unless the range holds one key).

    An empty range (``n == 0``) has the summary ``(-inf, 0.0, zeros(d_v))``, the identity of
    the merge: merging it with any summary gives that summary back.
    """
    raise NotImplementedError("attend_partial: the (m, denom, acc) summary of one key range")


def merge_partials(summaries: Iterable[Summary]) -> Summary:
    """The summary of the union of disjoint key ranges, from their summaries alone.

    The result is a summary again (merge merges to get the summary of a bigger union), equal to
    ``attend_partial`` over the union of the ranges up to rounding: the same ``m`` exactly, the
    same ``denom`` and ``acc`` to about 1e-16 relative. The order of ``summaries`` does not
    matter, nor does how merges are nested.

    Empty-range summaries change nothing; if every summary is empty, the result is the empty
    summary ``(-inf, 0.0, zeros)``, without NaN. Finite for maxima that differ by far more than
    700 (``exp`` overflows float64 past about 709.8). An empty list raises ``ValueError``.
    """
    raise NotImplementedError("merge_partials: combine summaries of disjoint key ranges")


def finalize(summary: Summary) -> np.ndarray:
    """The attention output ``[d_v]`` a summary stands for.

    Raises ``ValueError`` for the empty summary (``denom == 0``): attention over no keys has no
    output.
    """
    raise NotImplementedError("finalize: the attention output of a summary")


def partitioned_attention(q: np.ndarray, K: np.ndarray, V: np.ndarray,
                          num_partitions: int) -> np.ndarray:
    """Attention of ``q`` over all of ``K`` / ``V`` (``[d_v]``), computed split-KV style.

    The keys are split into ``num_partitions`` consecutive ranges as ``np.array_split`` splits
    them; each range is summarised on its own and the summaries are merged. Equal to dense
    attention ``softmax(K q / sqrt(d)) V`` within 1e-12 for any ``num_partitions >= 1``,
    including more partitions than keys (some ranges are then empty and contribute nothing).

    Raises ``ValueError`` if ``num_partitions < 1`` (the message names ``num_partitions``) or
    if ``K`` has no rows.

    It has the shape of one row of a split-KV decode kernel: ``num_partitions`` thread blocks,
    each writing its range's ``(m, denom)`` and ``acc`` to scratch, then a reduction.
    """
    raise NotImplementedError("partitioned_attention: split the keys, attend, merge, divide")
