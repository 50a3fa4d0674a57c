"""Kata 11-02: one batch, a base model and two LoRA adapters; every request must get the tokens it
gets alone under its own tag. First against a fake engine (cpu, no vLLM), then on vLLM itself
(live): the tiny Llama in float32 with two seeded peft adapters, in every order of [A, B, base],
and on an engine whose adapter slots are all full, where vLLM's CPU path serves base requests
with an adapter and your checker must say which."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from katas.phase11.serve_many_loras.scaffold import (
    UNMATCHED,
    Job,
    StandInLoRARequest,
    Verdict,
)
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines

pytestmark = pytest.mark.gpu_opt

A, B = "adapter-a", "adapter-b"
DIRS = {A: "/adapters/a", B: "/adapters/b"}
PROMPTS = ["hello world", "The capital of", "LoRA!"]
ORDERS = list(itertools.permutations([A, B, None]))
ORDER_IDS = ["-".join(t or "base" for t in order) for order in ORDERS]


# ------------------------------------------------------------------------ a fake engine (cpu)


def _tokens(prompt: str, tag: str | None) -> tuple[int, ...]:
    digest = hashlib.sha256(f"{prompt}|{tag}".encode()).digest()
    return tuple(digest[:6])


class FakeLLM:
    """Answers like ``vllm.LLM.generate``: one output per prompt, in order, tokens a function of
    (prompt, adapter name). ``full_slots_bug`` imitates what vLLM's CPU path does when every
    adapter slot is taken: base requests in a batch with adapters get the last slot's adapter."""

    def __init__(self, max_loras: int = 3, full_slots_bug: bool = False) -> None:
        self.max_loras, self.full_slots_bug = max_loras, full_slots_bug
        self.slots: list[str] = []  # adapter names in load order (first free slot)
        self.calls: list[list[tuple[str, str | None]]] = []

    def generate(self, prompts: Any, sampling_params: Any = None, *, lora_request: Any = None,
                 use_tqdm: bool = True) -> list[Any]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
        assert len(loras) == len(prompts), (
            f"lora_request holds {len(loras)} entries for {len(prompts)} prompts: one per prompt")
        tags = []
        for lora in loras:
            assert lora is None or isinstance(lora, StandInLoRARequest), (
                f"lora_request entries are LoRARequests or None, got {lora!r}")
            tags.append(None if lora is None else lora.lora_name)
        for tag in tags:
            if tag is not None and tag not in self.slots:
                self.slots.append(tag)
        self.calls.append(list(zip(prompts, tags, strict=True)))
        mixed = len(prompts) > 1 and any(t is not None for t in tags)
        out = []
        for prompt, tag in zip(prompts, tags, strict=True):
            served = tag
            if (self.full_slots_bug and tag is None and mixed
                    and len(self.slots) >= self.max_loras):
                served = self.slots[self.max_loras - 1]
            out.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(_tokens(prompt,
                                                                                       served)))]))
        return out


def _solo(prompts: list[str] = PROMPTS) -> dict[tuple[str, str | None], tuple[int, ...]]:
    return {(p, t): _tokens(p, t) for p in prompts for t in (None, A, B)}


def _requests(impl) -> dict[str, Any]:
    return impl.make_lora_requests(DIRS, request_cls=StandInLoRARequest)


def _describe(verdicts: list[Verdict]) -> str:
    return "; ".join(f"#{v.index} asked {v.requested!r} served as {v.served_as!r}"
                     for v in verdicts)


def test_adapter_ids_start_at_one_and_are_unique(impl) -> None:
    got = _requests(impl)
    assert list(got) == [A, B], f"one request per adapter name, in order; got keys {list(got)}"
    ids = [r.lora_int_id for r in got.values()]
    assert ids == [1, 2], (
        f"lora_int_id 0 means the base model upstream and vLLM caches adapters by id: number "
        f"them 1, 2, ... in order; got {ids}")


