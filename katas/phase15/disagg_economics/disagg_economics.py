"""Kata 15-03 — the disaggregation trade: what a prefill/decode split costs (KV freight on the
wire, paid once in TTFT) against what it buys (decode steps that never share a batch with a
prefill chunk).

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase15/disagg_economics``.

Units: sizes are bytes (ints; ``KIB = 2**10``, ``MIB = 2**20``); times are seconds (floats);
link speeds are **gigabits** per second, decimal as network links are sold (200 Gb/s is
200 x 10**9 bits per second). The course's model is an 8B Llama: 128 KiB of K and V per token,
a 2048-token prompt whose prefill takes about 205 ms.

Every function refuses a bad argument with one ``ValueError`` whose message names it: token
counts and byte counts are ints >= 0 (``kv_bytes_per_token`` >= 1), link speeds numbers > 0,
times finite numbers >= 0 (a decode step and a prefill strictly > 0).
"""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIGA = 10**9

SPLIT = "split"
SLOW_LINK = "slow_link"
NO_INTERFERENCE = "no_interference"


def kv_payload_bytes(prompt_tokens: int, kv_bytes_per_token: int) -> int:
    """Bytes of KV a prefill engine must ship to the decode engine for ``prompt_tokens`` computed
    tokens of a model whose K and V take ``kv_bytes_per_token`` bytes per token (all layers).

    The 8B's 2048-token prompt ships 268,435,456 bytes (256 MiB). Kata 15-01's
    ``RequestSnapshot.payload_bytes()`` is this number for a real request.
    """
    raise NotImplementedError("kv_payload_bytes: the bytes of KV one request ships")


def transfer_seconds(payload_bytes: int, link_gbps: float) -> float:
    """Seconds to push ``payload_bytes`` through a link of ``link_gbps`` gigabits per second
    (bandwidth only: no latency, no overlap with compute).

    256 MiB: about 11 ms on a 200 Gb/s InfiniBand-class fabric, about 215 ms on 10 GbE.
    """
    raise NotImplementedError("transfer_seconds: how long the payload takes on the link")


def colocated_itl_worst(decode_step_s: float, chunk_s: float) -> float:
    """The worst inter-token latency a decoding request sees on a colocated engine, where one of
    its decode steps shares a batch with a prefill chunk that takes ``chunk_s`` on its own
    (phase 3 lab-05's spike). Disaggregated, the same request's worst ITL is ``decode_step_s``.
    """
    raise NotImplementedError("colocated_itl_worst: the decode step that meets a prefill chunk")


def disagg_ttft_penalty(transfer_s: float, prefill_s: float) -> float:
    """The transfer's toll on time to first token, as a fraction of the prefill it delivers
    (0.05 means TTFT grows by 5%). About 5% on 200 Gb/s for the 8B, over 100% on 10 GbE.
    """
    raise NotImplementedError("disagg_ttft_penalty: the TTFT toll as a fraction of prefill")


def disagg_wins(decode_step_s: float, chunk_s: float, transfer_s: float, prefill_s: float, *,
                min_itl_gain: float = 1.5, max_ttft_penalty: float = 0.25) -> tuple[bool, str]:
    """Whether to split prefill and decode onto separate engines, and why: ``(verdict, reason)``.

    - ``(False, NO_INTERFERENCE)`` when the colocated worst ITL is less than ``min_itl_gain``
      times the clean decode step: no disease, nothing for the split to cure (this reason wins
      when the link is slow as well);
    - ``(False, SLOW_LINK)`` when there is interference but the TTFT penalty exceeds
      ``max_ttft_penalty``: the cure costs more than the disease;
    - ``(True, SPLIT)`` otherwise. Both limits are inclusive: a gain of exactly
      ``min_itl_gain`` and a penalty of exactly ``max_ttft_penalty`` still split.

    ``min_itl_gain`` must be >= 1, ``max_ttft_penalty`` >= 0 (else ``ValueError``).
    """
    raise NotImplementedError("disagg_wins: split or not, and the reason")
