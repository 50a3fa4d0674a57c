"""The GPU tier without a GPU: run Triton katas under the Triton interpreter.

Triton ships an interpreter that executes ``@triton.jit`` kernels on CPU tensors, one program at
a time, with numpy. It is chosen by ``TRITON_INTERPRET=1``, which Triton reads when a kernel is
decorated, so it must be in the environment before the first kata module (and, to be safe,
Triton itself) is imported. The plugin calls :func:`configure_triton_interpreter` from
``pytest_configure`` and :func:`gpu_req_skip_reason` when a ``gpu_req`` test is set up on a
machine with no visible NVIDIA GPU.

Nothing here imports torch or triton: the plugin must stay cheap to import, and importing
triton here would defeat the point (the variable has to be set first).
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

from .hardware import cuda_present

ENV_VAR = "TRITON_INTERPRET"
_TRUTHY = ("1", "true", "yes", "on")


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET`` asks Triton to interpret kernels on the CPU."""
    return os.environ.get(ENV_VAR, "").strip().lower() in _TRUTHY


def configure_triton_interpreter() -> str | None:
    """Turn the Triton interpreter on when no GPU is visible; return a note for the report.

    Sets ``TRITON_INTERPRET=1`` only when all of these hold: no NVIDIA GPU is visible, the
    variable is unset (a user's explicit choice, even ``0``, is kept), and triton is installed
    (found with ``find_spec``, never imported). Returns one line for the report header, or None
    when there is nothing to say (a GPU is present, or triton is absent: its katas skip with an
    install hint instead).
    """
    if cuda_present() or find_spec("triton") is None:
        return None
    if ENV_VAR in os.environ:
        if interpreter_enabled():
            return (
                f"triton: {ENV_VAR}={os.environ[ENV_VAR]} set by you; gpu_req Triton katas "
                "run under the Triton interpreter on CPU (slow, small sizes)"
            )
        return None
    os.environ[ENV_VAR] = "1"
    note = (
        f"triton: no CUDA GPU found; set {ENV_VAR}=1, so gpu_req Triton katas run under the "
        "Triton interpreter on CPU (slow, small sizes)"
    )
    if "triton" in sys.modules:
        # Kernels decorated before this point stay compiled for a GPU that is not there.
        note += "; warning: triton was imported before the plugin configured it"
    return note


def gpu_req_skip_reason(requires: list[str]) -> str | None:
    """Why a ``gpu_req`` kata cannot run on this machine without a GPU, or None when it can.

    Called only when no NVIDIA GPU is visible and the kata's packages are installed (the tier
    gate reports missing packages first). None means: run under the Triton interpreter. A kata
    that needs a GPU for more than Triton (CUDA graphs, say) is skipped.
    """
    if "triton" not in requires:
        return "needs a CUDA GPU (none found): run this kata on a machine with an NVIDIA GPU"
    if interpreter_enabled():
        return None
    return (
        f"no CUDA GPU found and the Triton interpreter is off ({ENV_VAR}="
        f"{os.environ.get(ENV_VAR, '')!r}): unset it to let the plugin turn the interpreter on, "
        f"or run with {ENV_VAR}=1"
    )
