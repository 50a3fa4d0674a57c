"""Tiny builders shared by mini_vllm's tests (one copy of each, imported where needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput
from mini_vllm.attention import AttentionMetadata


def greedy(max_tokens: int = 4) -> SamplingParams:
    """The course's deterministic setting: argmax, run exactly max_tokens."""
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def on_schedule(engine: LLMEngine, observe: Callable[[SchedulerOutput], object]) -> None:
    """Observe-don't-modify probe: wrap schedule(), show ``observe`` each output as it is made,
    return it unchanged."""
    original = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = original()
        observe(out)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]


def record_schedules(engine: LLMEngine) -> list[SchedulerOutput]:
    """Keep each scheduler output (see :func:`on_schedule`); the list fills as the engine runs."""
    outputs: list[SchedulerOutput] = []
    on_schedule(engine, outputs.append)
    return outputs


def record_prefix_hits(engine: LLMEngine) -> list[int]:
    """Each newly scheduled request's ``num_computed_tokens`` when first scheduled: its prefix
    cache hit. The list fills as the engine runs."""
    hits: list[int] = []
    on_schedule(engine, lambda out: hits.extend(
        r.num_computed_tokens for r in out.scheduled_requests
        if r.request_id in out.scheduled_new_req_ids))
    return hits


def compositions(outputs: Sequence[SchedulerOutput], names: dict[str, str]) -> list[dict[str, int]]:
    """Per-step {name: tokens}, with request ids renamed (ids are process-global)."""
    return [{names[rid]: n for rid, n in out.num_scheduled_tokens.items()} for out in outputs]


def run_all(engine: LLMEngine) -> dict[str, list[int]]:
    """Step until idle; return each request finished on the way as {id: output token ids}."""
    done: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        done.update({r.request_id: r.output_token_ids for r in engine.step()})
    return done


def output_ids(
    engine: LLMEngine, prompts: Sequence[str], params: SamplingParams
) -> list[list[int]]:
    return [r.output_token_ids for r in engine.generate(list(prompts), params)]



def dense_hidden(model: Any, tokens: Sequence[int]) -> np.ndarray:
    """Every position's final hidden state for ``tokens`` run densely from position 0 (no
    engine): one request over a fresh paged cache of 16-token blocks."""
    n, block = len(tokens), 16
    blocks = -(-n // block)
    shape = (blocks + 1, block, model.num_kv_heads, model.head_dim)
    caches = [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
              for _ in range(model.num_layers)]
    positions = np.arange(n, dtype=np.int64)
    meta = AttentionMetadata(query_start_loc=np.array([0, n]), seq_lens=np.array([n]),
                             block_table=np.arange(1, blocks + 1, dtype=np.int64)[None],
                             slot_mapping=positions + block, block_size=block)
    return model.forward(np.array(tokens, dtype=np.int64), positions, caches, meta)


def dense_last_logits(model: Any, tokens: Sequence[int]) -> np.ndarray:
    """The last row's logits of ``tokens`` run densely (:func:`dense_hidden`)."""
    return model.compute_logits(dense_hidden(model, tokens)[-1:])[0]


def assert_caching_chunking_preemption_change_no_token(model: Any,
                                                       prompts: Sequence[str]) -> None:
    """A cramped engine (prefix hits, chunked prefill, preemption, each checked to happen) gives
    ``model``'s tokens of a plain one, for every prompt."""
    from pytest_vllm_katas.invariants import assert_same_outputs

    params = greedy(12)
    plain = output_ids(LLMEngine(model=model, block_size=4, enable_caching=False,
                                 num_blocks=256), prompts, params)
    engine = LLMEngine(model=model, block_size=4, num_blocks=20, max_num_seqs=3,
                       long_prefill_token_threshold=6, max_num_batched_tokens=10)
    hits = record_prefix_hits(engine)
    outs = engine.generate(list(prompts), params)
    assert sum(o.num_preemptions for o in outs) > 0, "the cramped pool must really preempt"
    assert sum(hits) > 0, "the shared prefix must really be hit"
    assert_same_outputs(plain, [o.output_token_ids for o in outs],
                        labels=("plain", "cached + chunked + preempted"))
