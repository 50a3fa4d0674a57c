"""The per-user model cache: where converted checkpoints live, and how they are written safely.

No upstream twin as such: vLLM leaves caching to the Hugging Face hub library
(``huggingface_hub``'s cache under ``HF_HOME``); here nothing is downloaded from a hub, so the
cache only holds what this project builds or converts itself.

The cache is ``$KATAS_MODELS_DIR`` or the platform's user cache directory, never the repository.
A checkpoint is built in a scratch directory next to its target and published with one
``os.replace``; a ``katas-model.json`` marker inside says it is complete. Readers (and
pytest-xdist workers building the same model at once) therefore never see half a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

MODELS_DIR_ENV = "KATAS_MODELS_DIR"
MARKER = "katas-model.json"


def models_dir() -> Path:
    """Where converted checkpoints live: ``$KATAS_MODELS_DIR``, else the user cache directory."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vllm-katas" / "models"


@contextmanager
def building(target: Path) -> Iterator[Path]:
    """Yield a scratch directory next to ``target``; publish it with one atomic rename.

    Two processes may build the same model at once; the loser's copy is discarded, so readers
    never see a half-written directory. The caller writes ``MARKER`` last.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield scratch
        scratch.chmod(0o755)  # mkdtemp makes it private; a cache dir should read like any other
        try:
            os.replace(scratch, target)
        except OSError:
            if not (target / MARKER).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def progress(label: str, done: int, total: int, *, stream: TextIO | None = None,
             width: int = 30) -> None:
    """A one-line progress bar on stderr (no dependency on tqdm).

    Redrawn in place on a terminal; into a log (CI, a pipe) only the finished line is written,
    so a log does not fill with hundreds of carriage-return updates.
    """
    stream = stream or sys.stderr
    if done < total and not getattr(stream, "isatty", lambda: False)():
        return
    frac = done / total if total else 1.0
    bar = "#" * int(frac * width)
    end = "\n" if done >= total else ""
    stream.write(f"\r{label:<28} [{bar:<{width}}] {frac:6.1%}{end}")
    stream.flush()
