"""Spec for kata 03-02: chunking changes when a prompt is computed, never what comes out."""

from __future__ import annotations

import math

import pytest

from mini_vllm import LLMEngine, SamplingParams, SchedulerOutput
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=6, temperature=0.8, top_k=50, top_p=0.9, seed=3, ignore_eos=True)
SENTENCE = "The quick brown fox jumps over the lazy dog"  # 43 tokens

# (prompt_len, threshold, budget) -> chunks. Readable ids: the boundary each case probes.
CASES = [
    pytest.param(10, 4, 2048, [4, 4, 2], id="10_tokens-threshold_4-remainder_2"),
    pytest.param(64, 16, 2048, [16, 16, 16, 16], id="exact_multiple-no_extra_step"),
    pytest.param(10, 0, 2048, [10], id="threshold_0_is_off-fits_the_budget"),
    pytest.param(5000, 0, 2048, [2048, 2048, 904], id="threshold_0_is_off-the_budget_chunks"),
    pytest.param(100, 64, 32, [32, 32, 32, 4], id="threshold_above_budget-budget_wins"),
    pytest.param(10, 10, 2048, [10], id="threshold_equal_to_prompt-one_step"),
    pytest.param(10, 100, 2048, [10], id="threshold_above_prompt-one_step"),
    pytest.param(1, 16, 2048, [1], id="one_token_prompt"),
    pytest.param(7, 1, 2048, [1] * 7, id="threshold_1-one_token_per_step"),
    pytest.param(4096, 512, 512, [512] * 8, id="4096_tokens-at_512-eight_steps"),
    pytest.param(0, 16, 2048, [], id="empty_prompt-nothing_to_prefill"),
]


def _engine_run(
    prompts: list[str], params: SamplingParams, **engine_kwargs: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Run prompts to completion; return outputs and each request's per-step scheduled tokens."""
    engine = LLMEngine(enable_caching=False, **engine_kwargs)
    ids = [engine.add_request(p, params) for p in prompts]
    scheduled: dict[str, list[int]] = {rid: [] for rid in ids}
    schedule = engine.scheduler.schedule

    def probe() -> SchedulerOutput:
        out = schedule()
        for rid, n in out.num_scheduled_tokens.items():
            scheduled[rid].append(n)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    outputs: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        for request in engine.step():
            outputs[request.request_id] = request.output_token_ids
    return [outputs[rid] for rid in ids], [scheduled[rid] for rid in ids]


def _prefill_chunks(per_step: list[int], prompt_len: int) -> list[int]:
    """The leading steps whose tokens add up to the prompt: the prefill's chunks."""
    chunks, total = [], 0
    for n in per_step:
        if total >= prompt_len:
            break
        chunks.append(n)
        total += n
    return chunks


# --- the formula --------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt_len", "threshold", "budget", "chunks"), CASES)
def test_chunk_sizes(impl, prompt_len: int, threshold: int, budget: int, chunks: list[int]):
    got = impl.prefill_chunk_sizes(prompt_len, threshold, budget)
    assert got == chunks, (
        f"prompt {prompt_len}, threshold {threshold}, budget {budget}: the chunk is "
        f"min(threshold or budget, budget) and the last one holds the remainder; expected "
        f"{chunks}, got {got}"
    )


@pytest.mark.parametrize(("prompt_len", "threshold", "budget", "chunks"), CASES)
def test_num_prefill_steps(impl, prompt_len: int, threshold: int, budget: int, chunks: list[int]):
    got = impl.num_prefill_steps(prompt_len, threshold, budget)
    assert got == len(chunks), (
        f"prompt {prompt_len}, threshold {threshold}, budget {budget} takes {len(chunks)} "
        f"prefill steps ({chunks}); got {got}"
    )


def test_steps_are_the_ceiling_everywhere_on_a_grid(impl) -> None:
    wrong = []
    for prompt_len in range(0, 41):
        for threshold in range(0, 12):
            for budget in range(1, 12):
                chunk = min(threshold or budget, budget)
                steps = impl.num_prefill_steps(prompt_len, threshold, budget)
                chunks = impl.prefill_chunk_sizes(prompt_len, threshold, budget)
                if (
                    steps != math.ceil(prompt_len / chunk)
                    or sum(chunks) != prompt_len
                    or (len(chunks) != steps or any(c > chunk for c in chunks))
                ):
                    wrong.append((prompt_len, threshold, budget, steps, chunks))
    assert not wrong, (
        f"{len(wrong)} of 5412 (prompt_len, threshold, budget) cases break steps == "
        f"ceil(prompt_len / chunk) == len(chunks), sum(chunks) == prompt_len, chunks <= chunk; "
        f"first few (prompt_len, threshold, budget, steps, chunks): {wrong[:3]}"
    )


@pytest.mark.parametrize(
    ("prompt_len", "threshold", "budget"),
    [
        pytest.param(-1, 16, 2048, id="negative_prompt"),
        pytest.param(10, -1, 2048, id="negative_threshold"),
        pytest.param(10, 16, 0, id="zero_budget"),
    ],
)
def test_impossible_arguments_raise_value_error(impl, prompt_len: int, threshold: int, budget: int):
    for function in (impl.num_prefill_steps, impl.prefill_chunk_sizes):
        with pytest.raises(ValueError):
            function(prompt_len, threshold, budget)


# --- the engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt_len", "threshold", "budget"),
    [
        pytest.param(10, 2, 2048, id="10_tokens-threshold_2"),
        pytest.param(43, 16, 2048, id="43_tokens-threshold_16"),
        pytest.param(64, 16, 2048, id="exact_multiple"),
        pytest.param(100, 0, 32, id="threshold_off-budget_32"),
        pytest.param(100, 64, 32, id="threshold_above_budget"),
        pytest.param(5000, 0, 2048, id="5000_tokens-default_budget"),
        pytest.param(43, 0, 2048, id="unchunked"),
    ],
)
def test_engine_prefills_in_the_chunks_you_predict(
    impl, prompt_len: int, threshold: int, budget: int
) -> None:
    predicted = impl.prefill_chunk_sizes(prompt_len, threshold, budget)
    steps = impl.num_prefill_steps(prompt_len, threshold, budget)
    _, (per_step,) = _engine_run(
        ["x" * prompt_len],
        GREEDY,
        long_prefill_token_threshold=threshold,
        max_num_batched_tokens=budget,
    )
    measured = _prefill_chunks(per_step, prompt_len)
    assert (predicted, steps) == (measured, len(measured)), (
        f"the engine prefilled a lone {prompt_len}-token prompt (threshold {threshold}, budget "
        f"{budget}) in {len(measured)} steps {measured}; you predicted {steps} steps {predicted}"
    )


