"""Reference for kata 15-03: the disaggregation trade, priced in five functions."""

from __future__ import annotations

import math

KIB = 1 << 10
MIB = 1 << 20
GIGA = 10**9  # link speeds are decimal: 200 Gb/s is 200e9 bits per second

SPLIT = "split"
SLOW_LINK = "slow_link"
NO_INTERFERENCE = "no_interference"


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _bad_number(value: object) -> bool:
    return (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value))


def _seconds(name: str, value: float, *, positive: bool) -> float:
    if _bad_number(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")
    return float(value)


def kv_payload_bytes(prompt_tokens: int, kv_bytes_per_token: int) -> int:
    _count("prompt_tokens", prompt_tokens, 0)
    _count("kv_bytes_per_token", kv_bytes_per_token, 1)
    return prompt_tokens * kv_bytes_per_token


def transfer_seconds(payload_bytes: int, link_gbps: float) -> float:
    _count("payload_bytes", payload_bytes, 0)
    if _bad_number(link_gbps) or link_gbps <= 0:
        raise ValueError(f"link_gbps must be gigabits per second > 0, got {link_gbps!r}")
    bits = payload_bytes * 8  # KV is counted in bytes, links in bits
    return bits / (link_gbps * GIGA)


def colocated_itl_worst(decode_step_s: float, chunk_s: float) -> float:
    step = _seconds("decode_step_s", decode_step_s, positive=True)
    chunk = _seconds("chunk_s", chunk_s, positive=False)
    # The decode step that shares its batch with a prefill chunk pays for both.
    return step + chunk


def disagg_ttft_penalty(transfer_s: float, prefill_s: float) -> float:
    transfer = _seconds("transfer_s", transfer_s, positive=False)
    prefill = _seconds("prefill_s", prefill_s, positive=True)
    return transfer / prefill


def disagg_wins(decode_step_s: float, chunk_s: float, transfer_s: float, prefill_s: float, *,
                min_itl_gain: float = 1.5, max_ttft_penalty: float = 0.25) -> tuple[bool, str]:
    if _bad_number(min_itl_gain) or min_itl_gain < 1:
        raise ValueError(f"min_itl_gain must be a number >= 1, got {min_itl_gain!r}")
    if _bad_number(max_ttft_penalty) or max_ttft_penalty < 0:
        raise ValueError(f"max_ttft_penalty must be a number >= 0, got {max_ttft_penalty!r}")
    itl_gain = colocated_itl_worst(decode_step_s, chunk_s) / decode_step_s
    penalty = disagg_ttft_penalty(transfer_s, prefill_s)
    if itl_gain < min_itl_gain:
        return False, NO_INTERFERENCE  # no disease: nothing for the split to cure
    if penalty > max_ttft_penalty:
        return False, SLOW_LINK  # the cure costs more than the disease
    return True, SPLIT