def test_requests_carry_name_and_path(impl) -> None:
    got = impl.make_lora_requests({A: Path("/adapters/a")}, request_cls=StandInLoRARequest)
    req = got[A]
    assert (req.lora_name, req.lora_path) == (A, "/adapters/a"), (
        f"the request names the adapter and its directory as a string; got {req!r}")
    assert impl.make_lora_requests({}, request_cls=StandInLoRARequest) == {}, "no adapters, none"


def test_batch_arguments_keep_the_jobs_order(impl) -> None:
    reqs = _requests(impl)
    jobs = [Job("p0", B), Job("p1"), Job("p2", A), Job("p3", B), Job("p4")]
    prompts, loras = impl.batch_arguments(jobs, reqs)
    assert prompts == ["p0", "p1", "p2", "p3", "p4"], (
        f"the engine answers in the order it was asked: keep the jobs' order, got {prompts}")
    names = [None if r is None else r.lora_name for r in loras]
    assert names == [B, None, A, B, None], (
        f"one lora_request entry per prompt, None for a base job; got {names}")
    assert loras[0] is reqs[B] and loras[2] is reqs[A], "pass the requests themselves"


def test_an_unknown_adapter_is_refused(impl) -> None:
    with expect_raises(ValueError, "a job names an adapter with no LoRARequest", match="adapter-c"):
        impl.batch_arguments([Job("p", "adapter-c")], _requests(impl))


def test_collect_tokens_reads_each_requests_completion(impl) -> None:
    outs = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[3, 1, 4])]),
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=[])])]
    got = impl.collect_tokens(outs)
    assert [tuple(t) for t in got] == [(3, 1, 4), ()], f"got {got}"


def test_collect_tokens_refuses_several_completions(impl) -> None:
    two = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1]),
                                    SimpleNamespace(token_ids=[2])])]
    with expect_raises(ValueError, "n > 1 gives several completions per request; one expected",
                       match="completion"):
        impl.collect_tokens(two)


def test_run_alone_covers_every_prompt_under_every_tag(impl) -> None:
    llm = FakeLLM()
    jobs = [Job(PROMPTS[0], A), Job(PROMPTS[1]), Job(PROMPTS[0])]
    got = impl.run_alone(llm, jobs, _requests(impl), params=None)
    want = {(p, t) for p in PROMPTS[:2] for t in (None, A, B)}
    assert set(got) == want, (
        f"solo runs of each distinct prompt under base and under every adapter (so a mix-up can "
        f"be named): want {sorted(want, key=str)}, got {sorted(got, key=str)}")
    wrong = {k: v for k, v in got.items() if tuple(v) != _tokens(*k)}
    assert not wrong, f"these solo runs do not hold what the engine returned: {wrong}"


def test_run_alone_is_one_request_per_call(impl) -> None:
    llm = FakeLLM()
    impl.run_alone(llm, [Job(p) for p in PROMPTS], _requests(impl), params=None)
    sizes = [len(c) for c in llm.calls]
    assert sizes == [1] * 9, (
        f"'alone' means one request per generate call: 3 prompts x 3 tags = 9 calls of 1; "
        f"got call sizes {sizes}")


def test_run_batch_is_one_call_and_follows_the_tags(impl) -> None:
    llm = FakeLLM()
    jobs = [Job(PROMPTS[0], B), Job(PROMPTS[1]), Job(PROMPTS[2], A)]
    got = impl.run_batch(llm, jobs, _requests(impl), params=None)
    assert len(llm.calls) == 1 and len(llm.calls[0]) == 3, (
        f"the whole batch goes to the engine in one generate call; calls: {llm.calls}")
    want = [_tokens(j.prompt, j.adapter) for j in jobs]
    assert [tuple(t) for t in got] == want, f"tokens in job order: want {want}, got {got}"


