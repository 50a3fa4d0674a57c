"""Kata 14-02 — trace weight loading: predict where vLLM loads every tensor of a Llama
checkpoint, then watch vLLM's own ``load_weights`` do it and compare, name by name.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase14/trace_weight_loading``
(add ``-m live`` in an environment with vLLM to run the live trace of SmolLM2).

The predictions build on kata 14-03: import your ``map_weight_name`` and ``qkv_slices`` from
``katas.phase14.checkpoint_surgery.checkpoint_surgery`` (as below), or copy them here.
``Mapping`` and ``Capture`` (the record types) come from ``scaffold.py``.

A ``config`` is a Hugging Face ``config.json`` as a dict (``hidden_size``,
``intermediate_size``, ``num_attention_heads``, optional ``num_key_value_heads`` (default: MHA)
and ``head_dim`` (default: ``hidden_size / num_attention_heads``)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from katas.phase14.checkpoint_surgery.checkpoint_surgery import (  # noqa: F401
    map_weight_name,
    qkv_slices,
)
from katas.phase14.trace_weight_loading.scaffold import Capture, Mapping


def fused_shapes(config: dict[str, Any], tp_size: int = 1) -> dict[str, tuple[int, int]]:
    """The shapes of one rank's fused weights: ``{"qkv_proj": (rows, hidden), "gate_up_proj":
    (rows, hidden)}`` in vLLM's ``(out, in)`` layout, for ``tp_size`` ranks (1: unsharded).

    A rank holds ``num_attention_heads / tp_size`` query heads and an equal share of the KV heads
    (or one replicated KV head when ``tp_size`` exceeds their number), and
    ``intermediate_size / tp_size`` rows of gate and of up. Llama-3-8B: ``(6144, 4096)`` and
    ``(28672, 4096)``; at ``tp_size=2`` its ``qkv_proj`` is ``(3072, 4096)`` per rank.

    ``ValueError`` when ``tp_size`` is not a positive integer or a head count or the
    intermediate size does not split over it.
    """
    raise NotImplementedError("fused_shapes: the fused weights' shapes from a config")


def predict_mapping(names: Iterable[str], config: dict[str, Any],
                    tp_size: int = 1) -> list[Mapping]:
    """Where vLLM loads each checkpoint tensor: one ``Mapping(checkpoint, param, shard_id,
    rows)`` per name, in the order given.

    ``param`` and ``shard_id`` are 14-03's mapping; ``rows`` is ``(start, stop)``, the rows the
    shard fills in one rank's fused buffer (the shapes ``fused_shapes`` gives), ``None`` with
    ``shard_id`` ``None`` for an unfused tensor. Llama-3-8B, one rank:
    ``model.layers.0.self_attn.k_proj.weight`` -> ``qkv_proj``, ``"k"``, ``(4096, 5120)``.

    ``ValueError`` as ``fused_shapes``.
    """
    raise NotImplementedError("predict_mapping: predict vLLM's mapping of checkpoint tensors")


@contextmanager
def tracing(model_cls: type, default_loader: Callable[..., Any]) -> Iterator[list[Capture]]:
    """Trace weight loading: a context manager yielding a list that fills with ``Capture``s.

    While the block runs, every call of ``model_cls.load_weights(weights)`` on any instance
    (also one built inside the block, e.g. by an engine starting there) records one
    ``Capture(checkpoint, param, shard_id, shape)`` per weight-loader call, in call order:
    the checkpoint tensor being loaded, the name (as ``named_parameters()`` gives it) of the
    parameter it is placed into, the shard id the loader received (``None`` when called with
    two arguments) and the loaded tensor's shape as a tuple of ints. The model loads exactly as
    it would untraced, and its return value is returned.

    The loaders are what the model's loading code calls: a parameter's ``weight_loader``
    attribute, or ``default_loader`` (vLLM's ``default_weight_loader``) for a parameter
    without one. They are called ``loader(param, tensor)`` or ``loader(param, tensor,
    shard_id)``.

    On exit — normally or by an exception — ``model_cls`` and every parameter are as they were
    before: no wrapper stays installed, and a ``load_weights`` after the block records nothing.
    """
    raise NotImplementedError("tracing: record every weight-loader call of load_weights")
    yield []  # pragma: no cover - makes this a generator, as @contextmanager needs
