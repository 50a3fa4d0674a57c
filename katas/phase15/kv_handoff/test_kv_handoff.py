"""Spec for kata 15-01: a live request moves from engine P to engine D with its real KV, and
finishes token for token as if it had never moved.

The engines run mini_vllm's tiny Llama (float64, 2 layers, 2 KV heads of 16), which attends
over the paged cache: K/V that is missing, misplaced or corrupted changes the tokens (or the
model runner names the slot). Blocks of 4 tokens and a 10-token prompt, so the computed tokens
end inside a partly filled block. One test repeats the handoff on SmolLM2-135M when it has been
fetched (``katas models fetch``).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from katas.phase15.kv_handoff.scaffold import DestinationFullError
from mini_vllm import LLMEngine, SamplingParams
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.models import (
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)

pytestmark = pytest.mark.cpu_ok

BLOCK = 4
PROMPT = [(7 * i + 3) % 250 + 1 for i in range(10)]  # 10 tokens: blocks of 4, 4 and 2
OTHER = [200, 201, 202, 203, 204, 205]  # a second request, so block tables are not 1, 2, 3
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
SHORT = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
MAX_STEPS = 200  # every engine loop in this file is bounded by it


def engine(model, **kwargs) -> LLMEngine:
    kwargs.setdefault("num_blocks", 32)
    kwargs.setdefault("block_size", BLOCK)
    return LLMEngine(model=model, **kwargs)


def drain(eng: LLMEngine) -> dict[str, list[int]]:
    """Run an engine to the end with the stock loop (bounded): the test's own oracle."""
    outputs: dict[str, list[int]] = {}
    for _ in range(MAX_STEPS):
        if not eng.has_unfinished_requests():
            return outputs
        for request in eng.step():
            outputs[request.request_id] = list(request.output_token_ids)
    raise AssertionError(f"the engine did not finish within {MAX_STEPS} steps")


def uninterrupted(model, params: SamplingParams = GREEDY, prompt=PROMPT, **kwargs) -> list[int]:
    eng = engine(model, **kwargs)
    eng.add_request(prompt, params, request_id="r")
    return drain(eng)["r"]


def source_after(model, steps: int, params: SamplingParams = GREEDY, *, other: bool = True,
                 **kwargs) -> LLMEngine:
    """Engine P, ``steps`` steps into request "r" (and, with ``other``, a request before it)."""
    eng = engine(model, **kwargs)
    if other:
        eng.add_request(OTHER, GREEDY, request_id="other")
    eng.add_request(PROMPT, params, request_id="r")
    for _ in range(steps):
        eng.step()
    return eng


def continued(impl, dest: LLMEngine, snapshot) -> list[int]:
    impl.import_request(dest, snapshot)
    outputs = impl.run_to_completion(dest)
    assert isinstance(outputs, dict) and "r" in outputs, (
        f"run_to_completion returns {{request_id: output ids}} for every request that finished; "
        f"got {outputs!r}")
    return outputs["r"]


def free_blocks(eng: LLMEngine) -> int:
    return eng.kv_cache_manager.block_pool.get_num_free_blocks()