@pytest.mark.parametrize("order", ORDERS, ids=ORDER_IDS)
def test_check_batch_passes_a_faithful_batch(impl, order: tuple) -> None:
    llm = FakeLLM()
    jobs = [Job(PROMPTS[0], tag) for tag in order]
    batch = impl.run_batch(llm, jobs, _requests(impl), params=None)
    verdicts = impl.check_batch(jobs, batch, _solo())
    assert [v.index for v in verdicts] == [0, 1, 2], f"one verdict per job, in order: {verdicts}"
    assert all(v.ok for v in verdicts), (
        f"every request got its own tag's tokens: {_describe(verdicts)}")
    assert [v.requested for v in verdicts] == list(order), _describe(verdicts)


def test_check_batch_follows_the_tag_not_the_prompt(impl) -> None:
    jobs = [Job(PROMPTS[0], A), Job(PROMPTS[0], B)]
    swapped = [_tokens(PROMPTS[0], B), _tokens(PROMPTS[0], A)]
    verdicts = impl.check_batch(jobs, swapped, _solo())
    got = [(v.ok, v.served_as) for v in verdicts]
    assert got == [(False, B), (False, A)], (
        f"same prompt, adapters swapped: both requests are wrong, each served as the other "
        f"adapter; got {got}")


def test_check_batch_catches_a_base_request_served_with_an_adapter(impl) -> None:
    llm = FakeLLM(max_loras=2, full_slots_bug=True)
    reqs = _requests(impl)
    solo = impl.run_alone(llm, [Job(PROMPTS[0])], reqs, params=None)
    jobs = [Job(PROMPTS[0], A), Job(PROMPTS[0]), Job(PROMPTS[0], B)]
    batch = impl.run_batch(llm, jobs, reqs, params=None)
    verdicts = impl.check_batch(jobs, batch, solo)
    got = [(v.requested, v.served_as, v.ok) for v in verdicts]
    assert got == [(A, A, True), (None, B, False), (B, B, True)], (
        f"the engine served the base request with the adapter in its last slot ({B}): the "
        f"verdicts must say so; got {got}")


def test_check_batch_flags_tokens_no_solo_run_produced(impl) -> None:
    jobs = [Job(PROMPTS[1], A)]
    verdicts = impl.check_batch(jobs, [(9, 9, 9)], _solo())
    assert len(verdicts) == 1 and verdicts[0].served_as == UNMATCHED and not verdicts[0].ok, (
        f"tokens that match no solo run are UNMATCHED, not assumed right: {verdicts}")
    assert tuple(verdicts[0].tokens) == (9, 9, 9), "the verdict keeps what the batch gave"


def test_check_batch_refuses_a_batch_of_the_wrong_length(impl) -> None:
    jobs = [Job(PROMPTS[0], A), Job(PROMPTS[0])]
    with expect_raises(ValueError, "one output is missing: a job without an output is no pass",
                       match="jobs"):
        impl.check_batch(jobs, [_tokens(PROMPTS[0], A)], _solo())


def test_check_batch_refuses_a_job_without_a_solo_run(impl) -> None:
    solo = {k: v for k, v in _solo().items() if k != (PROMPTS[2], B)}
    with expect_raises(ValueError, "there is nothing to compare the job with",
                       match="solo run"):
        impl.check_batch([Job(PROMPTS[2], B)], [_tokens(PROMPTS[2], B)], solo)


def test_check_batch_refuses_solo_runs_that_cannot_tell_tags_apart(impl) -> None:
    solo = _solo()
    solo[(PROMPTS[0], B)] = solo[(PROMPTS[0], None)]  # an adapter that changes nothing
    with expect_raises(ValueError, "an adapter whose solo run equals the base's proves nothing",
                       match="identical"):
        impl.check_batch([Job(PROMPTS[0])], [solo[(PROMPTS[0], None)]], solo)


# --------------------------------------------------------------------------------------- live

MAX_TOKENS = 4  # enough for the two adapters and base to differ on every prompt
LORA_RANK = 8  # the seeded adapters' rank (pytest_vllm_katas.live.lora_adapters)


