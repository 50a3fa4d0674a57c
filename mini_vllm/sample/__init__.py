"""Logits processing ahead of the draw: penalties, bad words and the built-in logits processors.

Upstream twin: ``vllm/v1/sample/`` (``ops/penalties.py``, ``ops/bad_words.py``,
``logits_processor/builtin.py``). Each function here takes one logits row and returns a new row
(never mutating its input); :class:`mini_vllm.sampler.Sampler` calls them in vLLM's order.
"""

from mini_vllm.sample.bad_words import apply_bad_words
from mini_vllm.sample.logits_processors import apply_logit_bias, apply_min_p, apply_min_tokens
from mini_vllm.sample.penalties import apply_penalties

__all__ = [
    "apply_bad_words",
    "apply_logit_bias",
    "apply_min_p",
    "apply_min_tokens",
    "apply_penalties",
]
