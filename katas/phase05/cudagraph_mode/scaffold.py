"""What the lab gives you: the names of the cudagraph modes and how composites are encoded.

This mirrors the values of vLLM's ``CUDAGraphMode`` enum. Three modes are *simple*: each one is
a single strategy, and only these three ever reach the runtime. The other two are *composite*:
a pair of simple modes, the first for pure-decode batches and the second for mixed batches
(prefill chunks next to decodes). Neither table is your work; your functions read them.
"""

from __future__ import annotations

SIMPLE_MODES: tuple[str, ...] = ("NONE", "PIECEWISE", "FULL")
"""The strategies a single forward pass can run under: no graph, graphs between the attention
calls (attention runs eagerly), or one graph for the whole forward."""

ROUTINES: dict[str, tuple[str, str]] = {
    "FULL_DECODE_ONLY": ("FULL", "NONE"),
    "FULL_AND_PIECEWISE": ("FULL", "PIECEWISE"),
}
"""Composite mode -> ``(decode routine, mixed routine)``, both simple modes."""

DEFAULT_MODE = "FULL_AND_PIECEWISE"
"""What vLLM's V1 engine uses when you do not choose (on a GPU)."""
