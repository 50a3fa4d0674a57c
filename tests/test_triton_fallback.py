"""The GPU tier's fallback decisions, on any machine: the GPU probe and the package probe are
replaced, so every branch runs here."""

from __future__ import annotations

import pytest

from pytest_vllm_katas import triton_fallback


@pytest.fixture
def no_gpu_with_triton(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("KATAS_CUDA", "0")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_fallback, "find_spec", lambda name: object())
    return monkeypatch


def test_interpreter_is_turned_on_without_a_gpu(no_gpu_with_triton: pytest.MonkeyPatch) -> None:
    import os

    note = triton_fallback.configure_triton_interpreter()
    assert os.environ["TRITON_INTERPRET"] == "1"
    assert note is not None and "Triton interpreter" in note
    assert triton_fallback.gpu_req_skip_reason(["torch", "triton"]) is None


def test_an_explicit_zero_is_respected(no_gpu_with_triton: pytest.MonkeyPatch) -> None:
    no_gpu_with_triton.setenv("TRITON_INTERPRET", "0")
    assert triton_fallback.configure_triton_interpreter() is None
    reason = triton_fallback.gpu_req_skip_reason(["torch", "triton"])
    assert reason is not None and "interpreter is off" in reason


def test_nothing_changes_with_a_gpu(no_gpu_with_triton: pytest.MonkeyPatch) -> None:
    import os

    no_gpu_with_triton.setenv("KATAS_CUDA", "1")
    assert triton_fallback.configure_triton_interpreter() is None
    assert "TRITON_INTERPRET" not in os.environ


def test_gpu_only_kata_without_triton_needs_a_gpu(no_gpu_with_triton: pytest.MonkeyPatch) -> None:
    reason = triton_fallback.gpu_req_skip_reason(["torch"])
    assert reason is not None and reason.startswith("needs a CUDA GPU")
