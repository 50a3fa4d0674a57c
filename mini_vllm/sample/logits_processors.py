"""The built-in logits processors, one row at a time.

Upstream twins: ``vllm/v1/sample/logits_processor/builtin.py``:

* ``MinTokensLogitsProcessor`` -> :func:`apply_min_tokens` (not argmax-invariant: runs before
  the greedy argmax). While fewer than ``min_tokens`` tokens were generated, every stop token
  (mini_vllm has one: the request's EOS; upstream masks it even with ``ignore_eos``) is ``-inf``.
* ``LogitBiasLogitsProcessor`` -> :func:`apply_logit_bias` (not argmax-invariant). Adds
  ``bias[token]`` to that token's logit.
* ``MinPLogitsProcessor`` -> :func:`apply_min_p` (argmax-invariant: runs only when sampling,
  after temperature and before top-k / top-p). Keeps the tokens whose probability is at least
  ``min_p`` times the largest probability; the rest become ``-inf``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def apply_min_tokens(
    logits: np.ndarray, min_tokens: int, num_output_tokens: int, stop_token_ids: Iterable[int]
) -> np.ndarray:
    """A new row with the stop tokens masked while ``num_output_tokens < min_tokens``."""
    x = np.array(logits, dtype=np.float64)
    if num_output_tokens < min_tokens:
        x[list(stop_token_ids)] = -np.inf
    return x


def apply_logit_bias(logits: np.ndarray, logit_bias: Mapping[int, float]) -> np.ndarray:
    """A new row with ``logit_bias[token]`` added to each listed token's logit."""
    x = np.array(logits, dtype=np.float64)
    for token, bias in logit_bias.items():
        x[token] += bias
    return x


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """A new row keeping tokens with ``prob >= min_p * max_prob`` (the argmax always survives).

    Disabled (a plain copy) for ``min_p == 0``. The threshold is relative to the current
    distribution's most likely token, so it tightens when the model is confident.
    """
    x = np.array(logits, dtype=np.float64)
    if min_p <= 0.0:
        return x
    probs = np.exp(x - np.max(x))  # softmax without the normaliser: the ratio is what counts
    return np.where(probs >= min_p * probs.max(), x, -np.inf)
