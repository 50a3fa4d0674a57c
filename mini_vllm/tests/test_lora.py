"""Multi-LoRA (``LLMEngine(lora_config=...)``): the batched adapter matmul, peft loading, adapter
slots, the scheduler's ``max_loras`` admission, and prefix caching keyed on the adapter.

The master invariant is batch invariance: a batch mixing two adapters and base requests gives
each request the tokens it gets alone with its adapter (tiny Llama in float64; SmolLM2 when
converted). It is backed by a check that does not trust the engine's own LoRA path: one adapter
applied on the fly equals the same adapter merged into the weights (``W + scaling * B @ A``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams, SpeculativeConfig
from mini_vllm.block_pool import hash_block_tokens
from mini_vllm.lora import (
    NO_LORA,
    AdapterSlotCache,
    LoRAConfig,
    LoRAModel,
    LoRARequest,
    add_lora_linear,
    apply_lora_linear,
)
from mini_vllm.lora.tiny_adapters import AdapterSpec, build_tiny_adapter
from mini_vllm.models.loader import load_model
from mini_vllm.models.tiny_llama import build_tiny_llama
from mini_vllm.tests.builders import record_schedules
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.live.models import smollm2_available, smollm2_missing_reason, smollm2_path

PROMPTS = ["Hello there, my friend", "The quick brown fox", "Once upon a time"]
GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def adapters() -> tuple[LoRARequest, LoRARequest]:
    """Two adapters for the tiny Llama: rank 8 on every projection, and rank 4 on q and v only."""
    base = build_tiny_llama()
    one = build_tiny_adapter(base, AdapterSpec(seed=1))
    two = build_tiny_adapter(base, AdapterSpec(seed=2, r=4, lora_alpha=8,
                                               target_modules=("q_proj", "v_proj")))
    return LoRARequest("one", 1, str(one)), LoRARequest("two", 2, str(two))


def _engine(model, max_loras: int = 2, **kwargs) -> LLMEngine:
    return LLMEngine(model=model, lora_config=LoRAConfig(max_loras=max_loras, max_lora_rank=8),
                     **kwargs)


def _tokens(engine: LLMEngine, prompts, loras, params=GREEDY) -> list[list[int]]:
    return [o.output_token_ids for o in engine.generate(prompts, params, lora_request=loras)]


# -- the punica op ---------------------------------------------------------------------------------


def test_grouped_lora_matmul_equals_a_per_row_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 12))
    lora_a = rng.standard_normal((3, 4, 12))
    lora_b = rng.standard_normal((3, 7, 4))
    scalings = np.array([0.5, 2.0, -1.5])
    indices = np.array([2, NO_LORA, 0, 2, 1, NO_LORA, 0, 2, 1])
    y = rng.standard_normal((9, 7))
    expected = y.copy()
    for i, slot in enumerate(indices):
        if slot != NO_LORA:
            expected[i] += scalings[slot] * (x[i] @ lora_a[slot].T) @ lora_b[slot].T
    add_lora_linear(y, x, lora_a, lora_b, scalings, indices)
    assert_close(y, expected, cause="float64-reordered", what="add_lora_linear")
    W = rng.standard_normal((7, 12))
    out = apply_lora_linear(x, W, {s: (lora_a[s], lora_b[s]) for s in range(3)}, indices,
                            {s: scalings[s] for s in range(3)})
    base_rows = indices == NO_LORA
    assert np.array_equal(out[base_rows], (x @ W.T)[base_rows]), "base rows must be x @ W.T"


# -- requests and checkpoints --------------------------------------------------------------------


def test_lora_request_ids_start_at_one() -> None:
    assert LoRARequest("a", 3, "/x").lora_int_id == 3
    with expect_raises(ValueError, "id 0 is the base model", match="lora_int_id"):
        LoRARequest("a", 0, "/x")
    with expect_raises(ValueError, "a name is required", match="lora_name"):
        LoRARequest("", 1, "/x")


def test_peft_checkpoint_loads_with_scaling_alpha_over_r(adapters, tmp_path: Path) -> None:
    lora = LoRAModel.from_local_checkpoint(adapters[1].lora_path, 2)
    assert lora.rank == 4 and lora.scaling == 8 / 4
    q = lora.loras["model.layers.0.self_attn.q_proj"]
    assert q.lora_a.shape == (4, 64) and q.lora_b.shape == (64, 4)
    assert sorted({m.rsplit(".", 1)[1] for m in lora.loras}) == ["q_proj", "v_proj"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / name).write_bytes((Path(adapters[1].lora_path) / name).read_bytes())
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with expect_raises(ValueError, "DoRA is not LoRA", match="use_dora"):
        LoRAModel.from_local_checkpoint(tmp_path, 2)
    (tmp_path / "adapter_config.json").unlink()
    with expect_raises(ValueError, "no config, no adapter", match="adapter_config.json"):
        LoRAModel.from_local_checkpoint(tmp_path, 2)


# -- the engine ------------------------------------------------------------------------------------


def test_mixed_batch_equals_single_adapter_runs(tiny_llama, adapters) -> None:
    one, two = adapters
    prompts = PROMPTS * 2
    loras = [one, two, None, two, None, one]
    mixed = _tokens(_engine(tiny_llama), prompts, loras)
    for i, (prompt, lora) in enumerate(zip(prompts, loras, strict=True)):
        alone = _tokens(_engine(tiny_llama, enable_caching=False), [prompt], [lora])[0]
        assert mixed[i] == alone, (
            f"request {i} ({lora and lora.lora_name}) got {mixed[i]} in the mixed batch but "
            f"{alone} alone: batching changed a tenant's output")
    base = _tokens(LLMEngine(model=tiny_llama), PROMPTS, None)
    assert mixed[0] != base[0] and mixed[1] != base[1], "the adapters must change the tokens"
    assert mixed[0] != _tokens(_engine(tiny_llama), [PROMPTS[0]], [two])[0]


def _merged(adapter: LoRARequest):
    """The tiny Llama with ``adapter`` merged into its weights: ``w += scaling * (B @ A).T``."""
    model = load_model(build_tiny_llama(), dtype=np.float64)
    lora = LoRAModel.from_local_checkpoint(adapter.lora_path, 1, dtype=np.float64)
    attn0 = model.model.layers[0].self_attn
    q, kv = attn0.q_size, attn0.kv_size
    inter = model.model.layers[0].mlp.intermediate_size
    place = {"q_proj": ("self_attn", "qkv_proj", 0, q), "k_proj": ("self_attn", "qkv_proj", q, kv),
             "v_proj": ("self_attn", "qkv_proj", q + kv, kv),
             "o_proj": ("self_attn", "o_proj", 0, None),
             "gate_proj": ("mlp", "gate_up_proj", 0, inter),
             "up_proj": ("mlp", "gate_up_proj", inter, inter),
             "down_proj": ("mlp", "down_proj", 0, None)}
    for module, weights in lora.loras.items():
        layer = model.model.layers[int(module.split(".")[2])]
        owner, name, start, width = place[module.split(".")[4]]
        w = getattr(getattr(layer, owner), name)
        stop = w.shape[1] if width is None else start + width
        w[:, start:stop] += lora.scaling * (weights.lora_b @ weights.lora_a).T
    return model


@pytest.mark.parametrize("which", [0, 1])
def test_adapter_equals_its_merged_weights(tiny_llama, adapters, which: int) -> None:
    adapter = adapters[which]
    served = _tokens(_engine(tiny_llama), PROMPTS, adapter)
    merged = _tokens(LLMEngine(model=_merged(adapter)), PROMPTS, None)
    assert served == merged, (
        f"adapter {adapter.lora_name!r} served as a LoRA gave {served}, merged into W it gives "
        f"{merged}: the delta is applied on the wrong projection, columns or scale")


def test_an_adapter_without_a_slot_waits_without_blocking(tiny_llama, adapters) -> None:
    one, two = adapters
    engine = _engine(tiny_llama, max_loras=1, enable_caching=False)
    long = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    short = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    names = {}
    for name, prompt, lora, params in [("a1", PROMPTS[0], one, long), ("b", PROMPTS[1], two, short),
                                       ("base", PROMPTS[2], None, short),
                                       ("a2", PROMPTS[1], one, short)]:
        names[engine.add_request(prompt, params, lora_request=lora)] = name
    outputs = record_schedules(engine)
    done = {}
    for _ in range(20):
        if not engine.has_unfinished_requests():
            break
        done.update({names[r.request_id]: r.output_token_ids for r in engine.step()})
    admitted = [[names[rid] for rid in out.scheduled_new_req_ids] for out in outputs]
    assert admitted[0] == ["a1", "base", "a2"], (
        f"step 0 admitted {admitted[0]}: 'b' needs a second slot (max_loras=1) and must wait, "
        f"while 'base' (no slot) and 'a2' (adapter already running) go ahead")
    first_b = next(i for i, names_in in enumerate(admitted) if "b" in names_in)
    assert first_b == 5, f"'b' must start the step after the last adapter-one request ends, " \
                         f"got step {first_b}"
    assert engine.lora_slots.stats() == {"hits": 5, "misses": 2, "evictions": 1}, (
        "one load per adapter, one hit per later step that uses it, one eviction")
    assert engine.lora_slots.pinned() == {}, "finished requests must unpin their adapters"
    alone = _tokens(_engine(tiny_llama), [PROMPTS[1]], [two], short)[0]
    assert done["b"] == alone


def test_running_adapters_are_never_evicted_under_preemption(tiny_llama, adapters) -> None:
    one, two = adapters
    loras = [one, two, None, one, two, None]
    prompts = [p[:6] for p in PROMPTS * 2]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    roomy = _tokens(_engine(tiny_llama), prompts, loras, params)
    cramped = _engine(tiny_llama, num_blocks=14, block_size=4)
    outs = cramped.generate(prompts, params, lora_request=loras)
    assert sum(o.num_preemptions for o in outs) > 0, "the pool is meant to force preemption"
    got = [o.output_token_ids for o in outs]
    assert got == roomy, "preemption (pins released and taken again) changed the tokens"
    assert cramped.lora_slots.pinned() == {}
    assert cramped.lora_manager.num_slot_loads == 2, "two adapters, two slots: loaded once each"


def test_abort_and_parallel_sampling_keep_pins_balanced(tiny_llama, adapters) -> None:
    one, two = adapters
    engine = _engine(tiny_llama, max_loras=1)
    rid = engine.add_request(PROMPTS[0], GREEDY, lora_request=one)
    engine.step()
    assert engine.lora_slots.pinned() == {1: 1}
    engine.abort_request(rid)
    assert engine.lora_slots.pinned() == {}, "an aborted running request must unpin its adapter"
    sampled = SamplingParams(n=2, max_tokens=4, temperature=0.0, ignore_eos=True)
    out = engine.generate([PROMPTS[1]], sampled, lora_request=two)[0]
    alone = _tokens(_engine(tiny_llama), [PROMPTS[1]], [two])[0][:4]  # greedy: a prefix
    assert [o.output_token_ids for o in out.outputs] == [alone, alone], (
        "both children of an n=2 request run with the parent's adapter")
    assert engine.lora_slots.pinned() == {}


def test_prefix_cache_is_never_shared_across_adapters(tiny_llama, adapters) -> None:
    one, two = adapters
    prompt = list(range(40, 80))  # 40 tokens: 2 full blocks of 16 can hit
    engine = _engine(tiny_llama, block_size=16)
    outputs = record_schedules(engine)
    hits = []
    tokens = []
    for lora in (None, one, two, one, None):
        rid = engine.add_request(prompt, GREEDY, lora_request=lora)
        start = len(outputs)
        while engine.has_unfinished_requests():
            for r in engine.step():
                tokens.append(r.output_token_ids)
        hits.append(len(prompt) - outputs[start].num_scheduled_tokens[rid])
    assert hits == [0, 0, 0, 32, 32], (
        f"prefix hits per run (base, one, two, one, base) were {hits}: KV computed under one "
        f"adapter must never serve another adapter or the base model")
    cold = _tokens(_engine(tiny_llama, enable_caching=False), [prompt], [two])[0]
    assert tokens[2] == cold
    assert hash_block_tokens(None, [1, 2]) == hash_block_tokens(None, [1, 2], None)
    assert hash_block_tokens(None, [1, 2]) != hash_block_tokens(None, [1, 2], ("lora", 1))


def test_engine_refuses_lora_it_cannot_serve(tiny_llama, adapters, tmp_path: Path) -> None:
    one, _ = adapters
    with expect_raises(ValueError, "LoRA is off", match="lora_config"):
        LLMEngine(model=tiny_llama).add_request("hi", lora_request=one)
    small = LLMEngine(model=tiny_llama, lora_config=LoRAConfig(max_lora_rank=4))
    with expect_raises(ValueError, "rank 8 > max_lora_rank 4", match="max_lora_rank"):
        small.add_request("hi", lora_request=one)
    engine = _engine(tiny_llama)
    engine.add_request("hi", GREEDY, lora_request=one)
    with expect_raises(ValueError, "one id, one adapter", match="already names"):
        engine.add_request("hi", lora_request=LoRARequest("other", 1, one.lora_path))
    with expect_raises(ValueError, "the list must match the prompts", match="lora requests"):
        engine.generate(["a", "b"], GREEDY, lora_request=[one])
    with expect_raises(ValueError, "the toy model has no projections", match="toy"):
        LLMEngine(lora_config=LoRAConfig())
    with expect_raises(ValueError, "no drafts with LoRA", match="speculative"):
        LLMEngine(model=tiny_llama, lora_config=LoRAConfig(),
                  speculative_config=SpeculativeConfig(num_speculative_tokens=2))


# -- the slot cache ------------------------------------------------------------------------------


def test_slot_cache_is_lru_among_unpinned_adapters() -> None:
    cache = AdapterSlotCache(2)
    assert [cache.ensure(a) for a in (1, 2, 1)] == ["load", "load", "hit"]
    assert cache.ensure(3) == "evict+load" and cache.resident() == [1, 3], "2 was the coldest"
    cache.pin(1)
    cache.ensure(3)  # 1 is now the least recently used, but pinned
    assert cache.ensure(4) == "evict+load" and cache.resident() == [1, 4], "1 is pinned"
    cache.pin(4)
    assert not cache.can_admit(5) and cache.can_admit(1)
    with expect_raises(RuntimeError, "every slot pinned", match="pinned"):
        cache.ensure(5)
    cache.unpin(4)
    assert cache.can_admit(5)
    with expect_raises(ValueError, "4 is not pinned any more", match="not pinned"):
        cache.unpin(4)
    assert cache.stats() == {"hits": 2, "misses": 4, "evictions": 2}


# -- SmolLM2 ------------------------------------------------------------------------------------


@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_smollm2_mixed_adapters_equal_single_runs() -> None:
    from mini_vllm import LLM

    base = smollm2_path()
    one = LoRARequest("one", 1, str(build_tiny_adapter(base, AdapterSpec(seed=1, b_std=0.05))))
    two = LoRARequest("two", 2, str(build_tiny_adapter(base, AdapterSpec(seed=2, b_std=0.05))))
    llm = LLM(base, max_model_len=64, lora_config=LoRAConfig(max_loras=2, max_lora_rank=8),
              enable_caching=False)
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    prompts = ["Machine learning is", "The capital of France is", "Water boils at"]
    loras = [one, two, None]
    mixed = _tokens(llm.engine, prompts, loras, params)
    for prompt, lora, got in zip(prompts, loras, mixed, strict=True):
        alone = _tokens(llm.engine, [prompt], [lora], params)[0]
        assert got == alone, f"{prompt!r}: {got} in the mixed batch, {alone} alone"
    base = _tokens(llm.engine, prompts[:2], None, params)
    assert mixed[0] != base[0] and mixed[1] != base[1], "each adapter must change its answer"
