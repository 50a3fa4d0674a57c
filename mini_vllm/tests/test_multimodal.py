"""The fake-image pipeline (``LLMEngine(mm_config=...)``, phase 13) on the tiny Llama (float64).

Images are bytes; each becomes ``len // 64 + 1`` placeholder tokens. The properties: an image
prompt runs through the ordinary engine (chunked prefill, preemption, prefix caching) with the
tokens unchanged by any of them; the encoder runs once per distinct image while it stays cached;
the same text with different images never shares a KV block; the same image does.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.multimodal import (
    EncoderCacheError,
    EncoderCacheManager,
    FakeImageEncoder,
    MultiModalConfig,
    PlaceholderRange,
    merge_multimodal_embeddings,
    process_prompt,
)
from mini_vllm.multimodal.inputs import image_hash, num_image_tokens
from pytest_vllm_katas import expect_raises

M = 0  # MultiModalConfig's default image_token_id
GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
CAT = b"cat!" * 50  # 200 bytes -> 4 tokens
DOG = b"dog!" * 50  # same length, other content
BIRD = b"bird" * 130  # 520 bytes -> 9 tokens
TEXT = [40, 41, 42, 43, 44, 45, M, 46, 47, 48, 49]


def engine(model, **kwargs) -> LLMEngine:
    mm = kwargs.pop("mm", MultiModalConfig())
    kwargs.setdefault("block_size", 4)
    kwargs.setdefault("num_blocks", 64)
    return LLMEngine(model=model, mm_config=mm, **kwargs)


def run(eng: LLMEngine, prompts, params=GREEDY, max_steps: int = 200,
        requests_out: list | None = None) -> list[list[int]]:
    ids = [eng.add_mm_request(p, params, images=im) for p, im in prompts]
    requests = [eng.get_request(rid) for rid in ids]
    if requests_out is not None:
        requests_out.extend(requests)
    for _ in range(max_steps):
        if not eng.has_unfinished_requests():
            break
        eng.step()
    assert not eng.has_unfinished_requests(), f"not finished in {max_steps} steps"
    return [list(r.output_token_ids) for r in requests]


# -- pieces -----------------------------------------------------------------------------------


def test_expansion_arithmetic() -> None:
    ids, features = process_prompt([1, M, 2, M, 3], [CAT, BIRD], M)
    assert [num_image_tokens(CAT), num_image_tokens(BIRD)] == [4, 9]
    assert len(ids) == 3 + 4 + 9
    assert [f.mm_position for f in features] == [PlaceholderRange(1, 4), PlaceholderRange(6, 9)]
    assert ids[1:5] == [M] * 4 and ids[6:15] == [M] * 9 and ids[5] == 2
    assert features[0].mm_hash == image_hash(CAT) != features[1].mm_hash
    with expect_raises(ValueError, "two markers need two images", match="marker"):
        process_prompt([1, M, M], [CAT], M)


def test_a_broken_expansion_is_refused(tiny_llama) -> None:
    def short(token_ids, image_token_id, counts, placeholder_id):  # one token short per image
        out, ranges = [], []
        for t in token_ids:
            if t == image_token_id:
                n = counts[len(ranges)] - 1
                ranges.append(PlaceholderRange(len(out), n))
                out.extend([placeholder_id] * n)
            else:
                out.append(t)
        return out, ranges

    eng = engine(tiny_llama, mm=MultiModalConfig(expand_prompt=short))
    with expect_raises(ValueError, "runs must match the images' token counts", match="runs"):
        eng.add_mm_request(TEXT, GREEDY, images=[CAT])
    assert not eng.has_unfinished_requests()


def test_merge_checks_the_count_contract() -> None:
    embeds = np.zeros((5, 3))
    mask = np.array([False, True, True, False, False])
    merge_multimodal_embeddings(embeds, mask, np.ones((2, 3)))
    assert embeds[:, 0].tolist() == [0, 1, 1, 0, 0]
    with expect_raises(ValueError, "3 rows for 2 placeholders",
                       match="Attempted to assign 3 multimodal tokens to 2 placeholders"):
        merge_multimodal_embeddings(embeds, mask, np.ones((3, 3)))


def test_the_encoder_is_deterministic_in_the_content() -> None:
    enc = FakeImageEncoder(8, np.float64)
    a, b, c = enc.encode(CAT), enc.encode(CAT), enc.encode(DOG)
    assert a.shape == (4, 8) and np.array_equal(a, b) and not np.allclose(a, c)
    assert enc.num_calls == 3 and enc.num_encoded_tokens == 12


def test_encoder_cache_evicts_the_oldest_unreferenced_entry() -> None:
    cache = EncoderCacheManager(10)
    assert cache.can_allocate(4)
    cache.allocate("r1", "A", 4)
    assert cache.can_allocate(6)
    cache.allocate("r2", "B", 6)
    assert not cache.can_allocate(1), "everything is referenced: nothing can be evicted"
    cache.free("r1", ["A"])
    assert cache.check_and_update_cache("r3", "B") and cache.num_freeable_slots == 4
    assert cache.can_allocate(3) and cache.get_freed_mm_hashes() == ["A"]
    assert not cache.check_and_update_cache("r3", "A")


# -- through the engine -----------------------------------------------------------------------


def test_images_change_the_tokens_and_run_deterministically(tiny_llama) -> None:
    cat = run(engine(tiny_llama), [(TEXT, [CAT])])
    assert cat == run(engine(tiny_llama), [(TEXT, [CAT])]), "same input, same tokens"
    dog = run(engine(tiny_llama), [(TEXT, [DOG])])
    assert cat != dog, "the image's embeddings must reach the model"


def test_chunking_preemption_and_caching_change_no_token(tiny_llama) -> None:
    prompts = [(TEXT, [CAT]), ([50, M, 51, M, 52, 53], [BIRD, DOG]), ([M, 60, 61], [CAT])]
    want = run(engine(tiny_llama, max_num_batched_tokens=512, enable_caching=False), prompts)
    chunked = engine(tiny_llama, max_num_batched_tokens=5,
                     mm=MultiModalConfig(encoder_budget=9, encoder_cache_size=13))
    assert run(chunked, prompts) == want, "chunked prefill under a tight encoder budget"
    cramped = engine(tiny_llama, num_blocks=9, max_num_batched_tokens=7,
                     mm=MultiModalConfig(encoder_budget=9, encoder_cache_size=9))
    requests: list = []
    assert run(cramped, prompts, requests_out=requests) == want, (
        "preemption (recompute) must not change the tokens")
    assert sum(r.num_preemptions for r in requests) > 0, "the cramped pool must preempt"


def test_no_chunk_computes_an_image_before_its_encode(tiny_llama) -> None:
    eng = engine(tiny_llama, max_num_batched_tokens=4,
                 mm=MultiModalConfig(encoder_budget=9, encoder_cache_size=9))
    rid = eng.add_mm_request([1, 2, M, 3], GREEDY, images=[BIRD])
    request = eng.get_request(rid)
    seen = []
    for _ in range(40):
        if not eng.has_unfinished_requests():
            break
        eng.step()
        seen.append((eng.scheduler.last_num_scheduled_tokens.get(rid),
                     eng.scheduler.last_encoder_schedule.get(rid)))
    # 4-token steps: text [0, 2), then the 9-token image encoded whole as its first 2 positions
    # are computed, then chunks may end inside it.
    assert seen[0] == (4, [image_hash(BIRD)]) and seen[1] == (4, None), seen
    assert request.num_output_tokens == GREEDY.max_tokens


def test_same_image_is_encoded_once_other_content_again(tiny_llama) -> None:
    eng = engine(tiny_llama)
    run(eng, [(TEXT, [CAT]), ([7, M], [CAT]), ([8, M], [DOG])])
    assert eng.model_runner.mm_encoder.num_calls == 2, "CAT once (shared), DOG once"


def _hit_tokens(eng: LLMEngine, prompt, images) -> int:
    rid = eng.add_mm_request(prompt, GREEDY, images=images)
    request = eng.get_request(rid)
    _, num_cached = eng.kv_cache_manager.get_computed_blocks(request)
    eng.abort_request(rid)
    return num_cached


def test_prefix_caching_keys_blocks_on_the_image(tiny_llama) -> None:
    eng = engine(tiny_llama)
    run(eng, [(TEXT, [CAT])])  # 14 tokens: image at 6..9, blocks of 4
    assert _hit_tokens(eng, TEXT, [CAT]) == 12, "the same text and image hit every full block"
    assert _hit_tokens(eng, TEXT, [DOG]) == 4, (
        "another image of the same length: only the block before the image may hit")
    calls = eng.model_runner.mm_encoder.num_calls
    run(eng, [(TEXT, [CAT])])
    assert eng.model_runner.mm_encoder.num_calls == calls, "a full prefix hit needs no encode"


def test_eviction_reports_the_freed_hash_and_admits_the_next(tiny_llama) -> None:
    eng = engine(tiny_llama, mm=MultiModalConfig(encoder_budget=4, encoder_cache_size=4))
    run(eng, [(TEXT, [CAT])])
    assert image_hash(CAT) in eng.model_runner.encoder_cache
    run(eng, [(TEXT, [DOG])])
    assert set(eng.model_runner.encoder_cache) == {image_hash(DOG)}, "CAT evicted for DOG"
    assert eng.scheduler.mm_encoder_cache.num_evictions == 1


def test_a_rule_that_skips_the_encode_is_caught(tiny_llama) -> None:
    def never_encode(num_computed, num_new, placeholders, budget, cached):
        return num_new, []

    eng = engine(tiny_llama, mm=MultiModalConfig(plan_chunk=never_encode))
    with expect_raises(EncoderCacheError, "an image position computed without its encoding",
                       match="never encoded"):
        run(eng, [(TEXT, [CAT])])


def test_bad_setups_are_refused(tiny_llama) -> None:
    with expect_raises(ValueError, "images need mm_config", match="mm_config"):
        LLMEngine(model=tiny_llama).add_mm_request(TEXT, GREEDY, images=[CAT])
    with expect_raises(ValueError, "the toy model has no input embeddings", match="toy"):
        LLMEngine(mm_config=MultiModalConfig())
    eng = engine(tiny_llama, mm=MultiModalConfig(encoder_budget=8))
    with expect_raises(ValueError, "a 9-token image can never fit a budget of 8", match="budget"):
        eng.add_mm_request(TEXT, GREEDY, images=[BIRD])
    with expect_raises(ValueError, "an image must be bytes", match="bytes"):
        eng.add_mm_request(TEXT, GREEDY, images=["cat"])


@pytest.mark.parametrize("caching", [True, False])
def test_text_only_requests_are_untouched(tiny_llama, caching: bool) -> None:
    prompt = [1, 2, 3, 4, 5, 6, 7]
    plain = LLMEngine(model=tiny_llama, block_size=4, enable_caching=caching)
    want = [o.output_token_ids for o in plain.generate([prompt], GREEDY)]
    eng = engine(tiny_llama, enable_caching=caching)
    assert [o.output_token_ids for o in eng.generate([prompt], GREEDY)] == want