@pytest.mark.parametrize("threshold", [1, 3, 16, 42], ids=lambda t: f"threshold_{t}")
@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_chunked_and_unchunked_runs_emit_identical_tokens(
    impl, threshold: int, params: SamplingParams
) -> None:
    steps = impl.num_prefill_steps(len(SENTENCE), threshold, 2048)
    plain, _ = _engine_run([SENTENCE], params)
    chunked, (per_step,) = _engine_run([SENTENCE], params, long_prefill_token_threshold=threshold)
    measured = _prefill_chunks(per_step, len(SENTENCE))
    assert steps > 1 and len(measured) == steps, (
        f"chunking really happened: the 43-token prompt should prefill in {steps} steps at "
        f"threshold {threshold}, and the engine took {len(measured)}"
    )
    assert_same_outputs(plain, chunked, labels=("unchunked", "chunked"))


def test_company_only_delays_a_prefill_and_changes_no_token(impl) -> None:
    prompts = [SENTENCE, "hello world", "goodbye", "0123456789" * 3, "a"]
    bounds = [impl.num_prefill_steps(len(p), 3, 7) for p in prompts]
    plain, _ = _engine_run(prompts, GREEDY)
    chunked, per_request = _engine_run(
        prompts, GREEDY, long_prefill_token_threshold=3, max_num_batched_tokens=7
    )
    taken = [
        len(_prefill_chunks(steps, len(p))) for steps, p in zip(per_request, prompts, strict=True)
    ]
    assert all(t >= b for t, b in zip(taken, bounds, strict=True)), (
        f"sharing the budget can only slow a prefill down: each prompt needs at least "
        f"num_prefill_steps(len, 3, 7) = {bounds} steps; the engine took {taken}"
    )
    assert max(taken) > 1, "chunking really happened"
    assert_same_outputs(plain, chunked, labels=("unchunked", "chunked"))
