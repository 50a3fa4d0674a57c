"""What this machine is, for benchmark records and ``katas doctor``: GPU, driver, CUDA, versions.

Asked without importing torch, triton or vllm: the GPU comes from ``nvidia-smi`` in a
subprocess (with a timeout), the versions from installed distributions.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from functools import lru_cache

from .hardware import cuda_present, versions


@lru_cache(maxsize=1)
def nvidia_smi() -> dict[str, str] | None:
    """``{"gpu": name, "driver": version, "cuda": version}`` from nvidia-smi, or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        query = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15, check=True,
        )
        banner = subprocess.run([exe], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (query.stdout.strip().splitlines() or [""])[0]
    name, _, driver = (part.strip() for part in first.partition(","))
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner.stdout)
    count = len([line for line in query.stdout.splitlines() if line.strip()])
    return {"gpu": name, "gpu_count": str(count), "driver": driver,
            "cuda": cuda.group(1) if cuda else ""}


def machine_info() -> dict[str, object]:
    """Versions and hardware, as recorded with every benchmark and in ``katas doctor``."""
    smi = nvidia_smi() if cuda_present() else None
    return {
        "python": platform.python_version(),
        **{name: version for name, version in versions().items()},
        "cuda_visible": cuda_present(),
        "gpu": smi["gpu"] if smi else None,
        "gpu_count": int(smi["gpu_count"]) if smi else 0,
        "nvidia_driver": smi["driver"] if smi else None,
        "cuda": smi["cuda"] if smi else None,
    }
