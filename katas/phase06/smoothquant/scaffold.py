"""What the lab gives you: a relative-error ruler, and real (X, W) pairs from SmolLM2.

``capture_linear_inputs`` runs SmolLM2-135M through ``mini_vllm`` (numpy, float32) on a few
prompts and records what actually goes into three linear layers of each decoder layer you ask
for. Nothing in ``mini_vllm`` is modified: for the length of one ``generate`` call, each chosen
layer's ``self_attn`` and ``mlp`` are wrapped in objects that copy their input and then call the
original.

``python -m katas.phase06.smoothquant.scaffold`` prints the README's table for all 30 layers
with *your* ``smoothquant.py`` (``--module`` names another module with the same functions).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Water boils at",
)
ALPHA = 0.5


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``||approx - exact|| / ||exact||`` (Frobenius norms): the kata's one error measure."""
    approx, exact = np.asarray(approx, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


@dataclass(frozen=True)
class LinearInput:
    """One linear layer of the real model and what went into it.

    ``x`` is ``[tokens, in_features]`` (every prompt token, prompts back to back), ``w`` is the
    layer's weight in checkpoint layout ``[out_features, in_features]``; both float64 copies of
    the model's float32 numbers, so ``x @ w.T`` is the layer's output (no bias in Llama).
    """

    name: str  # "layers.2.qkv_proj", "layers.2.gate_up_proj" or "layers.2.down_proj"
    x: np.ndarray
    w: np.ndarray


def load_llama_prefix(model_dir: str | Path, num_layers: int | None = None) -> Any:
    """A ``mini_vllm`` engine over the first ``num_layers`` decoder layers of the checkpoint in
    ``model_dir`` (all of them when ``None``), float32, prefix caching off.

    Layer ``i``'s inputs do not depend on any later layer, so a prefix of the model captures
    exactly what the whole model would, and loads in a fraction of the time. (Its logits are
    meaningless; only activations are read.)
    """
    from mini_vllm.engine import LLMEngine
    from mini_vllm.models.llama import LlamaForCausalLM
    from mini_vllm.models.loader import load_config
    from mini_vllm.tokenizer import get_tokenizer

    config = load_config(model_dir)
    total = int(config["num_hidden_layers"])
    keep = total if num_layers is None else int(num_layers)
    if not 1 <= keep <= total:
        raise ValueError(f"num_layers must be in [1, {total}], got {num_layers}")
    # Untied and never loaded, the LM head stays zero: no 113 MB transposed copy of the
    # embedding to build for logits nobody reads.
    model = LlamaForCausalLM({**config, "num_hidden_layers": keep, "tie_word_embeddings": False},
                             np.float32)
    layer_of = re.compile(r"model\.layers\.(\d+)\.")
    tensors = _float32_memmaps(model_dir)
    if tensors:
        # Only the prompts' rows of the embedding are ever read: keep it a memory map.
        model.model.embed_tokens = tensors.pop(EMBEDDING)
        model.load_weights((n, t) for n, t in tensors.items()
                           if (m := layer_of.match(n)) is not None and int(m.group(1)) < keep)
    else:  # not a float32 checkpoint: mini_vllm's reader widens bfloat16 and friends
        from mini_vllm.models.loader import iterate_weights

        model.load_weights((n, t) for n, t in iterate_weights(model_dir) if n != "lm_head.weight"
                           and ((m := layer_of.match(n)) is None or int(m.group(1)) < keep))
    return LLMEngine(model=model, tokenizer=get_tokenizer(model_dir), max_model_len=128,
                     num_blocks=64, block_size=16, enable_caching=False)


EMBEDDING = "model.embed_tokens.weight"


def _float32_memmaps(model_dir: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as a read-only memory map; empty unless every tensor is
    float32. (A safetensors file: an 8-byte little-endian header length, a JSON header giving
    each tensor's dtype, shape and byte range, then the bytes.)"""
    from mini_vllm.models.loader import weight_files

    maps: dict[str, np.ndarray] = {}
    for path in weight_files(model_dir):
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        for name, info in header.items():
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if info["dtype"] != "F32" or end - begin != 4 * int(np.prod(shape)):
                return {}
            maps[name] = np.memmap(path, np.dtype("<f4"), "r", 8 + header_len + begin, shape)
    return maps


class _Recorder:
    """Calls ``inner`` unchanged after copying its positional argument ``arg`` into ``sink``."""

    def __init__(self, inner: Callable[..., Any], arg: int, sink: list[np.ndarray]) -> None:
        self.inner, self.arg, self.sink = inner, arg, sink

    def __call__(self, *args: Any) -> Any:
        self.sink.append(np.array(args[self.arg], dtype=np.float64))
        return self.inner(*args)


def capture_linear_inputs(engine: Any, layers: Sequence[int],
                          prompts: Sequence[str] = PROMPTS) -> list[LinearInput]:
    """Prefill ``prompts`` once (one generated token each) and return, for each decoder layer in
    ``layers``, in that order: its ``qkv_proj`` (input: the RMS-normed hidden state that feeds q,
    k and v), its ``gate_up_proj`` (the normed hidden state that feeds the MLP) and its
    ``down_proj`` (the SwiGLU product ``silu(gate) * up``)."""
    from mini_vllm import SamplingParams
    from mini_vllm.models.llama import silu_and_mul

    decoder = engine.model.model.layers
    sinks: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {i: ([], []) for i in layers}
    originals = {i: (decoder[i].self_attn, decoder[i].mlp) for i in layers}
    try:
        for i, (attn_in, mlp_in) in sinks.items():
            # LlamaAttention(positions, hidden_states, ...) and LlamaMLP(x).
            decoder[i].self_attn = _Recorder(decoder[i].self_attn, 1, attn_in)
            decoder[i].mlp = _Recorder(decoder[i].mlp, 0, mlp_in)
        engine.generate(list(prompts), SamplingParams(max_tokens=1, temperature=0.0))
    finally:
        for i, (attn, mlp) in originals.items():
            decoder[i].self_attn, decoder[i].mlp = attn, mlp

    pairs: list[LinearInput] = []
    for i in layers:
        attn_in, mlp_in = (np.concatenate(chunks) for chunks in sinks[i])
        layer = decoder[i]
        # mini_vllm keeps projections as [in, out]; the kata's weights are [out, in].
        qkv_w = layer.self_attn.qkv_proj.T.astype(np.float64)
        gate_up_w = layer.mlp.gate_up_proj.T.astype(np.float64)
        down_w = layer.mlp.down_proj.T.astype(np.float64)
        down_in = silu_and_mul(mlp_in @ gate_up_w.T)
        pairs += [LinearInput(f"layers.{i}.qkv_proj", attn_in, qkv_w),
                  LinearInput(f"layers.{i}.gate_up_proj", mlp_in, gate_up_w),
                  LinearInput(f"layers.{i}.down_proj", down_in, down_w)]
    return pairs


def smoothing_table(impl: ModuleType, pairs: Sequence[LinearInput], alpha: float = ALPHA
                    ) -> list[tuple[str, int, float, float, float, float]]:
    """Per pair: ``(name, tokens, outlier ratio, W8A8 error, W8A8 error after smoothing,
    outlier ratio after smoothing)``, computed with ``impl``'s functions."""
    rows = []
    for pair in pairs:
        exact = pair.x @ pair.w.T
        x_hat, w_hat, _ = impl.smooth(pair.x, pair.w, alpha)
        rows.append((pair.name, pair.x.shape[0], impl.channel_outlier_ratio(pair.x),
                     relative_error(impl.w8a8_matmul(pair.x, pair.w), exact),
                     relative_error(impl.w8a8_matmul(x_hat, w_hat), exact),
                     impl.channel_outlier_ratio(x_hat)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the README's table (every layer of SmolLM2), measured with your functions."""
    from pytest_vllm_katas.live.models import (
        smollm2_available,
        smollm2_missing_reason,
        smollm2_path,
    )

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--module", default="katas.phase06.smoothquant.smoothquant",
                        help="the module whose functions to measure (default: yours)")
    parser.add_argument("--alpha", type=float, default=ALPHA)
    args = parser.parse_args(argv)
    if not smollm2_available():
        print(smollm2_missing_reason())
        return 1
    module = importlib.import_module(args.module)
    engine = load_llama_prefix(smollm2_path())
    pairs = capture_linear_inputs(engine, range(len(engine.model.model.layers)))
    print(f"alpha = {args.alpha}, {pairs[0].x.shape[0]} tokens from {len(PROMPTS)} prompts")
    print("| layer | linear | ratio | W8A8 error | after smoothing | ratio after |")
    print("|---|---|---:|---:|---:|---:|")
    for name, _, ratio, before, after, ratio_after in smoothing_table(module, pairs, args.alpha):
        _, index, linear = name.split(".")
        print(f"| {index} | {linear} | {ratio:.1f} | {before:.2%} | {after:.2%} | "
              f"{ratio_after:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
