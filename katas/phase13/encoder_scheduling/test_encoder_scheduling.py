"""Spec for kata 13-03: an image is encoded whole, within the step's encoder budget, before any
of its positions is computed; a chunk that cannot afford an image stops at its doorstep.

The prompt of most tests: text 0-9, image A at 10-109 (100 tokens), text 110-119, image B at
120-169 (50 tokens), text 170-179. The last test plugs your rule into mini_vllm's scheduler.
"""

from __future__ import annotations

import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.multimodal import MultiModalConfig
from mini_vllm.multimodal.inputs import MultiModalFeature, PlaceholderRange
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok


def image(name: str, offset: int, length: int) -> MultiModalFeature:
    return MultiModalFeature(mm_hash=name, mm_position=PlaceholderRange(offset, length))


A = image("A", 10, 100)
B = image("B", 120, 50)
PROMPT = [A, B]  # 180 tokens in all


def plan(impl, computed: int, new: int, budget: int, cached=(), placeholders=PROMPT):
    result = impl.plan_chunk(computed, new, placeholders, budget, set(cached))
    assert isinstance(result, tuple) and len(result) == 2, (
        f"plan_chunk must return (num_new_tokens, to_encode), got {result!r}")
    n, to_encode = result
    return n, list(to_encode)


def situation(computed: int, new: int, budget: int, cached=()) -> str:
    return (f"chunk [{computed}, {computed + new}) with encoder budget {budget}"
            f"{', cached ' + str(sorted(cached)) if cached else ''}")


def test_pure_text_chunk_is_unconstrained(impl) -> None:
    for computed, new, budget in ((0, 10, 0), (0, 10, 100), (170, 10, 0), (110, 10, 0)):
        got = plan(impl, computed, new, budget)
        assert got == (new, []), (
            f"{situation(computed, new, budget)} touches no image position: it must come back "
            f"unchanged with nothing to encode, expected ({new}, []), got {got}")


def test_entering_an_image_schedules_its_encoder(impl) -> None:
    got = plan(impl, 0, 50, 100)
    assert got == (50, ["A"]), (
        f"{situation(0, 50, 100)} covers 40 of A's 100 positions: A's whole encode (100 tokens, "
        f"exactly the budget) is scheduled and the chunk is kept; expected (50, ['A']), got {got}")


def test_unaffordable_image_truncates_the_chunk(impl) -> None:
    got = plan(impl, 0, 50, 99)
    assert got == (10, []), (
        f"{situation(0, 50, 99)}: A (100 tokens) does not fit, so the chunk must stop at A's "
        f"offset (10 text tokens) and encode nothing; expected (10, []), got {got}")


def test_cached_image_costs_nothing(impl) -> None:
    got = plan(impl, 0, 50, 0, cached={"A"})
    assert got == (50, []), (
        f"{situation(0, 50, 0, {'A'})}: a cached image needs no encode and no budget; expected "
        f"(50, []), got {got}")
    both = plan(impl, 0, 180, 50, cached={"A"})
    assert both == (180, ["B"]), (
        f"{situation(0, 180, 50, {'A'})}: A is free, so the 50-token budget pays for B; "
        f"expected (180, ['B']), got {both}")


def test_continuation_mid_placeholder_needs_no_new_encode(impl) -> None:
    got = plan(impl, 50, 40, 0, cached={"A"})
    assert got == (40, []), (
        f"{situation(50, 40, 0, {'A'})}: A was encoded when the chunk first entered it; a chunk "
        f"continuing inside it needs nothing new; expected (40, []), got {got}")


def test_budget_splits_across_two_images(impl) -> None:
    got = plan(impl, 0, 180, 120)
    assert got == (120, ["A"]), (
        f"{situation(0, 180, 120)}: A (100) fits, B (50) no longer does: encode A and stop at "
        f"B's offset 120; expected (120, ['A']), got {got}")
    whole = plan(impl, 0, 180, 150)
    assert whole == (180, ["A", "B"]), (
        f"{situation(0, 180, 150)}: both fit, the prompt prefills in one step; expected "
        f"(180, ['A', 'B']), got {whole}")


def test_the_full_encode_is_debited(impl) -> None:
    got = plan(impl, 60, 120, 100)
    assert got == (60, ["A"]), (
        f"{situation(60, 120, 100)}: the chunk covers only 50 of A's positions, but encoding A "
        f"costs all 100, leaving nothing for B; expected (60, ['A']), got {got}")


def test_nothing_after_an_unaffordable_image_is_encoded(impl) -> None:
    got = plan(impl, 0, 180, 60)
    assert got == (10, []), (
        f"{situation(0, 180, 60)}: A (100) does not fit, so the chunk ends at 10 and B, past the "
        f"new end, must not be encoded; expected (10, []), got {got}")


