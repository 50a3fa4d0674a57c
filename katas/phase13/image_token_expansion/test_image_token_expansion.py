"""Spec for kata 13-01: pixels -> patches -> tokens -> placeholders -> KV blocks.

The last test runs mini_vllm's fake-image pipeline with your ``expand_prompt`` in place of its
own: same prompt ids, same placeholder runs, same tokens as the stock engine.
"""

from __future__ import annotations

import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.multimodal import MultiModalConfig
from mini_vllm.multimodal.inputs import PlaceholderRange
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

MARKER = 9  # the image marker these tests put in prompts


def _ranges(ranges) -> list[tuple[int, int]]:
    return [(r.offset, r.length) for r in ranges]


def _expand(impl, *args, **kwargs):
    result = impl.expand_prompt(*args, **kwargs)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"expand_prompt must return (ids, ranges), got {result!r}")
    ids, ranges = result
    assert isinstance(ids, list), f"expand_prompt's ids must be a list, got {type(ids).__name__}"
    for r in ranges:
        assert isinstance(r, PlaceholderRange), (
            f"expand_prompt's ranges must be PlaceholderRange objects, got {r!r}")
    return ids, list(ranges)


# -- pixels -> tokens ---------------------------------------------------------------------------


def test_patch_arithmetic(impl) -> None:
    got = impl.image_token_count(336, 336)
    assert got == 144, (
        f"336x336 at patch 14, merge 2 is 24x24 patches -> 12x12 = 144 tokens, got {got}")
    unmerged = impl.image_token_count(336, 336, merge_size=1)
    assert unmerged == 576, f"336x336 with merge_size=1 is 24x24 = 576 tokens, got {unmerged}"


def test_ceiling_at_both_stages(impl) -> None:
    got = impl.image_token_count(337, 337)
    assert got == 169, (
        f"337 px -> ceil(337/14) = 25 patches -> ceil(25/2) = 13 tokens per side, 13x13 = 169; "
        f"got {got} (a partial patch or a partial merge group still costs a whole one)")
    edge = impl.image_token_count(350, 350)  # exactly 25 patches, an odd count to merge
    assert edge == 169, f"350 px is 25 patches, merged in 2s -> 13 per side = 169, got {edge}"


def test_a_thumbnail_costs_one_token(impl) -> None:
    for side in (1, 10, 14, 28):
        got = impl.image_token_count(side, side)
        assert got == 1, f"a {side}x{side} thumbnail is one patch group -> 1 token, got {got}"


def test_width_and_height_are_independent(impl) -> None:
    got = impl.image_token_count(672, 336)
    assert got == 24 * 12, (
        f"672 wide x 336 high -> 24 columns x 12 rows = 288 tokens, got {got}")
    tall = impl.image_token_count(336, 672)
    assert tall == 288, f"336 wide x 672 high is 12 x 24 = 288 tokens, got {tall}"


def test_resolution_is_quadratic_cost(impl) -> None:
    small = impl.image_token_count(336, 336)
    big = impl.image_token_count(672, 672)
    assert (small, big) == (144, 576), (
        f"doubling both sides must quadruple the tokens (144 -> 576), got {small} -> {big}")


def test_bad_sizes_raise(impl) -> None:
    for args in ((0, 336), (336, -1), (336, 336, 0), (336, 336, 14, 0)):
        with expect_raises(ValueError, f"image_token_count{args} has a size or parameter < 1"):
            impl.image_token_count(*args)


# -- tokens -> placeholders ---------------------------------------------------------------------


def test_expansion_splices_in_place(impl) -> None:
    ids, ranges = _expand(impl, [5, 6, MARKER, 7, 8], MARKER, [4])
    expected = [5, 6, -100, -100, -100, -100, 7, 8]
    assert ids == expected, (
        f"the marker must be replaced (not kept) by 4 placeholders (-100), text before and after "
        f"unchanged: expected {expected}, got {ids}")
    assert _ranges(ranges) == [(2, 4)], (
        f"the run starts where the marker was: expected [(offset 2, length 4)], got "
        f"{_ranges(ranges)}")


def test_multi_image_ranges_are_ordered_and_disjoint(impl) -> None:
    prompt = [1, MARKER, 2, 3, MARKER, 4, MARKER]
    ids, ranges = _expand(impl, prompt, MARKER, [3, 5, 2])
    assert len(ids) == 7 - 3 + 3 + 5 + 2, f"expanded length must be 14, got {len(ids)}: {ids}"
    assert _ranges(ranges) == [(1, 3), (6, 5), (12, 2)], (
        f"each offset is shifted by the runs before it, and image i gets count i: expected "
        f"[(1, 3), (6, 5), (12, 2)], got {_ranges(ranges)}")
    for r in ranges:
        run = ids[r.offset : r.offset + r.length]
        assert run == [-100] * r.length, f"every position of {r} must hold -100, got {run}"
    text = [t for i, t in enumerate(ids) if not any(r.overlaps(i, i + 1) for r in ranges)]
    assert text == [1, 2, 3, 4], f"the text tokens must survive in order, got {text}"


