"""The ``tiny_llama`` fixture: mini_vllm's seeded tiny Llama, a real network for engine tests.

Katas that run the whole engine on a learner's part (block pool, scheduler, stop check, engine
step) run it on this model as well as on the toy. The toy ignores K/V; this model attends over
the paged cache, so a memory bug changes its tokens (or the model runner names the bad slot).

float64, so that chunked and unchunked prefill, cache hits and recomputation give the very same
tokens. Built once per session (a few hundred KB, numpy only) into the model cache.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_llama() -> Any:
    """A float64 ``mini_vllm.models.llama.LlamaForCausalLM``: ``LLMEngine(model=tiny_llama)``."""
    import numpy as np

    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_llama import build_tiny_llama

    return load_model(build_tiny_llama(), dtype=np.float64)
