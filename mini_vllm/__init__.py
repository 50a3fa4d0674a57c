"""mini_vllm — a small, deterministic, numpy-only engine with vLLM's control plane.

Real: paged KV block pool with prefix caching, continuous-batching scheduler with chunked
prefill and recompute preemption, sampler, engine loop. Toy: the model (logits are a pure
function of seed, last token and position) and the tokenizer (one byte, one token).

One concept per module, named after its vLLM v0.22.1 counterpart. See ``engine.py`` for the
injection points that let a learner's block pool, scheduler, sampler or step drive the engine.
"""

from __future__ import annotations

from mini_vllm.block_pool import (
    BlockPool,
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    hash_block_tokens,
)
from mini_vllm.engine import LLMEngine, RequestOutput, engine_step
from mini_vllm.kv_cache import KVCacheManager
from mini_vllm.model import ToyModel
from mini_vllm.request import Request, RequestStatus, SamplingParams
from mini_vllm.sampler import Sampler, apply_top_k, apply_top_p, softmax
from mini_vllm.scheduler import Scheduler, SchedulerContractError, SchedulerOutput
from mini_vllm.tokenizer import EOS_TOKEN_ID, VOCAB_SIZE, ByteTokenizer

__all__ = [
    "EOS_TOKEN_ID",
    "VOCAB_SIZE",
    "BlockPool",
    "ByteTokenizer",
    "FreeKVCacheBlockQueue",
    "KVCacheBlock",
    "KVCacheManager",
    "LLMEngine",
    "Request",
    "RequestOutput",
    "RequestStatus",
    "Sampler",
    "SamplingParams",
    "Scheduler",
    "SchedulerContractError",
    "SchedulerOutput",
    "ToyModel",
    "apply_top_k",
    "apply_top_p",
    "engine_step",
    "hash_block_tokens",
    "softmax",
]
