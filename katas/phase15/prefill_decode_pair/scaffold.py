"""What the lab gives you: the plumbing around your code, for both halves of the kata.

None of this is your work.

* mini_vllm over a real wire: ``run_pair`` starts two OS processes (``multiprocessing``,
  "spawn"), each with its own mini_vllm engine on the seeded tiny Llama (float64). The prefill
  process computes the prompt and the first token, exports the request with 15-01's
  ``export_request`` and hands it to **your** ``send_snapshot``; the decode process takes it from
  **your** ``recv_snapshot``, imports it (``import_request``) and finishes it
  (``run_to_completion``). The two talk over one connected stream socket (``socket.socketpair``)
  and nothing else. ``run_decode_faults`` plays a prefill side that goes wrong (dies half-way,
  or stalls) against real decode processes. Each process runs your module's own source text,
  so whatever the tests grade is what crosses the wire.
* vLLM over ``ExampleConnector``: ``run_vllm_pair`` starts a producer engine, runs **your**
  ``proxy_generate`` with it as the prefill side, shuts it down, then starts a consumer engine
  for the decode side (one engine alive at a time: two cores, little memory), and reads what
  the connector stored and what the consumer loaded. ``stored_kv_bytes`` counts the tensor bytes
  in the shared directory; ``corrupt_stored_kv`` zeroes them.

Upstream: ``vllm/distributed/kv_transfer/kv_connector/v1/example_connector.py`` writes one
safetensors file per attention layer under a folder named by a hash of the stored tokens.
"""

from __future__ import annotations

import gc
import json
import linecache
import multiprocessing
import os
import socket
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# -- shared settings -----------------------------------------------------------------------------

BLOCK_SIZE = 16
"""mini_vllm's block size in both processes (any size works; both sides must agree)."""

NUM_BLOCKS = 64
"""KV blocks in each mini_vllm engine: 1,024 slots, far more than one request needs."""

VLLM_MAX_MODEL_LEN = 512
"""Context length of both vLLM engines (the prompt is ~130 tokens)."""


def tiny_engine() -> Any:
    """A fresh mini_vllm engine on the seeded tiny Llama in float64 (the tests' single engine is
    built the same way, so its tokens can be compared with the pair's)."""
    import numpy as np

    from mini_vllm import LLMEngine
    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_llama import build_tiny_llama

    model = load_model(build_tiny_llama(), dtype=np.float64)
    return LLMEngine(model=model, block_size=BLOCK_SIZE, num_blocks=NUM_BLOCKS)


def greedy(max_tokens: int) -> Any:
    """Greedy sampling for exactly ``max_tokens`` tokens (EOS ignored, so lengths are fixed)."""
    from mini_vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


# -- sockets that count --------------------------------------------------------------------------


class CountingSocket:
    """A stream socket that counts every byte written through it (``sendall`` / ``send``).

    The prefill process hands your ``send_snapshot`` one of these: ``wire_bytes`` is what really
    crossed the wire, header included. Every other attribute is the socket's own."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.wire_bytes = 0

    def sendall(self, data: Any) -> None:
        self._sock.sendall(data)
        self.wire_bytes += memoryview(data).nbytes

    def send(self, data: Any) -> int:
        n = self._sock.send(data)
        self.wire_bytes += n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RecordingSocket:
    """A stand-in socket that keeps what is written to it (``data``) and sends nothing: used to
    learn your wire format's bytes so that a faulty sender can replay part of them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: Any) -> None:
        self.data += memoryview(data).cast("B")

    def send(self, data: Any) -> int:
        self.sendall(data)
        return memoryview(data).nbytes

    def settimeout(self, _: Any) -> None:
        return None

    def fileno(self) -> int:
        return -1


# -- your module, in another process ---------------------------------------------------------


def module_source(module: ModuleType) -> tuple[str, str]:
    """(filename, source text) of ``module``; works for a file and for a module compiled from
    text (the kata's checks grade patched variants of the reference that way)."""
    filename = module.__file__ or ""
    lines = linecache.getlines(filename)
    if not lines:
        raise RuntimeError(f"cannot read the source of {module.__name__} ({filename})")
    return filename, "".join(lines)


