"""Kata 05-03 — reimplement the dispatch methods of vLLM's ``CUDAGraphMode``.

Fill in the six bodies; grade them with ``pytest --impl=mine katas/phase05/cudagraph_mode``.

Modes are strings. ``scaffold.SIMPLE_MODES`` holds the three simple ones (``"NONE"``,
``"PIECEWISE"``, ``"FULL"``); ``scaffold.ROUTINES`` maps each composite to its
``(decode routine, mixed routine)`` pair, e.g. ``"FULL_AND_PIECEWISE" -> ("FULL", "PIECEWISE")``.
A *pure-decode* batch gives every request exactly one new token; a *mixed* batch carries at
least one prefill chunk.

Contract shared by every function:

- a ``mode`` argument that is neither a simple mode nor a key of ``ROUTINES`` raises
  ``ValueError`` whose message names every valid mode (a typo should be easy to fix);
- the two tables are the only source of truth and are read when a function is called: a
  composite added to ``ROUTINES`` (the way vLLM adds an enum member) must work everywhere
  without any change to this file.
"""

from __future__ import annotations

from katas.phase05.cudagraph_mode.scaffold import ROUTINES, SIMPLE_MODES  # noqa: F401


def separate_routine(mode: str) -> bool:
    """``True`` iff ``mode`` is a composite, i.e. decode and mixed batches each get a routine.

    Returns a real ``bool``. ``"FULL_AND_PIECEWISE"`` -> ``True``; ``"FULL"`` -> ``False``.
    """
    raise NotImplementedError("separate_routine: is this mode a composite?")


def decode_mode(mode: str) -> str:
    """The simple mode a pure-decode batch runs under when the engine is configured with ``mode``.

    A composite gives its decode routine; a simple mode gives itself.
    ``"FULL_AND_PIECEWISE"`` -> ``"FULL"``; ``"PIECEWISE"`` -> ``"PIECEWISE"``.
    """
    raise NotImplementedError("decode_mode: the routine for pure-decode batches")


def mixed_mode(mode: str) -> str:
    """The simple mode a mixed (prefill + decode) batch runs under with ``mode``.

    A composite gives its mixed routine; a simple mode gives itself.
    ``"FULL_DECODE_ONLY"`` -> ``"NONE"``; ``"FULL"`` -> ``"FULL"``.
    """
    raise NotImplementedError("mixed_mode: the routine for mixed batches")


def has_mode(mode: str, target: str) -> bool:
    """``True`` iff ``mode`` runs some kind of batch (decode or mixed) under ``target``.

    ``target`` must be a simple mode: a composite target raises ``ValueError`` (vLLM asserts
    the same). ``NONE`` counts as a routine like any other: ``"FULL_DECODE_ONLY"`` has
    ``"NONE"`` (its mixed batches run eagerly) and ``"FULL"``, but not ``"PIECEWISE"``.
    Returns a real ``bool``.
    """
    raise NotImplementedError("has_mode: does any routine of this mode use the target?")


def requires_piecewise_compilation(mode: str) -> bool:
    """``True`` iff some batch would replay piecewise graphs under ``mode``.

    This is the compile-time half of the policy: a piecewise graph can only be replayed if the
    model was compiled split at attention, which is decided before the first batch arrives.
    ``"FULL_AND_PIECEWISE"`` -> ``True``; ``"FULL_DECODE_ONLY"`` -> ``False``. A real ``bool``.
    """
    raise NotImplementedError("requires_piecewise_compilation: must the model be split?")


def runtime_mode_for(mode: str, is_decode: bool) -> str:
    """The simple mode one batch runs under: the run-time half of the policy.

    ``is_decode`` says whether the batch is pure decode (upstream: the batch descriptor's
    uniform-decode flag). Always one of ``SIMPLE_MODES``, never a composite.
    ``runtime_mode_for("FULL_AND_PIECEWISE", True)`` -> ``"FULL"``; with ``False`` ->
    ``"PIECEWISE"``.
    """
    raise NotImplementedError("runtime_mode_for: which routine runs this batch?")
