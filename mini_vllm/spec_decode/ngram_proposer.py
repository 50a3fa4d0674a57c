"""NgramProposer: draft tokens by prompt lookup — no model, just the request's own tokens.

Upstream twin: ``vllm/v1/spec_decode/ngram_proposer.py: NgramProposer.propose`` (the search is
``_find_longest_matched_ngram_and_propose_tokens``, a KMP scan over the reversed tokens).

The rule, exactly as vLLM 0.32 computes it (checked against its numba kernel):

1. Let ``L`` be the largest ``n <= prompt_lookup_max`` such that the last ``n`` tokens also occur
   *earlier* in the sequence (an occurrence starting before ``len - n``; it may overlap the
   suffix itself). If ``L < prompt_lookup_min`` (or the sequence is shorter than
   ``prompt_lookup_min``), propose nothing.
2. Among the earlier occurrences of that ``L``-token suffix, take the **earliest** one (the
   issue's "first match"), not the most recent: the KMP scan runs backwards from the end and
   keeps the last position that reaches the longest length (``>=``).
3. Propose the (up to) ``k`` tokens that follow that occurrence; fewer when the sequence ends
   first. ``k`` is also capped so the sequence never passes ``max_model_len``.

The course's lab 08-01 scans most-recent-first with a single n; both are lossless, they only
propose different drafts.
"""

from __future__ import annotations

from collections.abc import Sequence


class NgramProposer:
    def __init__(self, prompt_lookup_min: int, prompt_lookup_max: int,
                 num_speculative_tokens: int, max_model_len: int | None = None) -> None:
        if not 1 <= prompt_lookup_min <= prompt_lookup_max:
            raise ValueError(f"need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{prompt_lookup_min} and {prompt_lookup_max}")
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.min_n = prompt_lookup_min
        self.max_n = prompt_lookup_max
        self.k = num_speculative_tokens
        self.max_model_len = max_model_len

    def propose(self, token_ids: Sequence[int]) -> list[int]:
        """Up to k draft ids following the earliest earlier occurrence of the longest suffix."""
        tokens = list(token_ids)
        total = len(tokens)
        if total < self.min_n:
            return []
        k = self.k if self.max_model_len is None else min(self.k, self.max_model_len - total)
        if k <= 0:
            return []
        for n in range(min(self.max_n, total - 1), self.min_n - 1, -1):
            suffix = tokens[total - n:]
            for start in range(total - n):  # earliest first; never the suffix's own position
                if tokens[start:start + n] == suffix:
                    return tokens[start + n:start + n + k]
        return []

    __call__ = propose
