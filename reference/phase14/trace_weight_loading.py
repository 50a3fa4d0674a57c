"""Reference for kata 14-02 — trace weight loading: predict vLLM's mapping of a Llama checkpoint
from 14-03's functions, then watch vLLM's ``load_weights`` and weight loaders do it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from katas.phase14.trace_weight_loading.scaffold import Capture, Mapping
from reference.phase14.checkpoint_surgery import map_weight_name, qkv_slices

_MISSING = object()


def _rank_heads(config: dict[str, Any], tp_size: int) -> tuple[int, int, int]:
    """(query heads, KV heads, head_dim) one rank of ``tp_size`` holds."""
    if isinstance(tp_size, bool) or not isinstance(tp_size, int) or tp_size < 1:
        raise ValueError(f"tp_size must be an integer >= 1, got {tp_size!r}")
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    if heads % tp_size:
        raise ValueError(f"num_attention_heads ({heads}) does not split over tp_size {tp_size}")
    if tp_size <= kv:
        if kv % tp_size:
            raise ValueError(f"num_key_value_heads ({kv}) does not split over tp_size {tp_size}")
        kv_rank = kv // tp_size
    elif tp_size % kv:
        raise ValueError(f"tp_size {tp_size} is neither a divisor nor a multiple of "
                         f"num_key_value_heads ({kv})")
    else:
        kv_rank = 1  # replicated: tp_size / kv ranks share each KV head
    return heads // tp_size, kv_rank, head_dim


def _rank_intermediate(config: dict[str, Any], tp_size: int) -> int:
    inter = config["intermediate_size"]
    if inter % tp_size:
        raise ValueError(f"intermediate_size ({inter}) does not split over tp_size {tp_size}")
    return inter // tp_size


def fused_shapes(config: dict[str, Any], tp_size: int = 1) -> dict[str, tuple[int, int]]:
    """Shape of one rank's ``qkv_proj`` and ``gate_up_proj`` weights for ``config``."""
    heads, kv, hd = _rank_heads(config, tp_size)
    hidden = config["hidden_size"]
    return {"qkv_proj": ((heads + 2 * kv) * hd, hidden),
            "gate_up_proj": (2 * _rank_intermediate(config, tp_size), hidden)}


def predict_mapping(names: Iterable[str], config: dict[str, Any],
                    tp_size: int = 1) -> list[Mapping]:
    """One ``Mapping`` per checkpoint name, in order: where vLLM will load it."""
    heads, kv, hd = _rank_heads(config, tp_size)
    slices = qkv_slices(heads, kv, hd)
    inter = _rank_intermediate(config, tp_size)
    out = []
    for name in names:
        param, shard_id = map_weight_name(name)
        if shard_id is None:
            rows = None
        elif shard_id in ("q", "k", "v"):
            rows = (slices[shard_id].start, slices[shard_id].stop)
        else:
            rows = (shard_id * inter, (shard_id + 1) * inter)
        out.append(Mapping(name, param, shard_id, rows))
    return out


@contextmanager
def tracing(model_cls: type, default_loader: Callable[..., Any]) -> Iterator[list[Capture]]:
    """While the block runs, every ``model_cls.load_weights`` call records one ``Capture`` per
    weight-loader call into the list yielded; on exit the class is as it was."""
    captures: list[Capture] = []
    had_own = "load_weights" in vars(model_cls)
    own = vars(model_cls).get("load_weights")
    original = model_cls.load_weights

    def traced_load_weights(self: Any, weights: Iterable[tuple[str, Any]]) -> Any:
        current: list[str | None] = [None]

        def named(stream: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
            for name, tensor in stream:
                current[0] = name  # the tensor the loaders below are about to place
                yield name, tensor

        def wrap(param_name: str, loader: Callable[..., Any]) -> Callable[..., Any]:
            def traced(param: Any, loaded_weight: Any, *args: Any, **kwargs: Any) -> Any:
                shard_id = args[0] if args else next(iter(kwargs.values()), None)
                captures.append(Capture(str(current[0]), param_name, shard_id,
                                        tuple(int(d) for d in loaded_weight.shape)))
                return loader(param, loaded_weight, *args, **kwargs)
            return traced

        saved = []
        for param_name, param in self.named_parameters():
            # getattr, not vars(): vLLM's own parameter classes serve it through a property
            before = getattr(param, "weight_loader", _MISSING)
            loader = default_loader if before is _MISSING else before
            param.weight_loader = wrap(param_name, loader)
            saved.append((param, before))
        try:
            return original(self, named(weights))
        finally:
            for param, before in saved:
                if before is _MISSING:
                    del param.weight_loader
                else:
                    param.weight_loader = before

    model_cls.load_weights = traced_load_weights
    try:
        yield captures
    finally:
        if had_own:
            model_cls.load_weights = own
        else:
            del model_cls.load_weights
