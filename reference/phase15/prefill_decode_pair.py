"""Reference for kata 15-02: a prefill engine and a decode engine, handing KV over for real.

vLLM's side: the two ``KVTransferConfig`` dicts for ``ExampleConnector``, the KV bytes a token
costs, the tokens the connector moves, and the proxy step. mini_vllm's side: a framed wire
format that carries a 15-01 ``RequestSnapshot`` over a stream socket between two processes.
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from katas.phase15.kv_handoff.scaffold import RequestSnapshot
from reference.phase15.disagg_economics import kv_payload_bytes
from reference.phase15.kv_handoff import export_request, import_request, run_to_completion

__all__ = [
    "export_request", "import_request", "kv_payload_bytes", "run_to_completion",
    "kv_transfer_configs", "kv_bytes_per_token", "transferred_tokens", "proxy_generate",
    "send_snapshot", "recv_snapshot",
]

CONNECTOR = "ExampleConnector"
MAGIC = b"KVS1"
_HEADER_LEN = struct.Struct("!4sQ")  # magic, length of the pickled header that follows


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# -- vLLM: configuration and prediction -----------------------------------------------------


def kv_transfer_configs(storage_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    path = str(storage_path)
    if not path:
        raise ValueError("storage_path must name the directory both engines share")

    def config(role: str) -> dict[str, Any]:
        return {"kv_connector": CONNECTOR, "kv_role": role,
                "kv_connector_extra_config": {"shared_storage_path": path}}

    return config("kv_producer"), config("kv_consumer")


def kv_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int) -> int:
    _count("dtype_bytes", dtype_bytes, 1)
    try:
        layers = config["num_hidden_layers"]
        heads = config["num_attention_heads"]
    except KeyError as exc:
        raise ValueError(f"config lacks {exc.args[0]!r}") from None
    kv_heads = config.get("num_key_value_heads") or heads  # absent: plain multi-head attention
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    # K and V, for every layer and every KV head (query heads keep no cache).
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def transferred_tokens(prompt_len: int, block_size: int) -> int:
    _count("prompt_len", prompt_len, 1)
    _count("block_size", block_size, 1)
    # Whole blocks only, and never the prompt's last token: D must run it to get logits.
    return (prompt_len - 1) // block_size * block_size


def proxy_generate(prefill: Callable[[list[int], int], list[int]],
                   decode: Callable[[list[int], int], list[int]],
                   prompt_ids: Sequence[int], max_tokens: int) -> list[int]:
    _count("max_tokens", max_tokens, 1)
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("prompt_ids must hold at least one token")
    first = list(prefill(prompt, 1))  # P: the whole prompt, one token out
    if len(first) != 1:
        raise RuntimeError(f"the prefill engine returned {len(first)} tokens for max_tokens=1")
    if max_tokens == 1:
        return first
    # D continues the sequence P started: its prompt carries P's token, so it owes one fewer.
    rest = list(decode(prompt + first, max_tokens - 1))
    return first + rest


# -- mini_vllm: the wire -----------------------------------------------------------------------


def send_snapshot(sock: Any, snapshot: RequestSnapshot) -> int:
    arrays = [a for pair in snapshot.kv for a in pair]
    header = {
        "request_id": snapshot.request_id,
        "prompt_token_ids": list(snapshot.prompt_token_ids),
        "output_token_ids": list(snapshot.output_token_ids),
        "num_computed_tokens": snapshot.num_computed_tokens,
        "sampling_params": snapshot.sampling_params,
        "generator_state": snapshot.generator_state,
        "arrays": [(a.dtype.str, a.shape) for a in arrays],
    }
    blob = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER_LEN.pack(MAGIC, len(blob)) + blob)
    sent = 0
    for a in arrays:
        data = np.ascontiguousarray(a)
        sock.sendall(memoryview(data).cast("B"))
        sent += data.nbytes
    return sent


def _recv_exactly(sock: Any, n: int, deadline: float, timeout_s: float, what: str) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"recv_snapshot: {what}: {got} of {n} bytes after {timeout_s} s")
        sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:], n - got)
        except TimeoutError:  # socket.timeout is an alias of it
            raise TimeoutError(f"recv_snapshot: {what}: {got} of {n} bytes after "
                               f"{timeout_s} s") from None
        if k == 0:
            raise ConnectionError(f"recv_snapshot: the sender closed the connection during "
                                  f"{what} ({got} of {n} bytes arrived)")
        got += k
    return buf


def recv_snapshot(sock: Any, timeout_s: float) -> RequestSnapshot:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    deadline = time.monotonic() + timeout_s
    magic, size = _HEADER_LEN.unpack(
        _recv_exactly(sock, _HEADER_LEN.size, deadline, timeout_s, "the frame header"))
    if magic != MAGIC:
        raise ValueError(f"recv_snapshot: not a snapshot frame (magic {bytes(magic)!r})")
    header = pickle.loads(_recv_exactly(sock, size, deadline, timeout_s, "the snapshot header"))
    arrays = []
    for dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        raw = _recv_exactly(sock, nbytes, deadline, timeout_s, "the K/V payload")
        arrays.append(np.frombuffer(raw, dtype=dt).reshape(shape))
    kv = [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)]
    return RequestSnapshot(kv=kv, **header)
