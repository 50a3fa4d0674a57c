"""mini_vllm — a small, deterministic, numpy-only engine with vLLM's control plane.

Real: paged KV block pool with prefix caching, continuous-batching scheduler with chunked
prefill and recompute preemption, a model runner that writes K/V through the slot mapping and
attends through block tables, a numpy Llama (``mini_vllm.models``) loading real checkpoints,
sampler, engine loop, and the ``LLM`` entry point. The course's toy model (logits a pure function
of seed, last token and position) and byte tokenizer stay the default, behind the same runner.

One concept per module, named after its vLLM v0.22.1 counterpart. See ``engine.py`` for the
injection points that let a learner's block pool, scheduler, sampler or step drive the engine.
"""

from __future__ import annotations

from mini_vllm.beam_search import BeamSearchParams, beam_search
from mini_vllm.block_pool import (
    BlockPool,
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    hash_block_tokens,
)
from mini_vllm.config import ControlPlanePolicy, SpeculativeConfig
from mini_vllm.engine import LLMEngine, RequestOutput, engine_step
from mini_vllm.kv_cache import KVCacheManager
from mini_vllm.model import ToyModel
from mini_vllm.model_runner import KVCacheError, ModelRunner
from mini_vllm.request import Request, RequestStatus, SamplingParams
from mini_vllm.sampler import Sampler, apply_top_k, apply_top_p, softmax
from mini_vllm.scheduler import Scheduler, SchedulerContractError, SchedulerOutput
from mini_vllm.tokenizer import EOS_TOKEN_ID, VOCAB_SIZE, ByteTokenizer


def __getattr__(name: str) -> type:
    # LLM loads real checkpoints (safetensors, tokenizers); importing it lazily keeps
    # `import mini_vllm` -- and so a learner's one-kata test run -- as quick as before.
    if name == "LLM":
        from mini_vllm.llm import LLM

        return LLM
    raise AttributeError(f"module 'mini_vllm' has no attribute {name!r}")

__all__ = [
    "EOS_TOKEN_ID",
    "VOCAB_SIZE",
    "BeamSearchParams",
    "BlockPool",
    "ByteTokenizer",
    "ControlPlanePolicy",
    "FreeKVCacheBlockQueue",
    "KVCacheError",
    "KVCacheBlock",
    "KVCacheManager",
    "LLM",
    "LLMEngine",
    "ModelRunner",
    "Request",
    "RequestOutput",
    "RequestStatus",
    "Sampler",
    "SamplingParams",
    "Scheduler",
    "SchedulerContractError",
    "SchedulerOutput",
    "SpeculativeConfig",
    "ToyModel",
    "apply_top_k",
    "apply_top_p",
    "beam_search",
    "engine_step",
    "hash_block_tokens",
    "softmax",
]
