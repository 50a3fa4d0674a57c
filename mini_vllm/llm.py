"""LLM: the offline entry point — a model directory in, generated text out.

Upstream twin: ``vllm/entrypoints/llm.py: LLM`` (``generate``, ``chat``). It loads the checkpoint
(``mini_vllm.models.loader``) and its tokenizer, sizes the paged KV cache from a memory budget,
and runs everything through :class:`~mini_vllm.engine.LLMEngine`::

    llm = LLM(path_to_smollm2)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(max_tokens=30, temperature=0.0))
    print(out[0].text)   # The capital of France is Paris.

``LLM.beam_search(prompts, BeamSearchParams(beam_width=4, max_tokens=20))`` runs vLLM's beam
search emulation on the same engine (``mini_vllm/beam_search.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mini_vllm.beam_search import BeamSearchOutput, BeamSearchParams, beam_search
from mini_vllm.engine import LLMEngine, RequestOutput
from mini_vllm.kv_cache import cdiv
from mini_vllm.models.loader import load_model
from mini_vllm.request import SamplingParams
from mini_vllm.tokenizer import get_tokenizer

Message = dict[str, str]


class LLM:
    """A model directory (``config.json`` + safetensors, tokenizer files optional) served offline.

    ``kv_cache_memory_gib`` sizes the pool of KV blocks, as vLLM's ``kv_cache_memory_bytes``;
    the pool always holds at least one ``max_model_len`` sequence. The other keywords go to
    :class:`LLMEngine` (``max_num_seqs``, ``max_num_batched_tokens``, ``enable_caching``...).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str | np.dtype = "float32",
        max_model_len: int | None = None,
        block_size: int = 16,
        kv_cache_memory_gib: float = 0.5,
        **engine_kwargs: Any,
    ) -> None:
        self.model_dir = Path(model)
        self.model = load_model(self.model_dir, dtype=dtype)
        self.tokenizer = get_tokenizer(self.model_dir)
        limit = self.model.max_model_len
        if max_model_len is not None and not 0 < max_model_len <= limit:
            raise ValueError(f"max_model_len must be in [1, {limit}] for this model "
                             f"(its max_position_embeddings), got {max_model_len}")
        self.max_model_len = max_model_len or limit
        bytes_per_block = (2 * self.model.num_layers * block_size * self.model.num_kv_heads
                           * self.model.head_dim * self.model.dtype.itemsize)
        num_blocks = max(int(kv_cache_memory_gib * (1 << 30)) // bytes_per_block,
                         cdiv(self.max_model_len, block_size) + 1)
        self.engine = LLMEngine(model=self.model, tokenizer=self.tokenizer,
                                max_model_len=self.max_model_len, block_size=block_size,
                                num_blocks=num_blocks, **engine_kwargs)

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        lora_request: Any = None,
    ) -> list[RequestOutput]:
        """Complete raw prompts (text or token ids); one output per prompt, in order.
        ``lora_request``: one ``mini_vllm.lora.LoRARequest`` for every prompt, or one per prompt
        (``None`` for the base model); the engine needs a ``lora_config``."""
        return self.engine.generate(prompts, sampling_params, lora_request=lora_request)

    def beam_search(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        params: BeamSearchParams,
    ) -> list[BeamSearchOutput]:
        """Beam search (upstream ``LLM.beam_search``): one ``BeamSearchOutput`` per prompt, its
        best ``params.beam_width`` sequences first; see :mod:`mini_vllm.beam_search`."""
        return beam_search(self.engine, prompts, params)

    def chat(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of ``{"role", "content"}``) or a list of them, through
        the model's chat template with the assistant turn opened."""
        if not hasattr(self.tokenizer, "apply_chat_template"):
            raise ValueError(f"{self.model_dir} has no chat template (no tokenizer.json): use "
                             f"generate() with a raw prompt")
        conversations = ([messages] if messages and isinstance(messages[0], dict)
                         else list(messages))
        prompts = [self.tokenizer.apply_chat_template(list(c), add_generation_prompt=True)
                   for c in conversations]
        return self.generate(prompts, sampling_params)
