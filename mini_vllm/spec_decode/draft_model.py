"""DraftModelProposer: a small model guesses the next k tokens greedily.

Upstream twin: ``vllm/v1/spec_decode/draft_model.py`` (a separate, smaller model of the same
vocabulary, run by the target's runner with its own KV cache).

Kept simple here: each proposal **recomputes** the draft model's view of the sequence — one
prefill forward of all the verified tokens into the proposer's own private paged cache, then
``k - 1`` one-token decode forwards, each taking the argmax. Nothing is carried between
proposals, so a rejected draft cannot leave stale K/V behind (upstream instead keeps the draft's
KV and rolls it back like the target's). The price is a prefill per step: fine for a tiny model.

The drafts are greedy whatever the request's temperature: the rejection sampler then treats each
as proposed with probability one, which is still exact (see ``rejection_sampler.py``).

``truncated_model(model, num_layers)`` builds the cheapest draft available for any Llama: the
target itself, cut to its first layers, sharing every weight (final norm and LM head included).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from mini_vllm.attention import AttentionMetadata


def truncated_model(model: Any, num_layers: int) -> Any:
    """A view of a Llama (``mini_vllm.models.llama``) running only its first ``num_layers``
    layers; no weight is copied."""
    layers = model.model.layers
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be in [1, {len(layers)}], got {num_layers}")
    draft = copy.copy(model)
    draft.model = copy.copy(model.model)
    draft.model.layers = layers[:num_layers]
    draft.num_layers = num_layers
    return draft


class DraftModelProposer:
    def __init__(self, model: Any, num_speculative_tokens: int, *, block_size: int = 16,
                 max_model_len: int | None = None) -> None:
        if not hasattr(model, "compute_logits"):
            raise ValueError("the draft model needs forward(input_ids, positions, kv_caches, "
                             "metadata) and compute_logits, as mini_vllm.models' Llama")
        if num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.model = model
        self.k = num_speculative_tokens
        self.block_size = block_size
        limit = getattr(model, "max_model_len", None)
        self.max_model_len = min(x for x in (limit, max_model_len) if x is not None) if (
            limit is not None or max_model_len is not None) else None
        self._kv_caches: list[tuple[np.ndarray, np.ndarray]] = []
        self._num_blocks = 0
        #: draft-model forward passes run so far (1 prefill + k - 1 decodes per proposal).
        self.num_forwards = 0

    def _caches_for(self, num_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
        # Block 0 stays the null block, as in the target's pool; the sequence owns 1, 2, ...
        needed = -(-num_tokens // self.block_size) + 1
        if needed > self._num_blocks:
            self._num_blocks = max(needed, 2 * self._num_blocks)
            m = self.model
            shape = (self._num_blocks, self.block_size, m.num_kv_heads, m.head_dim)
            self._kv_caches = [(np.zeros(shape, m.dtype), np.zeros(shape, m.dtype))
                               for _ in range(m.num_layers)]
        return self._kv_caches

    def _forward(self, input_ids: list[int], start: int, kv_caches: list) -> int:
        """Run ``input_ids`` at positions ``start, start + 1, ...``; the argmax after the last."""
        num = len(input_ids)
        positions = np.arange(start, start + num, dtype=np.int64)
        seq_len = start + num
        num_blocks = -(-seq_len // self.block_size)
        metadata = AttentionMetadata(
            query_start_loc=np.array([0, num], dtype=np.int64),
            seq_lens=np.array([seq_len], dtype=np.int64),
            block_table=np.arange(1, num_blocks + 1, dtype=np.int64)[None, :],
            slot_mapping=positions + self.block_size,  # block i + 1 holds positions of block i
            block_size=self.block_size,
        )
        hidden = self.model.forward(np.asarray(input_ids, dtype=np.int64), positions, kv_caches,
                                    metadata)
        self.num_forwards += 1
        return int(np.argmax(self.model.compute_logits(hidden[-1:])[0]))

    def propose(self, token_ids: Sequence[int]) -> list[int]:
        """Up to k greedy draft ids after ``token_ids`` (fewer only near ``max_model_len``)."""
        tokens = [int(t) for t in token_ids]
        k = self.k
        if self.max_model_len is not None:
            k = min(k, self.max_model_len - len(tokens))
        if k <= 0 or not tokens:
            return []
        kv_caches = self._caches_for(len(tokens) + k)
        drafts = [self._forward(tokens, 0, kv_caches)]
        while len(drafts) < k:
            drafts.append(self._forward([drafts[-1]], len(tokens) + len(drafts) - 1, kv_caches))
        return drafts

    __call__ = propose
