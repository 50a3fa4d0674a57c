"""Bad words: ban the token that would complete a forbidden token sequence.

Upstream twin: ``vllm/v1/sample/ops/bad_words.py: _apply_bad_words_single_batch``. A bad word is
a sequence of token ids. Its last token is masked with ``-inf`` when the tokens before it equal
the last tokens of the **output** (the prompt is not looked at, as upstream); a one-token bad
word is therefore always banned. A bad word longer than the output + 1 cannot complete yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def apply_bad_words(
    logits: np.ndarray,
    bad_words: Sequence[Sequence[int]],
    output_token_ids: Sequence[int],
) -> np.ndarray:
    """A new row with the completing token of every matching bad word set to ``-inf``."""
    x = np.array(logits, dtype=np.float64)
    past = list(output_token_ids)
    for word in bad_words:
        prefix = list(word[:-1])
        if len(prefix) > len(past):
            continue
        if not prefix or past[-len(prefix):] == prefix:
            x[word[-1]] = -np.inf
    return x
