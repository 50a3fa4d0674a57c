"""Kata 15-02 — stand up a prefill/decode pair: two engines, the KV handed over for real.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase15/prefill_decode_pair``.

Two halves:

* vLLM (the live tests): ``kv_transfer_configs`` wires a producer and a consumer engine to
  ``ExampleConnector`` over one shared directory; ``kv_bytes_per_token`` and
  ``transferred_tokens`` predict what lands in that directory; ``proxy_generate`` is the router
  step in front of the pair.
* mini_vllm (runs everywhere): ``send_snapshot`` and ``recv_snapshot`` carry a 15-01
  ``RequestSnapshot`` over a connected stream socket from a prefill process to a decode process
  (the lab's ``scaffold.run_pair`` starts both; see its docstring).

This kata builds on two earlier ones. ``export_request`` / ``import_request`` /
``run_to_completion`` come from your kata 15-01 and ``kv_payload_bytes`` from your kata 15-03,
imported below; the processes and the tests call them through this module. Copy them in
instead if you prefer (keep the names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from katas.phase15.disagg_economics.disagg_economics import kv_payload_bytes  # noqa: F401
from katas.phase15.kv_handoff.kv_handoff import (  # noqa: F401  (yours, from 15-01)
    export_request,
    import_request,
    run_to_completion,
)
from katas.phase15.kv_handoff.scaffold import RequestSnapshot

__all__ = [
    "export_request", "import_request", "kv_payload_bytes", "run_to_completion",
    "kv_transfer_configs", "kv_bytes_per_token", "transferred_tokens", "proxy_generate",
    "send_snapshot", "recv_snapshot",
]


# -- vLLM: configuration and prediction -----------------------------------------------------


def kv_transfer_configs(storage_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``kv_transfer_config`` dicts of the prefill engine and of the decode engine.

    Returns ``(producer, consumer)``: two plain dicts that ``vllm.LLM(...,
    kv_transfer_config=...)`` (or ``--kv-transfer-config`` as JSON) accepts. Both use vLLM's
    ``ExampleConnector`` and the same directory ``storage_path`` (a string), given to the
    connector as its ``shared_storage_path`` extra setting; the first writes KV, the second
    reads it (the two roles of ``vllm/config/kv_transfer.py: KVRole``). An empty
    ``storage_path`` raises ``ValueError`` naming ``storage_path``.
    """
    raise NotImplementedError("kv_transfer_configs: the producer and consumer configs")


def kv_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies, all layers together.

    ``config`` is a checkpoint's ``config.json`` as a dict: ``num_hidden_layers``,
    ``num_attention_heads``, ``hidden_size``, and optionally ``num_key_value_heads`` (absent:
    every attention head keeps its own K and V) and ``head_dim`` (absent: ``hidden_size /
    num_attention_heads``). ``dtype_bytes`` is the size of one cached value (2 for bf16).
    SmolLM2-135M in bf16: 23,040. Raises ``ValueError`` naming ``dtype_bytes`` when it is not
    an int >= 1, and naming the missing key when ``num_hidden_layers`` or
    ``num_attention_heads`` is absent.
    """
    raise NotImplementedError("kv_bytes_per_token: bytes of K/V one token occupies")


def transferred_tokens(prompt_len: int, block_size: int) -> int:
    """Tokens whose KV ``ExampleConnector`` stores on the producer (and loads on the consumer)
    for a prompt of ``prompt_len`` tokens, with vLLM blocks of ``block_size`` tokens.

    The connector moves whole blocks only, and never the prompt's last token: the consumer must
    compute that one to get logits. 129 tokens at block size 128: 128. Raises ``ValueError``
    naming the argument when either is not an int >= 1.
    """
    raise NotImplementedError("transferred_tokens: the prompt tokens the connector moves")


def proxy_generate(prefill: Callable[[list[int], int], list[int]],
                   decode: Callable[[list[int], int], list[int]],
                   prompt_ids: Sequence[int], max_tokens: int) -> list[int]:
    """The proxy in front of a prefill/decode pair: one request, ``max_tokens`` tokens out.

    ``prefill`` and ``decode`` each run one request on their engine: ``engine(prompt_ids,
    max_tokens) -> the new token ids`` (greedy). The prefill engine is used for the prompt and
    nothing after its first token; the decode engine produces the rest, continuing exactly where
    the prefill engine stopped. Returns the request's tokens, which must equal one engine's
    ``engine(prompt_ids, max_tokens)``. Each engine is called at most once; with
    ``max_tokens == 1`` the decode engine is not called. Raises ``ValueError`` naming
    ``max_tokens`` when it is not an int >= 1.
    """
    raise NotImplementedError("proxy_generate: prefill on P, the rest on D")


# -- mini_vllm: the wire -----------------------------------------------------------------------


def send_snapshot(sock: Any, snapshot: RequestSnapshot) -> int:
    """Write ``snapshot`` to the connected stream socket ``sock`` as one self-delimiting frame.

    Everything ``recv_snapshot`` needs to rebuild it travels: ids, counters, sampling params,
    ``generator_state`` and every K/V array with its dtype and shape, the arrays as their raw
    bytes (the frame is the payload plus a small header, a few KiB at most). Writes only through
    ``sock.sendall``. Returns the number of K/V payload bytes written (``snapshot.payload_bytes()``
    when all went out).
    """
    raise NotImplementedError("send_snapshot: put the snapshot on the wire")


def recv_snapshot(sock: Any, timeout_s: float) -> RequestSnapshot:
    """Read one frame written by ``send_snapshot`` from ``sock`` and rebuild the snapshot: equal
    fields, K/V arrays bit-identical with the same dtypes and shapes.

    Never waits forever: if the whole frame has not arrived within ``timeout_s`` seconds,
    raises ``TimeoutError``. If the sender closes the connection before the frame is complete
    (it died mid-transfer), raises ``ConnectionError`` — never a half-built snapshot. Raises
    ``ValueError`` naming ``timeout`` when ``timeout_s`` is not a number > 0.
    """
    raise NotImplementedError("recv_snapshot: rebuild the snapshot from the wire")
