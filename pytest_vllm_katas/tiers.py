"""Hardware tiers: the ``cpu_ok`` / ``gpu_opt`` / ``gpu_req`` markers and what each one gates.

- ``cpu_ok`` always runs.
- ``gpu_opt`` runs everywhere; its ``device`` fixture is ``cpu``, plus ``cuda`` when a GPU exists.
- ``gpu_req`` runs on CUDA; without a GPU a Triton kata runs under the Triton interpreter, and
  anything else is skipped with a reason that says what is missing and how to get it.

Every kata test module carries exactly one tier marker, and it must agree with ``kata.toml``;
a module that breaks this is a collection error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import triton_fallback
from .catalog import REQUIREMENTS, TIERS, Kata, KataError, kata_for_path, readable_kata_for_path
from .hardware import cuda_present
from .outcomes import KataProblem

MARKER_HELP = {
    "cpu_ok": "runs anywhere on CPU; the tier of most katas",
    "gpu_opt": "runs everywhere; the `device` fixture adds 'cuda' when a GPU is present",
    "gpu_req": "needs a CUDA GPU; Triton katas run under the Triton interpreter without one",
}


def pytest_configure(config: pytest.Config) -> None:
    for name in TIERS:
        config.addinivalue_line("markers", f"{name}: {MARKER_HELP[name]}")


def tier_of(node: pytest.Item | pytest.Collector) -> list[str]:
    return [m.name for m in node.iter_markers() if m.name in TIERS]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report: pytest.CollectReport = yield
    if not isinstance(collector, pytest.Module) or not report.passed:
        return report
    try:
        kata = kata_for_path(Path(collector.path))
    except KataError as exc:
        # One failing stand-in instead of a collection error, which would stop the whole run.
        report.result = [KataProblem.from_parent(collector, name="kata.toml",
                                                 problem=str(exc))]
        return report
    if kata is None or collector.path.name != kata.test_path.name:
        return report
    tiers = [m.name for m in collector.own_markers if m.name in TIERS]
    if len(tiers) != 1:
        found = ", ".join(tiers) if tiers else "none"
        return _collection_error(
            report,
            f"{kata.id}/{collector.path.name}: a kata test module needs exactly one tier marker "
            f"(pytestmark = pytest.mark.cpu_ok | gpu_opt | gpu_req); found {found}",
        )
    if tiers[0] != kata.tier:
        return _collection_error(
            report,
            f"{kata.id}/{collector.path.name}: marked {tiers[0]} but kata.toml says tier = "
            f"{kata.tier!r}; make them agree",
        )
    return report


def _collection_error(report: pytest.CollectReport, message: str) -> pytest.CollectReport:
    report.outcome = "failed"
    report.longrepr = message
    report.result = []
    return report


def missing_requirements_reason(kata: Kata) -> str | None:
    """"needs torch, triton (not installed): <install command>" for what is missing, or None."""
    missing = kata.missing_requirements()
    if not missing:
        return None
    if "triton" in missing:  # the triton extra brings torch too: one command is enough
        missing_hints = ["triton"] + [r for r in missing if r not in ("torch", "triton")]
    else:
        missing_hints = missing
    hints = dict.fromkeys(REQUIREMENTS[r][1] for r in missing_hints)  # ordered, de-duplicated
    return f"needs {', '.join(missing)} (not installed): {' ; '.join(hints)}"


def skip_reason(kata: Kata) -> str | None:
    """Why ``kata`` cannot run on this machine, with how to fix it; None when it can."""
    reason = missing_requirements_reason(kata)
    if reason is None and kata.tier == "gpu_req" and not cuda_present():
        reason = triton_fallback.gpu_req_skip_reason(list(kata.requires))
    return reason


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Skips are attached as markers (not raised from a hook) so that the report points at the
    # test itself, and the reason is computed once per kata.
    reasons: dict[str, str | None] = {}
    for item in items:
        kata = readable_kata_for_path(Path(item.path))
        if kata is None:
            continue
        if kata.id not in reasons:
            reasons[kata.id] = skip_reason(kata)
        if reasons[kata.id]:
            item.add_marker(pytest.mark.skip(reason=reasons[kata.id]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("device") == "cuda":
        if not _torch_sees_cuda():
            pytest.skip("device=cuda: an NVIDIA device is visible but torch has no CUDA support")


def _torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        devices = ["cpu", "cuda"] if cuda_present() else ["cpu"]
        metafunc.parametrize("device", devices, ids=[f"device_{d}" for d in devices])
