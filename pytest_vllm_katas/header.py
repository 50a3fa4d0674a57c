"""The report header: what is graded, and on what software and hardware."""

from __future__ import annotations

import platform

import pytest

from . import triton_fallback
from .hardware import cuda_present, versions
from .impl import selected_impl

NOTE_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # Must run before any test imports triton: the interpreter is chosen at triton's import.
    note = triton_fallback.configure_triton_interpreter()
    if note:
        config.stash[NOTE_KEY] = note


def pytest_report_header(config: pytest.Config) -> list[str]:
    impl = selected_impl(config)
    graded = "your code in katas/" if impl == "mine" else "the reference solutions"
    found = " | ".join(f"{name} {version or 'absent'}" for name, version in versions().items())
    lines = [
        f"vllm-katas: impl={impl} (grading {graded})",
        f"vllm-katas: python {platform.python_version()} | {found} | "
        f"cuda {'yes' if cuda_present() else 'no'}",
    ]
    if NOTE_KEY in config.stash:
        lines.append(f"vllm-katas: {config.stash[NOTE_KEY]}")
    return lines
