"""Fake-quantize a loaded model: every linear weight ``W`` becomes ``fake_quant(W)`` in place.

Fake quant is quantize-then-dequantize: the weights keep the model's float dtype but only take
the values a low-bit format can represent, so the float GEMM computes what a real quantized
kernel would (up to the kernel's own rounding). It measures the accuracy side of a format on a
CPU, without the kernels that make it fast.

The caller supplies the format as one function, ``fake_quant(W) -> W_hat``, called once per
checkpoint tensor with the weight in the checkpoint's ``[out_features, in_features]`` layout
(upstream's layout; mini_vllm stores projections transposed, ``[in, out]``). Fused parameters
are split back into the tensors stacked into them (``q_proj``, ``k_proj``, ``v_proj`` of
``qkv_proj``; ``gate_proj``, ``up_proj`` of ``gate_up_proj``), as a checkpoint quantized
offline has them, so a per-tensor scale covers one projection, never a fused pair. The
function gets a private copy; what it returns (same shape, finite) is cast to the model's
dtype and written into the model.

What is quantized: every projection of every decoder layer (``q/k/v/o_proj``,
``gate/up/down_proj``). The embedding is a lookup, not a linear layer, and stays float. The LM
head stays float unless ``include_lm_head=True`` (quantized checkpoints usually leave it out:
compressed-tensors configs list ``lm_head`` under ``ignore``); with tied embeddings only the
head's copy changes, the embedding lookup keeps its float rows.

An engine that caches prefixes keeps K/V computed with the weights of the moment: after
swapping weights (either way), call ``engine.kv_cache_manager.reset_prefix_cache()`` or build
the engine with ``enable_caching=False``.

Upstream twin: ``vllm/model_executor/layers/quantization/`` (a ``QuantizationConfig`` gives each
``LinearBase`` a ``LinearMethodBase``: ``create_weights`` stores the quantized tensor and its
scales, ``apply`` runs the matmul). Upstream changes the kernel; here only the numbers change,
and the engine is untouched: this module operates on the model object alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

#: ``W [out, in] -> W_hat [out, in]``: quantize and dequantize one checkpoint tensor.
FakeQuantFn = Callable[[np.ndarray], np.ndarray]

LM_HEAD = "lm_head.weight"


def linear_weights(model: Any, *, include_lm_head: bool = False) -> list[tuple[str, np.ndarray]]:
    """``(checkpoint name, writable [out, in] view)`` for every linear weight of ``model``.

    The views alias the model's parameters: writing into one changes the model. Raises
    ``ValueError`` for a model without decoder layers of projections (the toy model).
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no decoder layers of linear weights to "
                         f"quantize (a Llama loaded by mini_vllm.models.loader has)")
    out: list[tuple[str, np.ndarray]] = []
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if not (hasattr(attn, "qkv_proj") and hasattr(mlp, "gate_up_proj")):
            raise ValueError(f"layer {i} of {type(model).__name__} is not a Llama decoder layer "
                             f"(self_attn.qkv_proj and a dense mlp.gate_up_proj): fake-quant "
                             f"does not know where its linear weights live")
        q, kv, inter = attn.q_size, attn.kv_size, mlp.intermediate_size
        prefix = f"model.layers.{i}"
        # Basic slices and .T are views: [in, out] columns read as [out, in] rows.
        out += [
            (f"{prefix}.self_attn.q_proj.weight", attn.qkv_proj[:, :q].T),
            (f"{prefix}.self_attn.k_proj.weight", attn.qkv_proj[:, q:q + kv].T),
            (f"{prefix}.self_attn.v_proj.weight", attn.qkv_proj[:, q + kv:].T),
            (f"{prefix}.self_attn.o_proj.weight", attn.o_proj.T),
            (f"{prefix}.mlp.gate_proj.weight", mlp.gate_up_proj[:, :inter].T),
            (f"{prefix}.mlp.up_proj.weight", mlp.gate_up_proj[:, inter:].T),
            (f"{prefix}.mlp.down_proj.weight", mlp.down_proj.T),
        ]
    if include_lm_head:
        out.append((LM_HEAD, model.lm_head.T))
    return out


def _checked(name: str, new: Any, like: np.ndarray) -> np.ndarray:
    new = np.asarray(new)
    if new.shape != like.shape:
        raise ValueError(f"fake_quant({name}) returned shape {new.shape}, expected {like.shape} "
                         f"(the [out, in] shape it was given)")
    if not (np.issubdtype(new.dtype, np.floating) or np.issubdtype(new.dtype, np.integer)):
        raise ValueError(f"fake_quant({name}) returned dtype {new.dtype}, expected real numbers")
    if not np.all(np.isfinite(new)):
        raise ValueError(f"fake_quant({name}) returned NaN or inf (a zero scale divided by?)")
    return new


def fake_quantize_weights(model: Any, fake_quant: FakeQuantFn, *,
                          include_lm_head: bool = False) -> dict[str, np.ndarray]:
    """Replace every linear weight ``W`` of ``model`` by ``fake_quant(W)``, in place.

    Returns the original weights (``{checkpoint name: [out, in] copy}``) for
    :func:`restore_weights`. If ``fake_quant`` fails or returns something unusable (wrong
    shape, NaN, inf) the weights already replaced are put back and the error propagates
    (``ValueError`` naming the tensor for a bad result): the model is never left half done.
    """
    originals: dict[str, np.ndarray] = {}
    try:
        for name, view in linear_weights(model, include_lm_head=include_lm_head):
            # Copy in the parameter's own memory order (a column-major [out, in] array): a
            # row-major copy of a transposed view is a slow transpose.
            original = view.copy(order="K")
            new = _checked(name, fake_quant(original.copy(order="K")), view)
            originals[name] = original
            view[...] = new  # cast to the model's dtype
    except BaseException:
        restore_weights(model, originals)
        raise
    return originals


def restore_weights(model: Any, originals: dict[str, np.ndarray]) -> None:
    """Write ``originals`` (as :func:`fake_quantize_weights` returned them) back into ``model``."""
    views = dict(linear_weights(model, include_lm_head=LM_HEAD in originals))
    unknown = sorted(set(originals) - set(views))
    if unknown:
        raise ValueError(f"not linear weights of this model: {', '.join(unknown[:5])}")
    for name, original in originals.items():
        if original.shape != views[name].shape:
            raise ValueError(f"{name}: original has shape {original.shape}, the model's weight "
                             f"{views[name].shape}")
        views[name][...] = original


@contextmanager
def fake_quantized(model: Any, fake_quant: FakeQuantFn, *,
                   include_lm_head: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """``with fake_quantized(llm.model, fn):`` runs the block with fake-quant weights and puts
    the float weights back afterwards, even on an error; yields the originals."""
    originals = fake_quantize_weights(model, fake_quant, include_lm_head=include_lm_head)
    try:
        yield originals
    finally:
        restore_weights(model, originals)
