"""Kata 15-02: a prefill engine and a decode engine. Predictions and the proxy (pure Python), a
snapshot over a real socket between two mini_vllm processes (cpu), then vLLM's ExampleConnector
producer and consumer over a shared directory (live, skipped without vLLM or SmolLM2)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
import pytest

from katas.phase15.kv_handoff.scaffold import RequestSnapshot
from katas.phase15.prefill_decode_pair.scaffold import (
    DecodeOutcome,
    PairRun,
    VllmPairRun,
    greedy,
    record_wire,
    run_decode_faults,
    run_pair,
    run_vllm_pair,
    tiny_engine,
)
from mini_vllm import SamplingParams
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import LiveEngines

pytestmark = pytest.mark.gpu_opt

# Checkpoint configs, as their config.json files say (only the fields that size the KV cache).
SMOLLM2 = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64}
QWEN25_05B = {"num_hidden_layers": 24, "hidden_size": 896, "num_attention_heads": 14,
              "num_key_value_heads": 2}
LLAMA_8B = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
            "num_key_value_heads": 8}
BF16, FP32, FP64 = 2, 4, 8

# -------------------------------------------------------------------- configs and predictions


def test_configs_pair_a_producer_with_a_consumer_on_one_directory(impl) -> None:
    got = impl.kv_transfer_configs("/shared/kv")
    assert isinstance(got, tuple) and len(got) == 2, (
        f"kv_transfer_configs returns (producer, consumer): two dicts, got {got!r}")
    producer, consumer = got
    for name, cfg in (("producer", producer), ("consumer", consumer)):
        assert isinstance(cfg, dict) and cfg.get("kv_connector") == "ExampleConnector", (
            f"the {name} must name the connector 'ExampleConnector' under 'kv_connector', "
            f"got {cfg!r}")
        extra = cfg.get("kv_connector_extra_config")
        assert isinstance(extra, dict) and extra.get("shared_storage_path") == "/shared/kv", (
            f"the {name} must point ExampleConnector at the shared directory through "
            f"kv_connector_extra_config['shared_storage_path'], got {cfg!r}")
    assert (producer.get("kv_role"), consumer.get("kv_role")) == ("kv_producer", "kv_consumer"), (
        f"P writes KV (kv_role 'kv_producer'), D reads it ('kv_consumer'); you gave "
        f"{producer.get('kv_role')!r} and {consumer.get('kv_role')!r}")
    with expect_raises(ValueError, "two engines cannot share an unnamed directory",
                       match="storage_path"):
        impl.kv_transfer_configs("")


def test_smollm2_ships_23040_bytes_per_token(impl) -> None:
    got = impl.kv_bytes_per_token(SMOLLM2, BF16)
    assert got == 23_040, (
        f"SmolLM2 in bf16: K and V x 30 layers x 3 KV heads x 64 x 2 bytes = 23,040 bytes a "
        f"token, got {got}")
    assert impl.kv_bytes_per_token(SMOLLM2, FP32) == 46_080, "float32 doubles it: 46,080"
    payload = impl.kv_payload_bytes(128, got)
    assert payload == 2_949_120, (
        f"one 128-token block of SmolLM2 KV is 128 x 23,040 = 2,949,120 bytes (15-03's "
        f"kv_payload_bytes), got {payload}")


def test_bytes_per_token_counts_kv_heads_not_query_heads(impl) -> None:
    got = impl.kv_bytes_per_token(LLAMA_8B, BF16)
    assert got == 131_072, (
        f"the course's 8B Llama: 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB a token "
        f"(only KV heads keep a cache; its 32 query heads do not), got {got}")
    qwen = impl.kv_bytes_per_token(QWEN25_05B, BF16)
    assert qwen == 12_288, (
        f"Qwen2.5-0.5B: 2 x 24 layers x 2 KV heads x (896 / 14 = 64) x 2 bytes = 12 KiB a "
        f"token (head_dim absent: hidden_size / num_attention_heads), got {qwen}")
    assert impl.kv_payload_bytes(2031, qwen) == 24_956_928, (
        "the course's 2,031-token prompt on Qwen2.5-0.5B ships 2,031 x 12,288 bytes (~24 MiB)")
    mha = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    assert impl.kv_bytes_per_token(mha, FP64) == 2048, (
        "no num_key_value_heads means plain multi-head attention: every head keeps K and V, "
        "2 x 2 x 4 x 16 x 8 = 2,048")


def test_bad_config_or_dtype_is_refused(impl) -> None:
    with expect_raises(ValueError, "a dtype takes at least one byte", match="dtype_bytes"):
        impl.kv_bytes_per_token(SMOLLM2, 0)
    with expect_raises(ValueError, "without a layer count there is no KV size",
                       match="num_hidden_layers"):
        impl.kv_bytes_per_token({"hidden_size": 64, "num_attention_heads": 4}, BF16)


@pytest.mark.parametrize(("prompt_len", "block", "want"), [
    (129, 128, 128), (130, 128, 128), (256, 128, 128), (257, 128, 256), (128, 128, 0),
    (21, 16, 16), (33, 16, 32), (1, 16, 0)])
def test_connector_moves_whole_blocks_never_the_last_prompt_token(impl, prompt_len: int,
                                                                  block: int, want: int) -> None:
    got = impl.transferred_tokens(prompt_len, block)
    assert got == want, (
        f"ExampleConnector stores the prompt's whole {block}-token blocks, but never the last "
        f"prompt token (D must compute it to get the next token's logits): a {prompt_len}-token "
        f"prompt moves {want} tokens, got {got}")


def test_bad_sizes_are_refused(impl) -> None:
    with expect_raises(ValueError, "a block holds at least one token", match="block_size"):
        impl.transferred_tokens(129, 0)
    with expect_raises(ValueError, "a prompt has at least one token", match="prompt_len"):
        impl.transferred_tokens(0, 128)


# ------------------------------------------------------------------------------------ the proxy


def _next_token(seq: list[int]) -> int:
    """A deterministic stand-in for a greedy model: the next token depends on the whole
    sequence, so a missing or doubled token changes everything after it."""
    return (sum((i + 1) * t for i, t in enumerate(seq)) * 31 + len(seq)) % 97


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, prompt_ids: list[int], max_tokens: int) -> list[int]:
        if len(self.calls) >= 5:
            raise AssertionError("the proxy called one engine more than 5 times")
        self.calls.append((list(prompt_ids), max_tokens))
        seq, out = list(prompt_ids), []
        for _ in range(max_tokens):
            out.append(_next_token(seq))
            seq.append(out[-1])
        return out


PROMPT = [5, 17, 3, 88, 41, 9, 60, 2, 33, 71, 14]


def test_proxy_prefills_one_token_then_carries_it_to_decode(impl) -> None:
    prefill, decode, single = FakeEngine(), FakeEngine(), FakeEngine()
    got = impl.proxy_generate(prefill, decode, PROMPT, 6)
    want = single(PROMPT, 6)
    assert prefill.calls == [(PROMPT, 1)], (
        f"P runs the prompt once with max_tokens=1 (prefill plus the first token), got calls "
        f"{prefill.calls}")
    first = prefill(PROMPT, 1)
    assert decode.calls == [(PROMPT + first, 5)], (
        f"D gets the prompt plus P's first token {first} and owes the remaining 5 tokens; "
        f"got calls {decode.calls}")
    assert got == want, (
        f"the pair's tokens must equal one engine's: {want}, got {got} (a repeated first token "
        f"is the classic proxy bug: D was not told what P already produced)")


def test_proxy_with_one_token_never_calls_decode(impl) -> None:
    prefill, decode = FakeEngine(), FakeEngine()
    got = impl.proxy_generate(prefill, decode, PROMPT, 1)
    assert got == FakeEngine()(PROMPT, 1) and decode.calls == [], (
        f"max_tokens=1 is all prefill: P's token, D untouched; got {got}, D calls "
        f"{decode.calls}")
    with expect_raises(ValueError, "a request asks for at least one token", match="max_tokens"):
        impl.proxy_generate(prefill, decode, PROMPT, 0)


def test_proxy_over_two_mini_vllm_engines_matches_one(impl, tiny_llama: Any) -> None:
    from mini_vllm import LLMEngine

    def role(engine: Any) -> Any:
        def run(prompt_ids: list[int], max_tokens: int) -> list[int]:
            (out,) = engine.generate([prompt_ids], greedy(max_tokens))
            return list(out.output_token_ids)
        return run

    engines = [LLMEngine(model=tiny_llama, block_size=16, num_blocks=64) for _ in range(3)]
    got = impl.proxy_generate(role(engines[0]), role(engines[1]), PROMPT, 7)
    want = role(engines[2])(PROMPT, 7)
    assert got == want, f"the tiny Llama split over P and D must say {want}, got {got}"


# ------------------------------------------------------------------------------------ the wire


def _snapshot() -> RequestSnapshot:
    rng = np.random.default_rng(7)
    kv = [(rng.standard_normal((21, 2, 16)), rng.standard_normal((21, 2, 16)))
          for _ in range(2)]
    kv.append((rng.standard_normal((21, 3, 8)).astype(np.float32),
               rng.standard_normal((21, 3, 8)).astype(np.float32)))
    return RequestSnapshot(
        request_id="req-7", prompt_token_ids=list(range(40, 60)), output_token_ids=[99],
        num_computed_tokens=21,
        sampling_params=SamplingParams(temperature=0.8, top_k=5, seed=11, max_tokens=9),
        kv=kv, generator_state={"bit_generator": "PCG64", "state": {"state": 3, "inc": 5}})


def _over_a_socketpair(impl: Any, snapshot: RequestSnapshot) -> tuple[int, RequestSnapshot]:
    a, b = socket.socketpair()
    sent: list[Any] = []

    def send() -> None:  # a thread: a payload larger than the socket buffer needs a reader
        try:
            sent.append(impl.send_snapshot(a, snapshot))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            sent.append(exc)
        finally:
            a.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        got = impl.recv_snapshot(b, 10.0)
    finally:
        b.close()
        sender.join(timeout=10)
    if sent and isinstance(sent[0], BaseException):
        raise sent[0]
    assert sent, "send_snapshot did not return within 10 s"
    return sent[0], got


def test_snapshot_survives_the_socket_bit_for_bit(impl) -> None:
    snap = _snapshot()
    sent, got = _over_a_socketpair(impl, snap)
    assert isinstance(got, RequestSnapshot), f"recv_snapshot returns a RequestSnapshot, got {got!r}"
    for name in ("request_id", "prompt_token_ids", "output_token_ids", "num_computed_tokens",
                 "sampling_params", "generator_state"):
        assert getattr(got, name) == getattr(snap, name), (
            f"{name} changed on the way: sent {getattr(snap, name)!r}, got {getattr(got, name)!r}")
    assert len(got.kv) == len(snap.kv), (
        f"K/V for {len(snap.kv)} layers was sent, {len(got.kv)} arrived: the heavy part is "
        f"the point of the transfer")
    for layer, ((k, v), (k2, v2)) in enumerate(zip(snap.kv, got.kv, strict=True)):
        for name, want, have in (("K", k, k2), ("V", v, v2)):
            have = np.asarray(have)
            assert have.dtype == want.dtype and have.shape == want.shape, (
                f"layer {layer} {name}: sent {want.dtype} {want.shape}, got {have.dtype} "
                f"{have.shape}")
            assert np.array_equal(have, want), f"layer {layer} {name}: the values changed"
    assert sent == snap.payload_bytes() == 25_536, (
        f"send_snapshot returns the K/V bytes it put on the wire: 2 layers x (K, V) x 21 x 2 x 16 "
        f"x 8 + (K, V) x 21 x 3 x 8 x 4 = 25,536, got {sent}")


def test_the_wire_carries_the_kv_itself(impl) -> None:
    snap = _snapshot()
    wire = record_wire(impl, snap)
    assert snap.payload_bytes() <= len(wire) <= snap.payload_bytes() + 4096, (
        f"the frame is the {snap.payload_bytes()} K/V bytes plus a small header: {len(wire)} "
        f"bytes crossed the wire")
    raw = snap.kv[0][0].tobytes()
    assert raw[:64] in wire, "layer 0's K rows are not on the wire as raw bytes"


def test_recv_refuses_a_timeout_that_is_not_positive(impl) -> None:
    a, b = socket.socketpair()
    try:
        with expect_raises(ValueError, "a receiver without a deadline can hang forever",
                           match="timeout"):
            impl.recv_snapshot(b, 0)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------- two processes, one request

PAIR_PROMPT = [(i * 37 + 11) % 250 for i in range(21)]  # 21 tokens: a block of 16 and a tail
PAIR_TOKENS = 8
_PAIR_RUNS: dict[str, PairRun] = {}


_WIRES: dict[str, bytes] = {}


def _wire(impl: Any) -> bytes:
    """The frame your send_snapshot writes for the pair's request after its prefill, made in
    this process (a missing piece shows up here, before any process starts)."""
    if impl.__name__ not in _WIRES:
        engine = tiny_engine()
        rid = engine.add_request(PAIR_PROMPT, greedy(PAIR_TOKENS))
        engine.step()
        _WIRES[impl.__name__] = record_wire(impl, impl.export_request(engine, rid))
    return _WIRES[impl.__name__]


def _pair(impl: Any) -> PairRun:
    if impl.__name__ not in _PAIR_RUNS:
        _wire(impl)
        _PAIR_RUNS[impl.__name__] = run_pair(impl, PAIR_PROMPT, PAIR_TOKENS)
    return _PAIR_RUNS[impl.__name__]


def test_two_processes_give_one_engines_tokens(impl) -> None:
    run = _pair(impl)
    (single,) = tiny_engine().generate([PAIR_PROMPT], greedy(PAIR_TOKENS))
    want = list(single.output_token_ids)
    assert run.prefill_tokens == want[:1], (
        f"the prefill process exports after its first token {want[:1]}, got {run.prefill_tokens}")
    assert run.tokens == want, (
        f"prefill in one process, decode in another: the tiny Llama must say {want}, the decode "
        f"process said {run.tokens}")


def test_bytes_sent_are_the_predicted_kv_payload(impl, tiny_llama: Any) -> None:
    run = _pair(impl)
    per_token = impl.kv_bytes_per_token(tiny_llama.config, FP64)
    predicted = impl.kv_payload_bytes(run.num_computed_tokens, per_token)
    assert run.num_computed_tokens == len(PAIR_PROMPT), (
        f"after prefill P has computed the 21 prompt tokens, got {run.num_computed_tokens}")
    assert predicted == 21 * 1024, (
        f"the tiny Llama in float64: 2 x 2 layers x 2 KV heads x 16 x 8 = 1,024 bytes a token, "
        f"21,504 for 21 tokens; you predict {predicted}")
    assert run.sent == run.payload_bytes == predicted, (
        f"send_snapshot reported {run.sent} K/V bytes for a snapshot of {run.payload_bytes}; "
        f"you predict {predicted}")
    assert run.received_payload_bytes == predicted, (
        f"the decode process rebuilt {run.received_payload_bytes} bytes of K/V of {predicted}")
    assert predicted <= run.wire_bytes <= predicted + 4096, (
        f"{run.wire_bytes} bytes crossed the socket for a {predicted}-byte payload")


_FAULT_RUNS: dict[str, dict[str, DecodeOutcome]] = {}
# How long the receivers may take once both are ready to receive (start-up is not counted): the
# stalled one's 0.5 s timeout and the dead sender's end of stream, with room for a busy host. A
# receiver that never gives up costs this much, once.
FAULT_RUN_SECONDS = 4.0


def _faults(impl: Any) -> dict[str, DecodeOutcome]:
    """Half a frame to two decode processes at once: one sender then dies, one stalls."""
    if impl.__name__ not in _FAULT_RUNS:
        wire = _wire(impl)
        _FAULT_RUNS[impl.__name__] = run_decode_faults(
            impl, wire[: len(wire) // 2], recv_timeout_s={"died": 2.0, "stalled": 0.5},
            timeout_s=FAULT_RUN_SECONDS)
    return _FAULT_RUNS[impl.__name__]


def test_a_sender_dying_mid_transfer_is_a_connection_error(impl) -> None:
    outcome = _faults(impl)["died"]
    assert not outcome.hung, (
        "the sender died half-way (its socket closed), and the decode process was still "
        f"waiting {FAULT_RUN_SECONDS:.0f} s later: recv_snapshot must notice the end of the stream")
    assert outcome.is_connection and not outcome.ok, (
        f"a connection closed mid-frame is a ConnectionError, raised at once (not a timeout, "
        f"not a half snapshot), got {outcome.error_type or 'no error'}: {outcome.error}")
    assert not outcome.alive_after, "the decode process is still running"


def test_a_silent_sender_times_out(impl) -> None:
    outcome = _faults(impl)["stalled"]
    assert not outcome.hung, (
        "the sender went silent with the socket open, and recv_snapshot(sock, 0.5) was still "
        f"waiting {FAULT_RUN_SECONDS:.0f} s later: it must give up after its timeout")
    assert outcome.is_timeout and not outcome.ok, (
        f"a sender silent for longer than timeout_s is a TimeoutError, got "
        f"{outcome.error_type or 'no error'}: {outcome.error}")


# --------------------------------------------------------------------------------------- live

LIVE_PROMPT_LEN = 129  # one whole 128-token block, plus the token D must compute itself
LIVE_TOKENS = 6
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_VLLM_RUNS: dict[str, VllmPairRun] = {}
_TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes "
         "Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a "
         "system that could produce books quickly and cheaply. Before that, most books in Europe "
         "were copied by hand, usually by monks working in scriptoria, and a single Bible could "
         "take years to finish. The new machines spread across the continent within a few "
         "decades. By 1500 printers were at work in more than two hundred cities, and millions "
         "of volumes had been produced. Scholars could compare identical copies of a text, "
         "errors could be corrected in later editions, and ideas travelled faster than ever "
         "before. The Reformation, the scientific revolution and the rise of newspapers all "
         "owed something to this invention, which changed how people read, argued and learned.")


def _live_prompt(model_dir: Any) -> list[int]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(_TEXT).ids
    assert len(ids) >= LIVE_PROMPT_LEN, f"the text is only {len(ids)} tokens"
    return ids[:LIVE_PROMPT_LEN]


def _vllm(impl: Any, live_engines: LiveEngines, smollm2_dir: Any) -> VllmPairRun:
    if impl.__name__ not in _VLLM_RUNS:
        live_engines.close()  # our two engines run one at a time; free the shared one first
        _VLLM_RUNS[impl.__name__] = run_vllm_pair(impl, str(smollm2_dir),
                                                  _live_prompt(smollm2_dir), LIVE_TOKENS)
    return _VLLM_RUNS[impl.__name__]


@pytest.mark.live
def test_vllm_pair_gives_one_engines_tokens(impl, live_engines: LiveEngines,
                                            smollm2_dir: Any) -> None:
    run = _vllm(impl, live_engines, smollm2_dir)
    prompt = _live_prompt(smollm2_dir)
    assert [(c.prompt_ids, c.max_tokens) for c in run.prefill_calls] == [(prompt, 1)], (
        "the producer runs the prompt once with max_tokens=1")
    carried = prompt + run.tokens[:1]
    assert [c.prompt_ids for c in run.decode_calls] == [carried], (
        "the consumer runs once, on the prompt plus the producer's first token")
    assert run.single_hits == 0, "the single-engine run had nothing to load"
    assert run.tokens == run.single_tokens, (
        f"P (prefill, 1 token) then D (the rest) must give one engine's greedy tokens "
        f"{run.single_tokens}; your proxy returned {run.tokens}")


@pytest.mark.live
def test_vllm_consumer_loads_the_stored_kv_and_computes_only_the_rest(
        impl, live_engines: LiveEngines, smollm2_dir: Any) -> None:
    run = _vllm(impl, live_engines, smollm2_dir)
    moved = impl.transferred_tokens(LIVE_PROMPT_LEN, run.block_size)
    per_token = impl.kv_bytes_per_token(SMOLLM2, _DTYPE_BYTES[run.dtype])
    predicted = impl.kv_payload_bytes(moved, per_token)
    assert run.stored_files == 30 and run.stored_bytes == predicted == 2_949_120, (
        f"the producer stored {run.stored_bytes} bytes of K/V in {run.stored_files} files "
        f"(one per layer); you predict {predicted} for {moved} tokens of {per_token} bytes")
    (call,) = run.decode_calls
    assert call.external_hits == moved, (
        f"the consumer loaded {call.external_hits} prompt tokens' KV from the directory; you "
        f"predict {moved}")
    computed = call.prompt_tokens - call.external_hits
    assert computed == len(call.prompt_ids) - moved == 2, (
        f"the consumer computed {computed} of its {len(call.prompt_ids)} prompt tokens itself: "
        f"only the ones after the loaded block")


@pytest.mark.live
def test_vllm_corrupted_kv_changes_the_output(impl, live_engines: LiveEngines,
                                              smollm2_dir: Any) -> None:
    run = _vllm(impl, live_engines, smollm2_dir)
    moved = impl.transferred_tokens(LIVE_PROMPT_LEN, run.block_size)
    assert run.corrupted_hits == moved, (
        f"the replay loaded {run.corrupted_hits} tokens' (zeroed) KV; you predict {moved}")
    assert run.corrupted_tokens != run.tokens[1:], (
        f"with the stored K/V zeroed the consumer still said {run.corrupted_tokens}: the "
        f"transfer is not what D used")
