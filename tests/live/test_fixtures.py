"""The live plugin module: the `live` marker follows the engine fixture, and engines stay lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_vllm_katas.live import models
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines


def test_live_marker_is_registered_and_follows_the_engine_fixture(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_probe="""
        def test_starts_an_engine(live_engines):
            pass

        def test_pure_arithmetic():
            pass
        """
    )
    live = pytester.runpytest("-m", "live", "--collect-only", "-q", "--strict-markers")
    live.stdout.fnmatch_lines(["*test_starts_an_engine*"])
    assert "test_pure_arithmetic" not in live.stdout.str()
    fast = pytester.runpytest("-m", "not live", "--collect-only", "-q", "--strict-markers")
    fast.stdout.fnmatch_lines(["*test_pure_arithmetic*"])
    assert "test_starts_an_engine" not in fast.stdout.str()
    markers = pytester.runpytest("--markers").stdout.str()
    assert "@pytest.mark.live:" in markers


def test_asking_for_engines_starts_none() -> None:
    engines = LiveEngines(max_alive=1)
    assert engines.starts == [] and engines.max_alive == 1
    assert EngineConfig() == EngineConfig(model="tiny", kv_cache_gib=1), "equal configs share"


def test_the_models_command_still_answers_path() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest_vllm_katas.live.models", "path"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(models.models_dir())
