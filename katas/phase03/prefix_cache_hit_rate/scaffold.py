"""What the lab provides for kata 03-03: the shared-system-prompt workload and the result type.

The system prompt is 315 bytes; with the tiny model's byte tokenizer that is 315 tokens, and every
prompt shares its first 326 tokens (the system prompt plus ``"\\n\\nQuestion "``). vLLM's CPU
block is 128 tokens, so the shared part covers two full blocks and a bit: a hit needs a prefix
longer than one block, which is why the course's ~400-token system prompt survives the move from
16-token GPU blocks to 128-token CPU blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = "You are a meticulous assistant. Follow instructions carefully. " * 5
NUM_PROMPTS = 16
MAX_TOKENS = 4


def make_prompts(n: int = NUM_PROMPTS, system: str = SYSTEM_PROMPT) -> list[str]:
    """``n`` prompts: the shared system prompt, then a question of their own."""
    return [f"{system}\n\nQuestion {i}: what is {i}+{i}?" for i in range(n)]


def unshared_prompts(n: int = NUM_PROMPTS) -> list[str]:
    """The control: prompts as long as the shared ones but differing from the first token."""
    return [f"Question {i}: what is {i}+{i}?\n\n{SYSTEM_PROMPT}" for i in range(n)]


@dataclass(frozen=True)
class PrefixCacheRun:
    """What one batch of requests did to the prefix cache, as the engine reports it."""

    cached_tokens: list[int]  # per request, in prompt order: RequestOutput.num_cached_tokens
    queries: int  # tokens looked up in the cache during the run (vllm:prefix_cache_queries)
    hits: int  # of those, tokens found (vllm:prefix_cache_hits)
    output_token_ids: list[list[int]]  # per request, in prompt order
