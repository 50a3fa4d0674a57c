from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vllm_katas.live import models


def test_models_dir_follows_the_environment_variable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "cache"))
    assert models.models_dir() == tmp_path / "cache"
    assert models.smollm2_path().parent == tmp_path / "cache"


def test_models_dir_defaults_to_the_user_cache(monkeypatch) -> None:
    monkeypatch.delenv(models.MODELS_DIR_ENV, raising=False)
    assert models.models_dir().parts[-2:] == ("vllm-katas", "models")


def test_tiny_spec_refuses_heads_the_cpu_backend_cannot_run() -> None:
    with pytest.raises(AssertionError, match="head_dim"):
        models.TinyLlamaSpec(hidden_size=64, num_attention_heads=4)  # head_dim 16


def test_tiny_spec_digest_names_the_checkpoint() -> None:
    assert models.TinyLlamaSpec().digest() == models.TinyLlamaSpec().digest()
    assert models.TinyLlamaSpec(seed=1).digest() != models.TinyLlamaSpec().digest()


def test_missing_smollm2_reason_carries_the_fetch_command(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    assert not models.smollm2_available()
    assert models.FETCH_COMMAND in models.smollm2_missing_reason()


@pytest.fixture
def built_twice(monkeypatch, tmp_path: Path) -> tuple[Path, Path]:
    # The builder needs no torch (core install); reading the result back with transformers does.
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "a"))
    a = models.build_tiny_llama()
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "b"))
    b = models.build_tiny_llama()
    return a, b


def test_tiny_llama_is_bit_identical_across_builds(built_twice: tuple[Path, Path]) -> None:
    a, b = built_twice
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tiny_tokenizer_is_one_byte_one_token(built_twice: tuple[Path, Path]) -> None:
    AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer  # noqa: N806

    tok = AutoTokenizer.from_pretrained(built_twice[0])
    text = "hello world, café"
    ids = tok(text).input_ids
    assert ids == list(text.encode()), "ids must be the UTF-8 bytes, with no BOS"
    assert tok.decode(ids) == text
    assert tok.eos_token_id == models.EOS_TOKEN_ID == 256
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