def read_kv(eng: LLMEngine, request_id: str, num_tokens: int) -> list[tuple[np.ndarray, ...]]:
    """The request's K/V read straight from the engine's paged cache through its block table."""
    table = np.asarray(eng.kv_cache_manager.get_block_ids(request_id))
    t = np.arange(num_tokens)
    out = []
    for k, v in eng.model_runner.kv_caches:
        out.append((k[table[t // BLOCK], t % BLOCK].copy(), v[table[t // BLOCK], t % BLOCK].copy()))
    return out


def live_ids(eng: LLMEngine) -> tuple[list[str], list[str]]:
    return ([r.request_id for r in eng.scheduler.running],
            [r.request_id for r in eng.scheduler.waiting])


# -- the course's five ---------------------------------------------------------------------------


def test_handoff_after_prefill_continues_identically(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    src = source_after(tiny_llama, 1)  # one step: the whole prefill and the first token
    snapshot = impl.export_request(src, "r")
    assert snapshot.num_computed_tokens == 10 and snapshot.output_token_ids == expected[:1], (
        f"after one step P has computed the 10 prompt tokens and sampled the first token "
        f"{expected[:1]}; the snapshot says {snapshot.num_computed_tokens} computed, outputs "
        f"{snapshot.output_token_ids}")
    got = continued(impl, engine(tiny_llama), snapshot)
    assert got == expected, (
        f"prefill on P, decode on D must give the uninterrupted run's tokens\n"
        f"  expected {expected}\n  got      {got}")


def test_handoff_mid_decode_also_works(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    src = source_after(tiny_llama, 5)  # prefill + first token, then 4 decode steps
    snapshot = impl.export_request(src, "r")
    assert snapshot.num_computed_tokens == 14, (
        f"5 steps in, 10 prompt + 4 fed-back outputs have KV: 14, got "
        f"{snapshot.num_computed_tokens}")
    dest = engine(tiny_llama)
    dest.add_request(OTHER, GREEDY, request_id="busy")  # D is serving someone already
    dest.step()
    got = continued(impl, dest, snapshot)
    assert got == expected, (
        f"a request moved mid-decode onto a busy D must finish like the uninterrupted run\n"
        f"  expected {expected}\n  got      {got}")


def test_source_engine_is_clean_after_export(impl, tiny_llama) -> None:
    src = source_after(tiny_llama, 3, other=False)
    assert src.kv_cache_manager.get_usage() > 0
    impl.export_request(src, "r")
    usage = src.kv_cache_manager.get_usage()
    assert usage == 0.0, (
        f"after the export the source holds no block for the request: KV usage must be 0.0, got "
        f"{usage} ({src.kv_cache_manager.get_block_ids('r')} still allocated)")
    running, waiting = live_ids(src)
    assert "r" not in running and "r" not in waiting, (
        f"the exported request must leave the source's schedule; running {running}, waiting "
        f"{waiting}")
    assert not src.has_unfinished_requests(), "the source has nothing left to run"
    assert drain(src) == {}, "stepping the source afterwards produces nothing"


@pytest.mark.parametrize("dest_block_size", [BLOCK, 8, 16])
def test_destination_pays_the_kv_bill(impl, tiny_llama, dest_block_size: int) -> None:
    src = source_after(tiny_llama, 1)
    snapshot = impl.export_request(src, "r")
    dest = engine(tiny_llama, block_size=dest_block_size)
    before = free_blocks(dest)
    impl.import_request(dest, snapshot)
    bill = math.ceil(10 / dest_block_size)
    claimed = before - free_blocks(dest)
    table = dest.kv_cache_manager.get_block_ids("r")
    assert claimed == bill and len(table) == bill, (
        f"10 computed tokens in blocks of {dest_block_size} cost exactly ceil(10 / "
        f"{dest_block_size}) = {bill} of D's blocks at import; D's pool lost {claimed}, the "
        f"request's table holds {table} (0 means D will recompute: the KV was not used)")
    assert dest.get_request("r").num_computed_tokens == 10, (
        "the imported request keeps its counter: 10 tokens are computed on arrival")
    expected = uninterrupted(tiny_llama)
    got = impl.run_to_completion(dest).get("r")
    assert got == expected, (
        f"block sizes need not match (only logical order travels): expected {expected}, got "
        f"{got}")


def test_destination_oom_is_loud(impl, tiny_llama, reference_impl) -> None:
    snapshot = reference_impl.export_request(source_after(tiny_llama, 1), "r")  # needs 3 blocks
    tiny = engine(tiny_llama, num_blocks=3)  # 2 usable blocks
    with expect_raises(DestinationFullError,
                       "2 free blocks cannot hold 10 computed tokens (3 blocks of 4): the import "
                       "must fail at once, not mid-decode"):
        impl.import_request(tiny, snapshot)
    busy = engine(tiny_llama, num_blocks=6)  # 5 usable, 3 of them taken below
    busy.add_request([9] * 9, SHORT, request_id="busy")
    busy.step()
    assert free_blocks(busy) == 2
    with expect_raises(DestinationFullError,
                       "D has 5 usable blocks but only 2 free: capacity is what is free now"):
        impl.import_request(busy, snapshot)
    exact = engine(tiny_llama, num_blocks=4)  # exactly the 3 blocks the request needs
    impl.import_request(exact, snapshot)
    assert free_blocks(exact) == 0, "an exact fit is not an OOM: all 3 free blocks are claimed"


# -- what the real KV adds -----------------------------------------------------------------------


def test_snapshot_holds_the_kv_in_token_order(impl, tiny_llama) -> None:
    src = source_after(tiny_llama, 2)  # "other" first: r's blocks are not 1, 2, 3
    request = src.get_request("r")
    truth = read_kv(src, "r", request.num_computed_tokens)
    snapshot = impl.export_request(src, "r")
    n = snapshot.num_computed_tokens
    assert n == 11 and len(snapshot.kv) == 2, (
        f"two steps in: 11 computed tokens, K/V for 2 layers; got {n} tokens, "
        f"{len(snapshot.kv)} layers")
    for layer, (k, v) in enumerate(snapshot.kv):
        for name, got, want in (("K", k, truth[layer][0]), ("V", v, truth[layer][1])):
            assert np.shape(got) == (11, 2, 16), (
                f"layer {layer} {name}: one row per computed token, [11, 2, 16]; got "
                f"{np.shape(got)} (the last block holds only 3 of its 4 slots' worth)")
            assert np.array_equal(got, want), (
                f"layer {layer} {name}: row t must be token t's {name}, read through P's block "
                f"table {src.kv_cache_manager.get_block_ids('r') or '(freed)'}; it is not")
    for k_cache, v_cache in src.model_runner.kv_caches:
        k_cache[...] = 0.0  # P's memory is reused by someone else
        v_cache[...] = 0.0
    assert np.array_equal(snapshot.kv[0][0], truth[0][0]), (
        "the snapshot must own copies of the K/V: P's blocks are reused after the export")
    expected_bytes = n * 2 * 2 * 2 * 16 * 8  # tokens x (K, V) x layers x heads x dim x float64
    assert snapshot.payload_bytes() == expected_bytes, (
        f"the freight is kata 15-03's kv_payload_bytes(11, 2 * 2 * 2 * 16 * 8) = "
        f"{expected_bytes} bytes, got {snapshot.payload_bytes()}")


@pytest.mark.parametrize(("layer", "which"), [(0, "K"), (1, "V")])
def test_corrupted_kv_changes_the_continuation(impl, tiny_llama, layer: int, which: str) -> None:
    expected = uninterrupted(tiny_llama)
    snapshot = impl.export_request(source_after(tiny_llama, 1), "r")
    intact = continued(impl, engine(tiny_llama), pickle.loads(pickle.dumps(snapshot)))
    assert intact == expected, f"the intact snapshot continues identically: {intact}"
    damaged = pickle.loads(pickle.dumps(snapshot))
    array = damaged.kv[layer][0 if which == "K" else 1]
    array[:] = np.random.default_rng(0).standard_normal(array.shape) * array.std()
    got = continued(impl, engine(tiny_llama), damaged)
    assert got != expected, (
        f"replacing layer {layer}'s {which} in transit with noise must change the tokens: D "
        f"must attend over the shipped K/V, not over something it computed itself. Both gave "
        f"{got}")


def test_failed_import_leaves_the_destination_as_it_was(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    snapshot = impl.export_request(source_after(tiny_llama, 1), "r")
    kept = pickle.dumps(snapshot)
    for kwargs, why in (({"num_blocks": 5}, "3 free blocks are taken by 'busy': no room"),
                        ({"max_num_seqs": 1}, "max_num_seqs=1 and 'busy' holds the seat")):
        dest = engine(tiny_llama, **kwargs)
        dest.add_request([9] * 9, SHORT, request_id="busy")
        dest.step()
        before = (free_blocks(dest), live_ids(dest), dest.kv_cache_manager.get_usage())
        with expect_raises(DestinationFullError, why):
            impl.import_request(dest, snapshot)
        after = (free_blocks(dest), live_ids(dest), dest.kv_cache_manager.get_usage())
        assert after == before, (
            f"a refused import ({why}) must leave D exactly as it was: (free blocks, (running, "
            f"waiting), usage) was {before}, is {after}")
        assert dest.kv_cache_manager.get_block_ids("r") == [], (
            "a refused import leaves no half request: D holds no block for 'r'")
        assert drain(dest).keys() == {"busy"}, "D goes on serving its own request, and only it"
    assert pickle.dumps(snapshot) == kept, "a refused import must not modify the snapshot"
    got = continued(impl, engine(tiny_llama), snapshot)
    assert got == expected, (
        f"the refused snapshot is still good: imported into a bigger D it continues "
        f"identically; expected {expected}, got {got}")


def test_imported_request_runs_without_readmission(impl, tiny_llama) -> None:
    snapshot = impl.export_request(source_after(tiny_llama, 1), "r")
    dest = engine(tiny_llama)
    impl.import_request(dest, snapshot)
    running, waiting = live_ids(dest)
    assert running == ["r"] and waiting == [], (
        f"the import joins D's running set directly (admission with prepaid compute), it is "
        f"not queued: running {running}, waiting {waiting}")
    status = dest.get_request("r").status.name
    assert status == "RUNNING", f"the imported request's status must be RUNNING, got {status}"
    dest.step()
    scheduled = dest.scheduler.last_num_scheduled_tokens
    assert scheduled == {"r": 1}, (
        f"D's first step computes only the one token not yet computed (the first output), "
        f"never the prompt again: it scheduled {scheduled}")


def test_imported_blocks_serve_prefix_hits(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    snapshot = impl.export_request(source_after(tiny_llama, 1), "r")
    dest = engine(tiny_llama)  # prefix caching on (the default)
    impl.import_request(dest, snapshot)
    dest.add_request(PROMPT, GREEDY, request_id="twin")
    dest.step()
    twin = dest.get_request("twin")
    assert twin.num_computed_tokens == 10 and twin.num_output_tokens == 1, (
        f"the imported full blocks (tokens 0..7) are registered in D's prefix cache, so a twin "
        f"prompt hits 8 tokens and computes 2: after its first step it has 10 computed and one "
        f"output; got {twin.num_computed_tokens} computed, {twin.num_output_tokens} outputs")
    hit_blocks = dest.kv_cache_manager.get_block_ids("twin")[:2]
    assert hit_blocks == dest.kv_cache_manager.get_block_ids("r")[:2], (
        f"the twin must share r's two imported full blocks, got {hit_blocks}")
    outputs = impl.run_to_completion(dest)
    assert outputs.get("r") == expected and outputs.get("twin") == expected, (
        f"both read the shipped K/V and finish like the uninterrupted run {expected}: "
        f"got {outputs}")


def test_seeded_sampled_request_continues_identically(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama, SEEDED, generators="per_request")
    src = source_after(tiny_llama, 4, SEEDED, generators="per_request")
    snapshot = impl.export_request(src, "r")
    got = continued(impl, engine(tiny_llama, generators="per_request"), snapshot)
    assert got == expected, (
        f"a seeded request at temperature 1.0 with its own generator: the draws left in that "
        f"generator must continue on D, not restart from the seed\n  expected {expected}\n"
        f"  got      {got}")


def test_snapshot_pickles_and_imports_twice(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    snapshot = impl.export_request(source_after(tiny_llama, 3), "r")
    sent = pickle.dumps(snapshot)
    first = continued(impl, engine(tiny_llama), pickle.loads(sent))
    second = continued(impl, engine(tiny_llama), snapshot)
    third = continued(impl, engine(tiny_llama), snapshot)
    assert first == second == third == expected, (
        f"the pickled copy and the snapshot itself (twice) all continue identically: expected "
        f"{expected}, got {first}, {second}, {third}")
    assert pickle.dumps(snapshot) == sent, (
        "importing must not change the snapshot (copy its lists, do not adopt them: D appends "
        "tokens to the request's outputs)")


def test_mid_prefill_export_also_works(impl, tiny_llama) -> None:
    expected = uninterrupted(tiny_llama)
    src = source_after(tiny_llama, 1, other=False, long_prefill_token_threshold=4)
    snapshot = impl.export_request(src, "r")
    assert snapshot.num_computed_tokens == 4 and snapshot.output_token_ids == [], (
        f"with chunks of 4, one step computes 4 prompt tokens and samples nothing; got "
        f"{snapshot.num_computed_tokens} computed, outputs {snapshot.output_token_ids}")
    got = continued(impl, engine(tiny_llama), snapshot)
    assert got == expected, (
        f"D finishes the prefill from token 4 on and decodes: expected {expected}, got {got}")


def test_bad_exports_and_imports_are_refused(impl, tiny_llama, reference_impl) -> None:
    src = engine(tiny_llama, max_num_seqs=1)
    src.add_request(OTHER, GREEDY, request_id="other")
    src.add_request(PROMPT, GREEDY, request_id="r")
    src.step()  # "r" is still waiting: no seat
    with expect_raises(ValueError, "an unknown id is refused", match="nope"):
        impl.export_request(src, "nope")
    with expect_raises(ValueError, "a waiting request has no computed KV to ship", match="'r'"):
        impl.export_request(src, "r")
    assert src.get_request("r").status.name == "WAITING", "a refused export changes nothing"
    good = reference_impl.export_request(source_after(tiny_llama, 1), "r")
    dest = engine(tiny_llama)
    dest.add_request(OTHER, GREEDY, request_id="r")
    with expect_raises(ValueError, "D already has a live request 'r'", match="'r'"):
        impl.import_request(dest, good)
    bad = pickle.loads(pickle.dumps(good))
    bad.kv = bad.kv[:1]
    with expect_raises(ValueError, "K/V for 1 layer cannot feed a 2-layer model", match="layer"):
        impl.import_request(engine(tiny_llama), bad)
    bad = pickle.loads(pickle.dumps(good))
    bad.kv = [(k.astype(np.float32), v.astype(np.float32)) for k, v in bad.kv]
    with expect_raises(ValueError, "float32 K/V into a float64 cache is a different model",
                       match="float"):
        impl.import_request(engine(tiny_llama), bad)
    bad = pickle.loads(pickle.dumps(good))
    bad.generator_state = {"state": "anything"}
    with expect_raises(ValueError, "a generator state cannot continue on a per_call engine",
                       match="per_call"):
        impl.import_request(engine(tiny_llama), bad)


def test_run_to_completion_returns_every_finished_request(impl, tiny_llama) -> None:
    eng = engine(tiny_llama)
    eng.add_request(OTHER, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True),
                    request_id="a")
    eng.add_request(PROMPT, GREEDY, request_id="b")
    outputs = impl.run_to_completion(eng)
    assert sorted(outputs) == ["a", "b"] and len(outputs["a"]) == 3 and len(outputs["b"]) == 12, (
        f"both requests, with all their tokens (3 and 12): got {outputs!r}")
    eng.add_request(PROMPT, GREEDY, request_id="c")
    with expect_raises(RuntimeError, "12 tokens cannot finish in 2 steps: say so, do not hang",
                       match="2"):
        impl.run_to_completion(eng, max_steps=2)


# -- a real model --------------------------------------------------------------------------------


@pytest.mark.skipif(not smollm2_available(), reason=smollm2_missing_reason())
def test_handoff_on_smollm2_continues_identically(impl) -> None:
    from mini_vllm.models.loader import load_model
    from mini_vllm.tokenizer import get_tokenizer

    model = load_model(smollm2_path(), dtype="float32")
    tokenizer = get_tokenizer(smollm2_path())
    prompt = tokenizer.encode("The capital of France is")
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)  # 6 forwards in all

    def smol(block_size: int) -> LLMEngine:
        return LLMEngine(model=model, tokenizer=tokenizer, num_blocks=8, block_size=block_size,
                         max_model_len=128)

    src = smol(16)
    src.add_request(prompt, params, request_id="r")
    src.step()
    src.step()
    snapshot = impl.export_request(src, "r")
    base = smol(16)
    base.add_request(prompt, params, request_id="r")
    expected = drain(base)["r"]
    per_token = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 4
    assert snapshot.payload_bytes() == snapshot.num_computed_tokens * per_token, (
        f"SmolLM2 ships {per_token} bytes per computed token (15-03's formula); got "
        f"{snapshot.payload_bytes()} for {snapshot.num_computed_tokens} tokens")
    got = continued(impl, smol(8), snapshot)
    assert got == expected, (
        f"SmolLM2, moved after its first decode step onto a D with blocks of 8, must say the "
        f"same: expected {tokenizer.decode(expected)!r} ({expected}), got "
        f"{tokenizer.decode(got)!r} ({got})")
