"""mini_vllm.LLM: a model directory in, text out; bad directories and prompts refused clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mini_vllm import LLM, LLMEngine, SamplingParams
from mini_vllm.models.tiny_llama import build_tiny_llama
from mini_vllm.tests.builders import greedy


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return build_tiny_llama()


def test_generate_text_with_the_tiny_llama(tiny_dir: Path, tiny_llama) -> None:
    llm = LLM(tiny_dir, dtype="float64", max_model_len=64)
    out = llm.generate(["hello world"], greedy(6))[0]
    expected = LLMEngine(model=tiny_llama).generate(["hello world"], greedy(6))[0]
    assert out.output_token_ids == expected.output_token_ids
    assert out.text == llm.tokenizer.decode(out.output_token_ids)
    assert llm.engine.num_blocks * llm.engine.block_size >= 64, "the pool fits one full sequence"


def test_kv_cache_is_sized_from_the_memory_budget(tiny_dir: Path) -> None:
    llm = LLM(tiny_dir, kv_cache_memory_gib=4 / 1024)  # 4 MiB: more than one full sequence
    model = llm.model
    per_block = 2 * model.num_layers * 16 * model.num_kv_heads * model.head_dim * 4
    assert llm.engine.num_blocks == (4 << 20) // per_block
    key_cache, _ = llm.engine.model_runner.kv_caches[0]
    assert key_cache.shape == (llm.engine.num_blocks, 16, model.num_kv_heads, model.head_dim)
    assert key_cache.dtype == np.float32


def test_chat_needs_a_chat_template(tiny_dir: Path) -> None:
    llm = LLM(tiny_dir)
    with pytest.raises(ValueError, match="no chat template"):
        llm.chat([{"role": "user", "content": "hi"}])


def test_prompt_past_max_model_len_is_refused_and_others_still_run(tiny_dir: Path) -> None:
    llm = LLM(tiny_dir, max_model_len=32)
    with pytest.raises(ValueError, match="40 tokens long, but max_model_len is 32"):
        llm.generate(["S" * 40], greedy(2))
    with pytest.raises(ValueError, match=r"= 36 exceeds max_model_len \(32\)"):
        llm.generate(["S" * 20], greedy(16))
    assert len(llm.generate(["S" * 20], greedy(12))[0].output_token_ids) == 12


def test_max_model_len_beyond_the_model_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"max_model_len must be in \[1, 4096\]"):
        LLM(tiny_dir, max_model_len=5000)


def test_token_ids_outside_the_vocabulary_are_refused(tiny_dir: Path) -> None:
    llm = LLM(tiny_dir)
    with pytest.raises(ValueError, match=r"prompt\[1\] must be an int token id in \[0, 257\)"):
        llm.generate([[1, 300]], SamplingParams(max_tokens=2))


@pytest.mark.parametrize("damage", ["truncated weights", "no config", "garbled config"])
def test_a_corrupted_model_directory_is_a_value_error_naming_the_file(
    tiny_dir: Path, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_dir, broken)
    if damage == "truncated weights":
        data = (broken / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
        culprit = "model.safetensors"
    elif damage == "no config":
        (broken / "config.json").unlink()
        culprit = "config.json"
    else:
        (broken / "config.json").write_text("{not json")
        culprit = "config.json"
    with pytest.raises(ValueError, match=culprit):
        LLM(broken)
