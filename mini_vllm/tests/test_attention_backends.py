"""The engine runs its real model on another attention backend (``LLMEngine(attn_backend=...)``),
the seam phase 04's katas plug a learner's attention into; tokens must not change."""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.attention import paged_attention, per_head_backend, row_by_row
from mini_vllm.forward_context import get_forward_context, set_forward_context
from mini_vllm.tests.builders import greedy, run_all

PROMPTS = ["You are terse. Why?", "You are terse. Hi", "S" * 13]


def dense_row(q, key_cache, value_cache, block_table, seq_len):  # type: ignore[no-untyped-def]
    """The plainest one-row attention: gather the context, softmax, blend."""
    block_size = key_cache.shape[1]
    keys = np.concatenate([key_cache[b] for b in block_table])[:seq_len]
    values = np.concatenate([value_cache[b] for b in block_table])[:seq_len]
    scores = keys @ q / np.sqrt(q.shape[0])
    weights = np.exp(scores - scores.max())
    assert len(block_table) >= -(-seq_len // block_size), "the table covers the context"
    return weights @ values / weights.sum()


def _run(model, **kwargs) -> tuple[list[list[int]], int]:  # type: ignore[no-untyped-def]
    engine = LLMEngine(model=model, block_size=4, num_blocks=64, max_num_batched_tokens=16,
                       **kwargs)
    params = [greedy(10), SamplingParams(max_tokens=10, temperature=0.8, seed=3, ignore_eos=True),
              greedy(6)]
    ids = [engine.add_request(p, sp) for p, sp in zip(PROMPTS, params, strict=True)]
    outputs = run_all(engine)
    return [outputs[rid] for rid in ids], engine.num_steps


def test_a_per_head_backend_gives_the_stock_tokens(tiny_llama) -> None:
    stock, steps = _run(tiny_llama)
    calls = []

    def counted_row(*args):  # type: ignore[no-untyped-def]
        calls.append(args[-1])
        return dense_row(*args)

    mine, mine_steps = _run(tiny_llama, attn_backend=per_head_backend(row_by_row(counted_row)))
    assert mine == stock and mine_steps == steps
    # Every token the engine computed went through it, once per layer and head: all prompt and
    # output tokens (an output's last is never fed back), less the second prompt's prefix hit
    # (3 blocks of 4 of the shared 15-byte "You are terse. ").
    rows = sum(len(p) for p in PROMPTS) + 10 + 10 + 6 - len(PROMPTS) - 12
    assert len(calls) == rows * tiny_llama.num_layers * 4


def test_the_backend_is_the_engines_not_the_models(tiny_llama) -> None:
    # The same model object serves a stock engine afterwards: the backend lives in the forward
    # context for one pass, never on the model.
    def broken(*args):  # type: ignore[no-untyped-def]
        raise RuntimeError("backend called")

    engine = LLMEngine(model=tiny_llama, block_size=4, attn_backend=broken)
    engine.add_request("hi", greedy(2))
    with pytest.raises(RuntimeError, match="backend called"):
        engine.step()
    assert get_forward_context().attn_backend is paged_attention
    assert _run(tiny_llama)[0] == _run(tiny_llama)[0]


def test_a_backend_returning_the_wrong_shape_is_named() -> None:
    backend = per_head_backend(lambda q, *rest: q[:, :2])
    query = np.zeros((3, 2, 4))
    cache = np.zeros((2, 4, 1, 4))
    from mini_vllm.attention import AttentionMetadata

    metadata = AttentionMetadata(query_start_loc=np.array([0, 3]), seq_lens=np.array([3]),
                                 block_table=np.array([[1]]), slot_mapping=np.arange(4, 7),
                                 block_size=4)
    with pytest.raises(ValueError, match=r"request 0, head 0 returned shape \(3, 2\)"):
        backend(query, cache, cache, metadata, 0.5)
    with pytest.raises(ValueError, match="scale"):
        backend(query, cache, cache, metadata, 1.0)


def test_set_forward_context_restores_the_previous_backend() -> None:
    def fake(*args):  # type: ignore[no-untyped-def]
        return args[0]

    with set_forward_context(fake):
        assert get_forward_context().attn_backend is fake
        with set_forward_context(None):
            assert get_forward_context().attn_backend is paged_attention
        assert get_forward_context().attn_backend is fake
    assert get_forward_context().attn_backend is paged_attention
