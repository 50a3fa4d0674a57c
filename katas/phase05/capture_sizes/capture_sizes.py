"""Kata 05-05 — capture sizes: the ladder, the rung lookup and the padding bill.

Fill in the four bodies; grade them with ``pytest --impl=mine katas/phase05/capture_sizes``.

A *ladder* (vLLM: ``cudagraph_capture_sizes``) is the list of batch sizes a CUDA graph is
captured for at startup. A graph replays only at the size it was captured at, so a batch is
padded up to a rung: its real rows are copied in, the spare rows hold junk whose outputs are
thrown away. A batch larger than every rung has no graph and runs eagerly. Batch sizes count
rows (tokens): for a decode step, one per request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


def default_capture_sizes(max_size: int, coarse_from: int | None = None) -> list[int]:
    """The default ladder up to ``max_size``, ascending, without duplicates.

    The course's rule: ``1, 2, 4``, then every multiple of 8, and no rung above ``max_size``.
    ``max_size`` itself is a rung only when the rule puts one there.
    ``default_capture_sizes(64)`` is ``[1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]``;
    ``default_capture_sizes(20)`` is ``[1, 2, 4, 8, 16]``; ``default_capture_sizes(3)`` is
    ``[1, 2]``.

    ``coarse_from`` (default ``None``: the course's rule) switches to vLLM's current ladder:
    the multiples of 8 stop below ``coarse_from`` and every multiple of 16 from
    ``coarse_from`` up to ``max_size`` takes over. vLLM v0.22.1 and 0.32 use 256, so
    ``default_capture_sizes(512, coarse_from=256)`` has 51 rungs, ending ``..., 240, 248,
    256, 272, 288, ..., 512``.

    Raises ``ValueError`` if ``max_size < 1``, or if ``coarse_from`` is given and is not a
    positive multiple of 16.
    """
    raise NotImplementedError("default_capture_sizes: build the capture-size ladder")


def select_capture_size(batch: int, sizes: Collection[int]) -> int | None:
    """The rung a batch of ``batch`` rows replays at, or ``None`` if it runs eagerly.

    The rung is the smallest size in ``sizes`` that is ``>= batch``. ``sizes`` may come in any
    order and may repeat a size; an empty ladder (vLLM on a CPU) holds nothing. A batch above
    every rung returns ``None``: the eager path is normal, not an error.
    On ``[1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]``: 33 -> 40, 40 -> 40, 65 -> ``None``.

    Raises ``ValueError`` if ``batch < 1``.
    """
    raise NotImplementedError("select_capture_size: the rung this batch replays at")


def padded_tokens(batch: int, sizes: Collection[int]) -> int:
    """The padding rows a batch of ``batch`` rows costs: its rung minus ``batch``.

    0 on an exact rung, and 0 when the batch runs eagerly (it runs at its own size).
    On the 64 ladder: 33 -> 7, 40 -> 0, 65 -> 0. Raises ``ValueError`` if ``batch < 1``.
    """
    raise NotImplementedError("padded_tokens: rows of padding for one batch")


def trace_waste(trace: Iterable[int], sizes: Collection[int]) -> int:
    """Padding rows summed over ``trace``, one batch size per engine step.

    Steps that run eagerly add nothing; an empty trace costs 0.
    On the 64 ladder, ``[1, 3, 33, 64, 65, 100, 7]`` costs 0 + 1 + 7 + 0 + 0 + 0 + 1 = 9.
    """
    raise NotImplementedError("trace_waste: padding summed over a step trace")
