"""mini_vllm on SmolLM2-135M-Instruct: a real instruction-tuned model, offline, numpy only.

Skipped until ``katas models fetch`` has converted the checkpoint. The comparison with Hugging
Face transformers needs the torch extra (``pip install -e ".[torch]"``).
"""

from __future__ import annotations

import pytest

from mini_vllm import LLM, SamplingParams
from pytest_vllm_katas.invariants import assert_same_outputs
from pytest_vllm_katas.live.models import (
    FRANCE_QUESTION,
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)

pytestmark = pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "To make a cup of tea, first",
    "Water boils at",
    "The largest planet in the solar system is",
    "Machine learning is",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(smollm2_path(), max_model_len=512)


def test_answers_the_france_question(llm: LLM) -> None:
    out = llm.chat([{"role": "user", "content": FRANCE_QUESTION}],
                   SamplingParams(max_tokens=30, temperature=0.0))[0]
    assert "Paris" in out.text, f"SmolLM2 through mini_vllm answered {out.text!r}"
    assert out.finish_reason == "stop", "the answer should end with the model's EOS"


def test_prompt_longer_than_max_model_len_is_refused(llm: LLM) -> None:
    with pytest.raises(ValueError, match="max_model_len is 512"):
        llm.generate(["word " * 600], SamplingParams(max_tokens=4))


def test_greedy_tokens_equal_transformers(llm: LLM) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32)
    # ignore_eos on both sides: min_new_tokens would instead forbid EOS (a different argmax),
    # so generation simply does not stop at EOS.
    hf.generation_config.eos_token_id = None
    expected = []
    for prompt in PROMPTS:
        ids = torch.tensor([llm.tokenizer.encode(prompt)])
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        expected.append(out[0, ids.shape[1]:].tolist())
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    got = [o.output_token_ids for o in llm.generate(PROMPTS, params)]
    assert_same_outputs(expected, got, labels=("transformers", "mini_vllm"))