@dataclass(frozen=True)
class LoraEngineConfig(EngineConfig):
    """The live tier's engine config plus vLLM's LoRA knobs (``LoRAConfig``)."""

    max_loras: int = 3
    max_lora_rank: int = LORA_RANK
    max_cpu_loras: int | None = None

    def llm_kwargs(self, model_path: Path) -> dict[str, Any]:
        kw = super().llm_kwargs(model_path)
        kw.update(enable_lora=True, max_loras=self.max_loras, max_lora_rank=self.max_lora_rank)
        if self.max_cpu_loras is not None:
            kw["max_cpu_loras"] = self.max_cpu_loras
        return kw


# float32, no prefix caching: the same as kata 08-02's base engine.
PLAIN = EngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False)
# Three slots for two adapters: the last slot stays empty (see the README).
ROOMY = LoraEngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False, max_loras=3)
# The course's max_loras=2: both slots full once A and B are loaded.
FULL = LoraEngineConfig(model="tiny", dtype="float32", enable_prefix_caching=False, max_loras=2)
assert {f.name for f in fields(LoraEngineConfig)} > {f.name for f in fields(EngineConfig)}


def _greedy() -> Any:
    from vllm import SamplingParams

    return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def adapter_dirs() -> dict[str, Path]:
    """The two seeded peft adapters (built once into the model cache; seconds, no training)."""
    from pytest_vllm_katas.live.lora_adapters import build_lora_adapters

    return build_lora_adapters()


@pytest.fixture(scope="module")
def plain_tokens(live_engines: LiveEngines) -> dict[str, tuple[int, ...]]:
    """Each prompt alone on an engine without LoRA: what 'base' means."""
    llm = live_engines.get(PLAIN).llm
    return {p: tuple(llm.generate([p], _greedy(), use_tqdm=False)[0].outputs[0].token_ids)
            for p in PROMPTS}


@dataclass
class LiveSetup:
    llm: Any
    requests: dict[str, Any]
    solo: dict[tuple[str, str | None], tuple[int, ...]]


@pytest.fixture(scope="module")
def setups() -> dict[tuple[Any, str], LiveSetup]:
    """Solo runs per (implementation, engine), made once: `impl` is per test, engines are not."""
    return {}


def _setup(impl, request: pytest.FixtureRequest, live_engines: LiveEngines,
           config: LoraEngineConfig) -> LiveSetup:
    requests = impl.make_lora_requests(request.getfixturevalue("adapter_dirs"))
    # The engine without LoRA first: the engines start one after the other, each once.
    request.getfixturevalue("plain_tokens")
    cache: dict[tuple[Any, str], LiveSetup] = request.getfixturevalue("setups")
    llm = live_engines.get(config).llm
    key = (impl, repr(config))
    if key not in cache or cache[key].llm is not llm:
        solo = impl.run_alone(llm, [Job(p) for p in PROMPTS], requests, _greedy())
        cache[key] = LiveSetup(llm, requests, {k: tuple(v) for k, v in solo.items()})
    return cache[key]


@pytest.fixture
def roomy(impl, request: pytest.FixtureRequest, live_engines: LiveEngines) -> LiveSetup:
    return _setup(impl, request, live_engines, ROOMY)


@pytest.mark.live
def test_vllm_solo_runs_base_is_base_and_adapters_differ(
        impl, roomy: LiveSetup, plain_tokens: dict[str, tuple[int, ...]]) -> None:
    assert set(roomy.solo) == {(p, t) for p in PROMPTS for t in (None, A, B)}, (
        f"run_alone must cover every prompt under base, {A} and {B}; got "
        f"{sorted(roomy.solo, key=str)}")
    for p in PROMPTS:
        assert roomy.solo[(p, None)] == plain_tokens[p], (
            f"{p!r} as a base request on the LoRA engine gave {roomy.solo[(p, None)]}; an engine "
            f"without LoRA gives {plain_tokens[p]}")
        runs = {t: roomy.solo[(p, t)] for t in (None, A, B)}
        assert len(set(runs.values())) == 3, (
            f"the adapters must change {p!r}'s greedy tokens for the comparison to mean "
            f"anything: {runs}")


