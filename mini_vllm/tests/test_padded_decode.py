"""Decode batches padded up to a capture size (``LLMEngine(cudagraph_capture_sizes=...)``), as
upstream pads a batch to the size of a captured CUDA graph: the dummy rows write only the null
block's slot 0, their logits are never computed, and the tokens equal the unpadded engine's.

On the seeded tiny Llama in float64, with requests of mixed lengths arriving at different steps,
so that decode batches of many sizes occur, some above the largest capture size."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.tests.builders import greedy, record_schedules
from pytest_vllm_katas import assert_close

SIZES = [1, 2, 4, 8]
BLOCK_SIZE = 4
# step -> (prompt, params) added before that step; ten requests, up to ten at once (> 8).
ARRIVALS = {
    0: [("You are terse. Why?", greedy(12)), ("Hi", greedy(20)), ("S" * 13, greedy(6))],
    3: [("hello world", greedy(14)), ("abc", greedy(9)),
        ("a longer prompt that is chunked", greedy(16))],
    9: [("x", greedy(5)), ("You are terse. Hi", greedy(11)),
        ("zz", SamplingParams(max_tokens=22, temperature=0.8, seed=3, ignore_eos=True)),
        ("qwerty", greedy(7))],
}


class Spy:
    """The model, with every forward pass's inputs recorded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[tuple[np.ndarray, np.ndarray, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def forward(self, input_ids, positions, kv_caches, metadata):  # type: ignore[no-untyped-def]
        self.calls.append((input_ids.copy(), positions.copy(), metadata))
        return self._model.forward(input_ids, positions, kv_caches, metadata)


def drive(model: Any, sizes: list[int] | None) -> tuple[LLMEngine, list[list[int]], list]:
    engine = LLMEngine(model=model, block_size=BLOCK_SIZE, num_blocks=96, max_num_seqs=10,
                       max_num_batched_tokens=16, cudagraph_capture_sizes=sizes)
    schedules = record_schedules(engine)
    ids: list[str] = []
    done: dict[str, list[int]] = {}
    for step in range(200):
        for prompt, params in ARRIVALS.get(step, []):
            ids.append(engine.add_request(prompt, params))
        if step > max(ARRIVALS) and not engine.has_unfinished_requests():
            break
        done.update({r.request_id: r.output_token_ids for r in engine.step()})
    else:
        raise AssertionError("the engine did not finish within 200 steps")
    return engine, [done[rid] for rid in ids], [s for s in schedules if s.scheduled_requests]


@pytest.fixture(scope="module")
def runs(tiny_llama):  # type: ignore[no-untyped-def]
    spy = Spy(tiny_llama)
    padded = drive(spy, SIZES)
    return drive(tiny_llama, None), padded, spy


def decode_sizes(schedules: list) -> list[int | None]:
    """Per forward pass: the number of requests if every one computes one token, else None."""
    return [len(s.scheduled_requests) if set(s.num_scheduled_tokens.values()) == {1} else None
            for s in schedules]


def test_padded_engine_gives_the_unpadded_tokens(runs) -> None:  # type: ignore[no-untyped-def]
    (plain, plain_tokens, _), (padded, padded_tokens, _), _ = runs
    assert padded_tokens == plain_tokens
    assert padded.num_steps == plain.num_steps
    assert plain.model_runner.num_padded_tokens == 0 and not plain.model_runner.cudagraph_steps


def test_padding_is_the_rung_minus_the_batch(runs) -> None:  # type: ignore[no-untyped-def]
    _, (padded, _, schedules), spy = runs
    sizes = decode_sizes(schedules)
    rungs = [None if n is None else next((s for s in SIZES if s >= n), None) for n in sizes]
    expected = sum(r - n for n, r in zip(sizes, rungs, strict=True) if r is not None)
    runner = padded.model_runner
    assert runner.num_padded_tokens == expected
    assert runner.cudagraph_steps == dict(Counter(r for r in rungs if r is not None))
    # The workload covers what it must: padding, exact rungs, and batches above the ladder.
    assert expected > 0 and any(n in SIZES for n in sizes if n)
    assert any(n is not None and n > max(SIZES) for n in sizes)
    assert any(n is None for n in sizes), "prefill steps too"
    # Every forward ran on the rung's rows (decode) or the step's own tokens (otherwise).
    for (input_ids, _, _), schedule, rung in zip(spy.calls, schedules, rungs, strict=True):
        num_tokens = sum(schedule.num_scheduled_tokens.values())
        assert len(input_ids) == (rung if rung is not None else num_tokens)


def test_padded_rows_touch_only_the_null_blocks_first_slot(runs) -> None:  # type: ignore[no-untyped-def]
    _, (_, _, schedules), spy = runs
    for (input_ids, positions, meta), schedule in zip(spy.calls, schedules, strict=True):
        n = sum(schedule.num_scheduled_tokens.values())
        assert (meta.slot_mapping[:n] >= BLOCK_SIZE).all(), "a real token in the null block"
        assert (meta.slot_mapping[n:] == 0).all()
        assert (meta.block_table[len(schedule.scheduled_requests):] == 0).all()
        assert (input_ids[n:] == 0).all() and (positions[n:] == 0).all()


def test_kv_caches_differ_only_in_the_null_blocks_first_slot(runs) -> None:  # type: ignore[no-untyped-def]
    (plain, _, _), (padded, _, _), _ = runs
    for (pk, pv), (qk, qv) in zip(plain.model_runner.kv_caches, padded.model_runner.kv_caches,
                                  strict=True):
        for plain_cache, padded_cache in ((pk, qk), (pv, qv)):
            assert not plain_cache[0].any(), "the unpadded engine never writes the null block"
            assert padded_cache[0, 0].any() and not padded_cache[0, 1:].any()
            # Every request's K/V is the same (a GEMM over more rows may move the last bits).
            assert_close(padded_cache[1:], plain_cache[1:], cause="float64-reordered",
                         what="KV of the requests' blocks")


def test_capture_sizes_need_a_real_model_and_positive_sizes(tiny_llama) -> None:
    with pytest.raises(ValueError, match="real model"):
        LLMEngine(cudagraph_capture_sizes=[1, 2])  # the toy model
    for bad in ([], [0, 2], [1.5]):
        with pytest.raises(ValueError, match="cudagraph_capture_sizes"):
            LLMEngine(model=tiny_llama, cudagraph_capture_sizes=bad)