_CHILD_MODULE = "prefill_decode_pair_under_test"


def _load(spec: tuple[str, str]) -> ModuleType:
    filename, source = spec
    module = ModuleType(_CHILD_MODULE)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[_CHILD_MODULE] = module  # dataclasses and pickle look modules up by name
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - the module graded
    return module


def _write(path: str, record: dict[str, Any]) -> None:
    tmp = path + ".part"
    Path(tmp).write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _failure(exc: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return {"ok": False, "error_type": type(exc).__name__, "error": str(exc), "where": where,
            "is_timeout": isinstance(exc, TimeoutError),
            "is_connection": isinstance(exc, ConnectionError),
            "not_implemented": isinstance(exc, NotImplementedError)}


def _prefill_main(spec: tuple[str, str], sock: socket.socket, prompt: list[int],
                  max_tokens: int, out: str) -> None:
    try:
        module = _load(spec)
        engine = tiny_engine()
        rid = engine.add_request(prompt, greedy(max_tokens))
        engine.step()  # the whole prompt and the first token: a prefill engine's one job
        snapshot = module.export_request(engine, rid)
        wire = CountingSocket(sock)
        sent = module.send_snapshot(wire, snapshot)
        _write(out, {"ok": True, "sent": sent, "wire_bytes": wire.wire_bytes,
                     "payload_bytes": snapshot.payload_bytes(),
                     "num_computed_tokens": snapshot.num_computed_tokens,
                     "output_token_ids": list(snapshot.output_token_ids)})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        _write(out, _failure(exc))
    finally:
        sock.close()


def _decode_main(spec: tuple[str, str], sock: socket.socket, recv_timeout_s: float,
                 out: str) -> None:
    try:
        module = _load(spec)
        engine = tiny_engine()  # built while the prefill side works: the receiver is ready
        Path(out + READY_SUFFIX).touch()  # for run_decode_faults: start-up is over
        t0 = time.monotonic()
        snapshot = module.recv_snapshot(sock, recv_timeout_s)
        waited = time.monotonic() - t0
        module.import_request(engine, snapshot)
        outputs = module.run_to_completion(engine)
        _write(out, {"ok": True, "tokens": [int(t) for t in outputs[snapshot.request_id]],
                     "payload_bytes": snapshot.payload_bytes(),
                     "num_computed_tokens": snapshot.num_computed_tokens, "waited_s": waited})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        _write(out, _failure(exc))
    finally:
        sock.close()


def _read(path: Path, role: str, proc: Any) -> dict[str, Any]:
    if not path.exists():
        return {"ok": False, "error_type": "ProcessDied",
                "error": f"the {role} process exited with code {proc.exitcode} and no report",
                "where": "?", "is_timeout": False, "is_connection": False,
                "not_implemented": False}
    return json.loads(path.read_text(encoding="utf-8"))


READY_SUFFIX = ".ready"
STARTUP_TIMEOUT_S = 120.0  # spawn, numpy, mini_vllm, the engine: seconds, more on a busy host


def _wait_until_ready(procs: dict[str, Any], outs: dict[str, str]) -> None:
    """Wait until every decode process is about to receive (or has already ended), so that
    a fault's deadline measures the receiver, not the start-up of a Python process."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    waiting = set(procs)
    while waiting and time.monotonic() < deadline:
        waiting = {f for f in waiting
                   if procs[f].is_alive() and not os.path.exists(outs[f] + READY_SUFFIX)}
        time.sleep(0.02)


def _reap(procs: list[Any], deadline: float) -> list[Any]:
    """Join every process by ``deadline``; kill what is left. Returns the ones that hung."""
    for proc in procs:
        proc.join(timeout=max(deadline - time.monotonic(), 0.05))
    hung = [p for p in procs if p.is_alive()]
    for proc in hung:
        proc.kill()
        proc.join()
    return hung


def _raise_todo(*reports: dict[str, Any]) -> None:
    for rep in reports:
        if rep.get("not_implemented"):
            raise NotImplementedError(rep["error"])


@dataclass
class PairRun:
    """What the two processes reported."""

    tokens: list[int]  # the decode process's output for the request (run_to_completion)
    prefill_tokens: list[int]  # the request's output ids when the prefill process exported it
    sent: int  # what your send_snapshot returned
    wire_bytes: int  # bytes that really crossed the socket
    payload_bytes: int  # snapshot.payload_bytes() in the prefill process
    received_payload_bytes: int  # the same, of the snapshot the decode process rebuilt
    num_computed_tokens: int
    decode_waited_s: float
    exitcodes: list[int | None] = field(default_factory=list)


def run_pair(module: ModuleType, prompt: list[int], max_tokens: int, *,
             recv_timeout_s: float = 20.0, timeout_s: float = 60.0) -> PairRun:
    """Prefill in one process, decode in another, your send/recv between them.

    Raises ``RuntimeError`` (naming the side, the exception and its line) when either process
    fails, and when they are not both done within ``timeout_s`` (then both are killed first).
    A ``NotImplementedError`` in either process is raised as such.
    """
    ctx = multiprocessing.get_context("spawn")
    spec = module_source(module)
    a, b = socket.socketpair()
    with tempfile.TemporaryDirectory(prefix="pd_pair_") as tmp:
        outs = [os.path.join(tmp, "prefill.json"), os.path.join(tmp, "decode.json")]
        procs = [ctx.Process(target=_prefill_main, args=(spec, a, prompt, max_tokens, outs[0]),
                             daemon=True),
                 ctx.Process(target=_decode_main, args=(spec, b, recv_timeout_s, outs[1]),
                             daemon=True)]
        try:
            for proc in procs:
                proc.start()
        finally:
            a.close()  # the children hold their own copies
            b.close()
        hung = _reap(procs, time.monotonic() + timeout_s)
        pre, dec = (_read(Path(o), r, p) for o, r, p in zip(outs, ("prefill", "decode"), procs,
                                                                     strict=True))
    _raise_todo(pre, dec)
    if hung:
        raise RuntimeError(f"the pair did not finish within {timeout_s} s: "
                           f"{'/'.join('prefill' if p is procs[0] else 'decode' for p in hung)} "
                           "hung and was killed")
    for role, rep in (("prefill", pre), ("decode", dec)):
        if not rep["ok"]:
            raise RuntimeError(f"the {role} process failed: {rep['error_type']}: "
                               f"{rep['error']} ({rep['where']})")
    return PairRun(tokens=dec["tokens"], prefill_tokens=pre["output_token_ids"],
                   sent=pre["sent"], wire_bytes=pre["wire_bytes"],
                   payload_bytes=pre["payload_bytes"],
                   received_payload_bytes=dec["payload_bytes"],
                   num_computed_tokens=pre["num_computed_tokens"],
                   decode_waited_s=dec["waited_s"], exitcodes=[p.exitcode for p in procs])


@dataclass
class DecodeOutcome:
    """How a real decode process ended against a faulty prefill side."""

    ok: bool
    error_type: str
    error: str
    is_timeout: bool
    is_connection: bool
    hung: bool  # still waiting at the deadline (then killed)
    seconds: float  # from the fault to the decode process's end
    alive_after: bool  # any child process still running once this returned


FAULTS = ("died", "stalled")
"""The two ways ``run_decode_faults`` lets a sender fail: it dies half-way (its end of the
socket closes), or it stalls half-way (the socket stays open, nothing more comes)."""


def run_decode_faults(module: ModuleType, wire: bytes, *, recv_timeout_s: dict[str, float],
                      timeout_s: float = 30.0) -> dict[str, DecodeOutcome]:
    """One real decode process per fault in ``FAULTS``, all started at once. Each gets ``wire``
    (part of a frame) and then its fault; each calls your ``recv_snapshot`` with its own
    ``recv_timeout_s[fault]``. Once every process is ready to receive, waits for them, at most
    ``timeout_s`` more; kills what still runs."""
    ctx = multiprocessing.get_context("spawn")
    spec = module_source(module)
    with tempfile.TemporaryDirectory(prefix="pd_fault_") as tmp:
        ours, procs, outs = {}, {}, {}
        try:
            for fault in FAULTS:
                ours[fault], theirs = socket.socketpair()
                outs[fault] = os.path.join(tmp, f"{fault}.json")
                procs[fault] = ctx.Process(
                    target=_decode_main,
                    args=(spec, theirs, recv_timeout_s[fault], outs[fault]), daemon=True)
                try:
                    procs[fault].start()
                finally:
                    theirs.close()
            for sock in ours.values():
                sock.sendall(wire)  # fits the socket buffer: nobody need be reading yet
            _wait_until_ready(procs, outs)
            t0 = time.monotonic()
            ours["died"].close()
            hung = _reap(list(procs.values()), time.monotonic() + timeout_s)
            seconds = time.monotonic() - t0
        finally:
            for sock in ours.values():
                sock.close()
            for proc in procs.values():
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        reports = {f: _read(Path(outs[f]), "decode", procs[f]) for f in FAULTS}
    _raise_todo(*reports.values())
    return {f: DecodeOutcome(ok=bool(rep["ok"]), error_type=rep.get("error_type", ""),
                             error=rep.get("error", ""), is_timeout=rep.get("is_timeout", False),
                             is_connection=rep.get("is_connection", False),
                             hung=procs[f] in hung, seconds=seconds,
                             alive_after=procs[f].is_alive())
            for f, rep in reports.items()}


def record_wire(module: ModuleType, snapshot: Any) -> bytes:
    """The bytes your ``send_snapshot`` writes for ``snapshot``, captured without a socket."""
    rec = RecordingSocket()
    module.send_snapshot(rec, snapshot)
    return bytes(rec.data)


# -- vLLM + ExampleConnector -----------------------------------------------------------------


def _safetensors_tensors(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset where the data starts, the header's tensor entries) of one safetensors file."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return 8 + size, header


def stored_kv_files(directory: str | Path) -> list[Path]:
    """Every safetensors file the connector wrote under ``directory`` (one per layer and
    stored prompt)."""
    return sorted(Path(directory).rglob("*.safetensors"))


def stored_kv_bytes(directory: str | Path) -> int:
    """Bytes of K/V tensor data the connector stored under ``directory`` (file headers not
    counted)."""
    total = 0
    for path in stored_kv_files(directory):
        _, tensors = _safetensors_tensors(path)
        total += sum(e["data_offsets"][1] - e["data_offsets"][0] for e in tensors.values())
    return total


def corrupt_stored_kv(directory: str | Path) -> int:
    """Zero the K/V data of every stored file in place; returns the bytes zeroed."""
    zeroed = 0
    for path in stored_kv_files(directory):
        start, tensors = _safetensors_tensors(path)
        with path.open("r+b") as f:
            for e in tensors.values():
                lo, hi = e["data_offsets"]
                f.seek(start + lo)
                f.write(bytes(hi - lo))
                zeroed += hi - lo
    return zeroed


def _meter(llm: Any) -> dict[str, float]:
    names = ("vllm:external_prefix_cache_queries", "vllm:external_prefix_cache_hits",
             "vllm:prompt_tokens")
    return {m.name: float(m.value) for m in llm.get_metrics() if m.name in names}


@dataclass
class VllmCall:
    """One generate call on one engine: what went in, what came out, what the meters moved."""

    role: str  # "prefill" (the producer) or "decode" (the consumer)
    prompt_ids: list[int]
    max_tokens: int
    tokens: list[int]
    prompt_tokens: int  # the engine's prompt-token meter
    external_hits: int  # prompt tokens whose KV the connector loaded
    num_cached_tokens: int  # RequestOutput.num_cached_tokens


class VllmRole:
    """A ``(prompt_ids, max_tokens) -> token ids`` callable over one vLLM engine, greedy.

    The engine starts on the first call; ``before_start`` runs first (the decode role uses it
    to shut the prefill engine down, so only one engine is alive at a time)."""

    def __init__(self, role: str, model_dir: str, kv_transfer_config: dict[str, Any],
                 before_start: Any = None) -> None:
        self.role, self.model_dir, self.config = role, model_dir, kv_transfer_config
        self.before_start = before_start
        self.llm: Any = None
        self.calls: list[VllmCall] = []

    def start(self) -> Any:
        if self.llm is None:
            if self.before_start is not None:
                self.before_start()
            from pytest_vllm_katas.live.fixtures import environment, guard_llvmlite

            guard_llvmlite()
            with environment(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1"):
                from vllm import LLM

                # Prefix caching off: a repeated prompt must come from the connector (or be
                # computed), never from the engine's own cache.
                self.llm = LLM(model=self.model_dir, max_model_len=VLLM_MAX_MODEL_LEN,
                               enforce_eager=True, enable_prefix_caching=False, seed=0,
                               disable_log_stats=False, kv_transfer_config=self.config)
        return self.llm

    def __call__(self, prompt_ids: list[int], max_tokens: int) -> list[int]:
        from vllm import SamplingParams

        llm = self.start()
        before = _meter(llm)
        (out,) = llm.generate({"prompt_token_ids": list(prompt_ids)},
                              SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                             ignore_eos=True), use_tqdm=False)
        after = _meter(llm)

        def moved(name: str) -> int:
            return int(after.get(name, 0) - before.get(name, 0))

        tokens = list(out.outputs[0].token_ids)
        self.calls.append(VllmCall(self.role, list(prompt_ids), max_tokens, tokens,
                                   moved("vllm:prompt_tokens"),
                                   moved("vllm:external_prefix_cache_hits"),
                                   int(out.num_cached_tokens or 0)))
        return tokens

    def shutdown(self) -> None:
        if self.llm is not None:
            try:
                self.llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self.llm = None
            gc.collect()


@dataclass
class VllmPairRun:
    """Everything ``run_vllm_pair`` saw."""

    producer_config: dict[str, Any]
    consumer_config: dict[str, Any]
    block_size: int
    dtype: str
    tokens: list[int]  # what your proxy returned
    prefill_calls: list[VllmCall]
    decode_calls: list[VllmCall]  # the proxy's decode call(s) only
    stored_bytes: int  # K/V bytes in the shared directory after the prefill
    stored_files: int
    corrupted_tokens: list[int]  # the decode call replayed over zeroed stored K/V
    corrupted_hits: int
    single_tokens: list[int]  # the consumer with an empty directory: one plain engine
    single_hits: int


def run_vllm_pair(module: ModuleType, model_dir: str, prompt: list[int],
                  max_tokens: int) -> VllmPairRun:
    """Producer, then consumer, sharing a fresh directory; your configs and your proxy.

    After your proxy returns, the consumer replays your decode call over stored K/V that was
    zeroed (the transfer must matter), then runs the plain prompt with the directory emptied
    (nothing to load: a single engine's greedy tokens)."""
    import shutil

    with tempfile.TemporaryDirectory(prefix="pd_vllm_") as storage:
        producer_cfg, consumer_cfg = module.kv_transfer_configs(storage)
        prefill = VllmRole("prefill", model_dir, producer_cfg)
        decode = VllmRole("decode", model_dir, consumer_cfg, before_start=prefill.shutdown)
        try:
            prefill.start()
            cfg = prefill.llm.llm_engine.vllm_config
            block = int(cfg.cache_config.block_size)
            dtype = str(cfg.model_config.dtype).removeprefix("torch.")
            tokens = list(module.proxy_generate(prefill, decode, list(prompt), max_tokens))
            prefill.shutdown()
            stored, files = stored_kv_bytes(storage), len(stored_kv_files(storage))
            proxy_calls = list(decode.calls)
            if not proxy_calls:
                raise RuntimeError("your proxy never called the decode engine")
            corrupt_stored_kv(storage)
            replay = proxy_calls[-1]
            corrupted = decode(replay.prompt_ids, replay.max_tokens)
            corrupted_hits = decode.calls[-1].external_hits
            for entry in Path(storage).iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            single = decode(list(prompt), max_tokens)
            single_hits = decode.calls[-1].external_hits
        finally:
            prefill.shutdown()
            decode.shutdown()
    return VllmPairRun(producer_config=producer_cfg, consumer_config=consumer_cfg,
                       block_size=block, dtype=dtype, tokens=tokens,
                       prefill_calls=prefill.calls, decode_calls=proxy_calls,
                       stored_bytes=stored, stored_files=files, corrupted_tokens=corrupted,
                       corrupted_hits=corrupted_hits, single_tokens=single,
                       single_hits=single_hits)