def test_progress_is_always_possible(impl) -> None:
    first = image("A", 0, 100)
    got = plan(impl, 0, 64, 0, placeholders=[first])
    assert got == (0, []), (
        f"an image at position 0 with a zero budget: a 0-token chunk this step (the budget resets "
        f"next step), never a negative one; expected (0, []), got {got}")
    later = plan(impl, 0, 64, 100, placeholders=[first])
    assert later == (64, ["A"]), f"next step, with budget 100: expected (64, ['A']), got {later}"


def test_window_starting_inside_an_uncached_image_waits(impl) -> None:
    got = plan(impl, 50, 40, 0)
    assert got == (0, []), (
        f"{situation(50, 40, 0)}: A is not cached (e.g. evicted after a prefix-cache hit into "
        f"it) and cannot be encoded: no position of it can be computed, expected (0, []), "
        f"got {got}")
    ok = plan(impl, 50, 40, 100)
    assert ok == (40, ["A"]), f"{situation(50, 40, 100)}: expected (40, ['A']), got {ok}"


def test_already_computed_images_are_not_encoded(impl) -> None:
    got = plan(impl, 110, 10, 100)
    assert got == (10, []), (
        f"{situation(110, 10, 100)}: A's run ended at 110, all computed: it must not be encoded "
        f"again; expected (10, []), got {got}")


def test_same_image_twice_is_encoded_once(impl) -> None:
    twins = [image("A", 10, 100), image("A", 120, 100)]
    got = plan(impl, 0, 230, 100, placeholders=twins)
    assert got == (230, ["A"]), (
        f"the same image twice in one prompt: its one encode (100) serves both runs; expected "
        f"(230, ['A']), got {got}")


def test_bad_input_raises(impl) -> None:
    with expect_raises(ValueError, "a negative encoder budget is meaningless"):
        impl.plan_chunk(0, 10, PROMPT, -1, set())
    with expect_raises(ValueError, "a negative chunk is meaningless"):
        impl.plan_chunk(0, -5, PROMPT, 10, set())
    with expect_raises(ValueError, "placeholders out of order cannot be planned in prompt order"):
        impl.plan_chunk(0, 10, [B, A], 10, set())


# -- your rule drives mini_vllm's scheduler ---------------------------------------------------


# 7, 4, 7 and 5 tokens; the first and third are the same image.
IMAGES = (b"\x07" * 400, b"\x08" * 200, b"\x07" * 400, b"\x09" * 300)


def _run(tiny_llama, rule, *, budget: int, num_blocks: int = 64) -> tuple[list, list]:
    engine = LLMEngine(model=tiny_llama, max_num_batched_tokens=16, num_blocks=num_blocks,
                       block_size=4, mm_config=MultiModalConfig(plan_chunk=rule,
                                                                encoder_budget=budget,
                                                                encoder_cache_size=16))
    marker = engine.mm_config.image_token_id
    prompts = [
        ([3, 4, marker, 5, 6, marker, 7, 8], IMAGES[:2]),
        ([9, marker, 10, 11, 12], IMAGES[2:3]),
        ([13, 14, marker, 15], IMAGES[3:]),
    ]
    ids = [engine.add_mm_request(p, SamplingParams(max_tokens=4, temperature=0), images=im,
                                 request_id=name)
           for name, (p, im) in zip("abc", prompts, strict=True)]
    requests = [engine.get_request(rid) for rid in ids]
    trace = []
    for _ in range(80):
        if not engine.has_unfinished_requests():
            break
        engine.step()
        encodes = {rid: [h[:8] for h in hashes]
                   for rid, hashes in engine.scheduler.last_encoder_schedule.items()}
        trace.append((engine.scheduler.last_num_scheduled_tokens, encodes))
    assert not engine.has_unfinished_requests(), "the engine did not finish in 80 steps"
    return [list(r.output_token_ids) for r in requests], trace


@pytest.mark.parametrize("budget", [7, 11])
def test_your_rule_drives_the_engine(impl, tiny_llama, budget: int) -> None:
    from mini_vllm.multimodal.encoder_cache import plan_encoder_inputs

    want_tokens, want_trace = _run(tiny_llama, plan_encoder_inputs, budget=budget)
    tokens, trace = _run(tiny_llama, impl.plan_chunk, budget=budget)
    for step, (want, got) in enumerate(zip(want_trace, trace, strict=False)):
        assert want == got, (
            f"encoder budget {budget}: at step {step} the stock engine scheduled (tokens per "
            f"request, images encoded) {want}, yours {got}")
    assert len(trace) == len(want_trace), (
        f"the stock engine ran {len(want_trace)} steps, yours {len(trace)}")
    assert tokens == want_tokens, (
        f"the tokens differ from the stock engine's: expected {want_tokens}, got {tokens}")