def test_custom_placeholder_id(impl) -> None:
    ids, ranges = _expand(impl, [MARKER, 5], MARKER, [2], placeholder_id=MARKER)
    assert ids == [MARKER, MARKER, 5] and _ranges(ranges) == [(0, 2)], (
        f"placeholder_id={MARKER} (upstream LLaVA repeats the image token itself) must fill the "
        f"run: expected ([9, 9, 5], [(0, 2)]), got ({ids}, {_ranges(ranges)})")


def test_mismatched_counts_raise(impl) -> None:
    with expect_raises(ValueError, "2 markers but 1 image must be refused, not half expanded",
                       match="marker"):
        impl.expand_prompt([MARKER, 1, MARKER], MARKER, [4])
    with expect_raises(ValueError, "1 marker but 2 images must be refused", match="marker"):
        impl.expand_prompt([MARKER, 1], MARKER, [4, 4])
    with expect_raises(ValueError, "an image of 0 tokens is not an image"):
        impl.expand_prompt([MARKER, 1], MARKER, [0])


def test_input_is_not_modified(impl) -> None:
    prompt = [1, MARKER, 2]
    _expand(impl, prompt, MARKER, [3])
    assert prompt == [1, MARKER, 2], f"expand_prompt must not modify its input, it became {prompt}"


# -- sequence -> blocks -------------------------------------------------------------------------


def test_block_bill(impl) -> None:
    got = [impl.kv_blocks_needed(n) for n in (0, 1, 16, 17, 32)]
    assert got == [0, 1, 1, 2, 2], (
        f"blocks of 16 for 0, 1, 16, 17, 32 tokens must be [0, 1, 1, 2, 2] (ceil), got {got}")
    with expect_raises(ValueError, "a negative token count has no block bill"):
        impl.kv_blocks_needed(-1)


def test_the_scheduler_sees_only_the_expanded_length(impl) -> None:
    prompt = list(range(10, 29)) + [MARKER]  # a 20-token prompt, its last token the image
    text_only = impl.kv_blocks_needed(len(prompt))
    assert text_only == 2, f"20 tokens fill 2 blocks of 16, got {text_only}"
    count = impl.image_token_count(672, 672)
    ids, _ = _expand(impl, prompt, MARKER, [count])
    blocks = impl.kv_blocks_needed(len(ids))
    assert (len(ids), blocks) == (595, 38), (
        f"19 text tokens + one 576-token image (672x672) = 595 tokens = 38 blocks of 16; got "
        f"{len(ids)} tokens, {blocks} blocks")


# -- your expansion drives mini_vllm ------------------------------------------------------------


IMAGES = (b"\x01" * 100, b"\x02" * 300, b"\x01" * 100)  # 2, 5 and 2 tokens; the first == third


def _run(tiny_llama, expand) -> tuple[list[list[int]], list[list[tuple[int, int]]], list]:
    engine = LLMEngine(model=tiny_llama, max_num_batched_tokens=8, num_blocks=64, block_size=4,
                       mm_config=MultiModalConfig(expand_prompt=expand))
    marker = engine.mm_config.image_token_id
    prompts = [
        ([3, 4, marker, 5, 6, marker, 7], [IMAGES[0], IMAGES[1]]),
        ([8, marker, 9, 10, 11], [IMAGES[2]]),
    ]
    ids = [engine.add_mm_request(p, SamplingParams(max_tokens=5, temperature=0), images=im,
                                 request_id=name)
           for name, (p, im) in zip("ab", prompts, strict=True)]
    requests = [engine.get_request(rid) for rid in ids]
    prompt_ids = [list(r.prompt_token_ids) for r in requests]
    ranges = [[(f.offset, f.length) for f in r.mm_features] for r in requests]
    steps = []
    for _ in range(60):
        if not engine.has_unfinished_requests():
            break
        engine.step()
        steps.append({rid: [h[:8] for h in hashes]
                      for rid, hashes in engine.scheduler.last_encoder_schedule.items()})
    assert not engine.has_unfinished_requests(), "the engine did not finish in 60 steps"
    return [list(r.output_token_ids) for r in requests], prompt_ids, [ranges, steps]


def test_your_expansion_drives_the_engine(impl, tiny_llama) -> None:
    from mini_vllm.multimodal.processing import expand_prompt as stock_expand

    want_tokens, want_ids, (want_ranges, want_steps) = _run(tiny_llama, stock_expand)
    tokens, ids, (ranges, steps) = _run(tiny_llama, impl.expand_prompt)
    assert ids == want_ids, (
        f"with your expand_prompt the engine's prompts differ: expected {want_ids}, got {ids}")
    assert ranges == want_ranges, (
        f"with your expand_prompt the placeholder runs differ: expected {want_ranges}, "
        f"got {ranges}")
    assert steps == want_steps, (
        f"the encoder ran on a different schedule: expected {want_steps}, got {steps}")
    assert tokens == want_tokens, (
        f"the generated tokens differ from the stock engine's: expected {want_tokens}, "
        f"got {tokens}")