@pytest.mark.live
@pytest.mark.parametrize("order", ORDERS, ids=ORDER_IDS)
def test_vllm_mixed_batch_follows_each_tag(impl, roomy: LiveSetup, order: tuple,
                                           plain_tokens: dict[str, tuple[int, ...]]) -> None:
    prompt = PROMPTS[ORDERS.index(order) % len(PROMPTS)]
    jobs = [Job(prompt, tag) for tag in order]
    batch = impl.run_batch(roomy.llm, jobs, roomy.requests, _greedy())
    want = [roomy.solo[(prompt, tag)] for tag in order]
    assert [tuple(t) for t in batch] == want, (
        f"one generate call with {order} on {prompt!r}: each request must give its solo "
        f"tokens {want}; got {batch}")
    base_row = order.index(None)
    assert tuple(batch[base_row]) == plain_tokens[prompt], "the base request stays base"
    verdicts = impl.check_batch(jobs, batch, roomy.solo)
    assert all(v.ok for v in verdicts) and [v.served_as for v in verdicts] == list(order), (
        f"vLLM served every tag faithfully; your verdicts say: {_describe(verdicts)}")


@pytest.mark.live
def test_vllm_batch_of_different_prompts_and_tags(impl, roomy: LiveSetup) -> None:
    jobs = [Job(PROMPTS[0], B), Job(PROMPTS[1]), Job(PROMPTS[2], A), Job(PROMPTS[0]),
            Job(PROMPTS[1], A)]
    batch = impl.run_batch(roomy.llm, jobs, roomy.requests, _greedy())
    verdicts = impl.check_batch(jobs, batch, roomy.solo)
    assert [tuple(t) for t in batch] == [roomy.solo[(j.prompt, j.adapter)] for j in jobs], (
        f"five requests, three prompts, three tags in one call: {_describe(verdicts)}")
    assert all(v.ok for v in verdicts), _describe(verdicts)


# Find the bug: every slot full. Kept last in the module: it needs its own engine.


@pytest.fixture
def full(impl, request: pytest.FixtureRequest, live_engines: LiveEngines) -> LiveSetup:
    return _setup(impl, request, live_engines, FULL)


@pytest.mark.live
def test_vllm_cpu_serves_base_with_the_last_slot_when_slots_are_full(
        impl, full: LiveSetup, plain_tokens: dict[str, tuple[int, ...]]) -> None:
    prompt = PROMPTS[0]
    assert full.solo[(prompt, None)] == plain_tokens[prompt], (
        "alone, a base request is still base on the full engine")
    served: dict[tuple, tuple[str | None, ...]] = {}
    truth: dict[tuple, tuple[str | None, ...]] = {}
    by_tokens = {full.solo[(prompt, t)]: t for t in (None, A, B)}
    for order in ORDERS:
        jobs = [Job(prompt, tag) for tag in order]
        batch = impl.run_batch(full.llm, jobs, full.requests, _greedy())
        truth[order] = tuple(by_tokens.get(tuple(t), UNMATCHED) for t in batch)
        served[order] = tuple(v.served_as for v in impl.check_batch(jobs, batch, full.solo))
    if all(truth[o] == o for o in ORDERS):
        pytest.skip("this vLLM serves base requests faithfully even with every slot full: the "
                    "bug this test documents is fixed; nothing to find")
    for order in ORDERS:
        base = order.index(None)
        assert truth[order][base] in (A, B), (
            f"vLLM gave the base request of {order} tokens of {truth[order][base]!r}")
        assert all(truth[order][i] == order[i] for i in range(3) if i != base), (
            f"the adapter requests of {order} were served as {truth[order]}")
        assert served[order] == truth[order], (
            f"in {order}, vLLM served the requests as {truth[order]} (the base request got an "
            f"adapter's tokens); your checker says {served[order]}")
