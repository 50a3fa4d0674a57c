"""Speculative decoding (phase 08): proposers, the rejection sampler, acceptance metrics.

Upstream twins: ``vllm/v1/spec_decode/`` (``ngram_proposer.py``, ``draft_model.py``,
``metrics.py``) and ``vllm/v1/sample/rejection_sampler.py``. Opt-in through
``LLMEngine(speculative_config=mini_vllm.config.SpeculativeConfig(...))``; ``engine.py`` says how
a step runs with it.
"""

from __future__ import annotations

from mini_vllm.spec_decode.draft_model import DraftModelProposer, truncated_model
from mini_vllm.spec_decode.metrics import SpecDecodingStats
from mini_vllm.spec_decode.ngram_proposer import NgramProposer
from mini_vllm.spec_decode.rejection_sampler import RejectionSampler, target_probs

__all__ = [
    "DraftModelProposer",
    "NgramProposer",
    "RejectionSampler",
    "SpecDecodingStats",
    "target_probs",
    "truncated_model",
]
