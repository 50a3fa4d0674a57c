"""Repetition, frequency and presence penalties: three formulas, two token sets.

Upstream twin: ``vllm/v1/sample/ops/penalties.py: apply_all_penalties`` ->
``vllm/model_executor/layers/utils.py: apply_penalties``.

* repetition (multiplicative, 1.0 = off): every *distinct* token seen in the prompt **or** the
  output, once however often it occurred: a positive logit is divided by the penalty, any other
  multiplied by it (so a penalty > 1 always pushes the logit down).
* frequency (additive, 0.0 = off): ``logit -= frequency_penalty * count``, count = occurrences in
  the **output** only.
* presence (additive, 0.0 = off): ``logit -= presence_penalty`` once for every token present in
  the **output** only.

Applied in that order (repetition first, then frequency, then presence), as upstream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def apply_penalties(
    logits: np.ndarray,
    prompt_token_ids: Sequence[int],
    output_token_ids: Sequence[int],
    *,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> np.ndarray:
    """A new row with the three penalties applied; the input row is left untouched."""
    x = np.array(logits, dtype=np.float64)  # a copy
    if repetition_penalty != 1.0:
        seen = np.zeros(x.size, dtype=bool)
        seen[list(prompt_token_ids)] = True
        seen[list(output_token_ids)] = True
        scaled = np.where(x > 0, x / repetition_penalty, x * repetition_penalty)
        x = np.where(seen, scaled, x)
    if frequency_penalty != 0.0 or presence_penalty != 0.0:
        counts = np.bincount(np.asarray(output_token_ids, dtype=np.int64), minlength=x.size)
        x = x - frequency_penalty * counts
        x = x - presence_penalty * (counts > 0)
    return x
