"""What every attention layer of one forward pass shares: the attention backend in use.

Upstream twin: ``vllm/forward_context.py`` (``set_forward_context`` / ``get_forward_context``).
vLLM's model code never names a kernel: its ``Attention`` layer calls whatever backend the engine
selected at start-up, and finds the step's state in a context the model runner sets around
``model.forward``. mini_vllm does the same for the backend, so an engine can run the stock model
on another attention implementation (a kata's) without touching the model or its weights.
Outside any context, layers use :func:`mini_vllm.attention.paged_attention`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mini_vllm.attention import AttentionBackend, paged_attention


@dataclass(frozen=True)
class ForwardContext:
    attn_backend: AttentionBackend = paged_attention


_DEFAULT = ForwardContext()
_current: ForwardContext = _DEFAULT


def get_forward_context() -> ForwardContext:
    """The context of the forward pass running now (the default one outside any)."""
    return _current


@contextmanager
def set_forward_context(attn_backend: AttentionBackend | None = None) -> Iterator[None]:
    """Run the enclosed forward pass with ``attn_backend`` (``None``: the stock numpy one)."""
    global _current
    previous = _current
    _current = ForwardContext(attn_backend or paged_attention)
    try:
        yield
    finally:
        _current = previous
