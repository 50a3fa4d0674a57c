"""Reference for kata 05-03 — the dispatch methods of vLLM's ``CUDAGraphMode``, over strings.

A mode is one of the simple modes (``scaffold.SIMPLE_MODES``) or a composite listed in
``scaffold.ROUTINES`` as ``(decode routine, mixed routine)``. Both tables are read at call
time, so a composite added to ``ROUTINES`` works without touching this file.
"""

from __future__ import annotations

from katas.phase05.cudagraph_mode.scaffold import ROUTINES, SIMPLE_MODES


def _known(mode: str) -> str:
    """``mode`` itself if it names a mode; otherwise a ValueError that lists the valid names."""
    if mode in SIMPLE_MODES or mode in ROUTINES:
        return mode
    valid = ", ".join([*SIMPLE_MODES, *ROUTINES])
    raise ValueError(f"unknown cudagraph mode {mode!r}; valid modes: {valid}")


def separate_routine(mode: str) -> bool:
    """True iff ``mode`` is a composite: decode and mixed batches get their own routine."""
    return _known(mode) in ROUTINES


def decode_mode(mode: str) -> str:
    """The simple mode a pure-decode batch runs under."""
    if separate_routine(mode):
        return ROUTINES[mode][0]
    return mode


def mixed_mode(mode: str) -> str:
    """The simple mode a mixed (prefill + decode) batch runs under."""
    if separate_routine(mode):
        return ROUTINES[mode][1]
    return mode


def has_mode(mode: str, target: str) -> bool:
    """Does ``mode`` use the simple mode ``target`` for at least one kind of batch?"""
    if separate_routine(target):
        raise ValueError(
            f"has_mode asks about one routine, but {target!r} is a composite; "
            f"ask about one of {', '.join(SIMPLE_MODES)}"
        )
    if separate_routine(mode):
        return target in ROUTINES[mode]
    return mode == target


def requires_piecewise_compilation(mode: str) -> bool:
    """Must the model be compiled split at attention before any batch runs under ``mode``?"""
    return has_mode(mode, "PIECEWISE")


def runtime_mode_for(mode: str, is_decode: bool) -> str:
    """The per-batch dispatch: the routine ``mode`` assigns to this kind of batch."""
    return decode_mode(mode) if is_decode else mixed_mode(mode)
