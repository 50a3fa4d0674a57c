"""Reference for kata 08-02: read vLLM's speculation counters and reconcile them with the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from katas.phase08.spec_decode_on_vllm.scaffold import SpecCounters, SpecDecodeRun

_DRAFTS = "vllm:spec_decode_num_drafts"
_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
_ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"


def counters_from_drafts(drafts: Sequence[tuple[int, int]], k: int) -> SpecCounters:
    if k < 1:
        raise ValueError(f"k (num_speculative_tokens) must be >= 1, got {k}")
    per_pos = [0] * k
    drafted = accepted = 0
    for num_draft, num_accepted in drafts:
        if not 0 <= num_accepted <= num_draft <= k:
            raise ValueError(f"a draft needs 0 <= accepted <= drafted <= k={k}, "
                             f"got ({num_draft}, {num_accepted})")
        drafted += num_draft
        accepted += num_accepted
        for i in range(num_accepted):
            per_pos[i] += 1
    return SpecCounters(k, len(drafts), drafted, accepted, per_pos)


def mean_acceptance_length(c: SpecCounters) -> float:
    if c.num_drafts == 0:
        raise ValueError("no drafts were made: the mean acceptance length is undefined")
    return 1.0 + c.num_accepted_tokens / c.num_drafts


def acceptance_rate(c: SpecCounters) -> float:
    if c.num_draft_tokens == 0:
        raise ValueError("no draft tokens were proposed: the acceptance rate is undefined")
    return c.num_accepted_tokens / c.num_draft_tokens


def per_position_acceptance(c: SpecCounters) -> list[float]:
    if c.num_drafts == 0:
        raise ValueError("no drafts were made: per-position acceptance is undefined")
    return [a / c.num_drafts for a in c.accepted_per_pos]


def expected_tokens_per_cycle(alpha: float, k: int) -> float:
    if alpha == 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def alpha_from_tokens_per_cycle(tokens_per_cycle: float, k: int) -> float:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 1.0 <= tokens_per_cycle <= k + 1:
        raise ValueError(f"tokens per cycle must lie in [1, k + 1] = [1, {k + 1}], "
                         f"got {tokens_per_cycle}")
    lo, hi = 0.0, 1.0
    for _ in range(200):  # the series grows with alpha: bisect
        mid = (lo + hi) / 2
        if expected_tokens_per_cycle(mid, k) < tokens_per_cycle:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def predicted_speedup(alpha: float, k: int, c: float) -> float:
    return expected_tokens_per_cycle(alpha, k) / (k * c + 1.0)


def measure_spec_decode(llm: Any, prompts: Sequence[str], params: Any, k: int) -> SpecDecodeRun:
    before = _read(llm, k)
    outs = llm.generate(list(prompts), params)
    after = _read(llm, k)
    counters = SpecCounters(
        k,
        after.num_drafts - before.num_drafts,
        after.num_draft_tokens - before.num_draft_tokens,
        after.num_accepted_tokens - before.num_accepted_tokens,
        [a - b for a, b in zip(after.accepted_per_pos, before.accepted_per_pos, strict=True)],
    )
    return SpecDecodeRun(counters, [list(o.outputs[0].token_ids) for o in outs])


def _read(llm: Any, k: int) -> SpecCounters:
    values: dict[str, int] = {}
    per_pos = [0] * k
    for m in llm.get_metrics():
        if m.name in (_DRAFTS, _DRAFT_TOKENS, _ACCEPTED):
            values[m.name] = values.get(m.name, 0) + int(m.value)
        elif m.name == _PER_POS:
            for i, v in enumerate(m.values[:k]):
                per_pos[i] += int(v)
    return SpecCounters(k, values.get(_DRAFTS, 0), values.get(_DRAFT_TOKENS, 0),
                        values.get(_ACCEPTED, 0), per_pos)
