"""Kata 08-02: read vLLM's speculative-decoding counters and reconcile them with the speedup model.

You write the arithmetic vLLM's spec-decode log line does, the back-solve from tokens per cycle
to a per-position acceptance probability, the speedup the model predicts, and the function that
reads one run's counters off a live ``vllm.LLM``. ``SpecCounters`` and ``SpecDecodeRun`` come
from ``scaffold.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from katas.phase08.spec_decode_on_vllm.scaffold import SpecCounters, SpecDecodeRun


def counters_from_drafts(drafts: Sequence[tuple[int, int]], k: int) -> SpecCounters:
    """The counters vLLM would hold after observing ``drafts``.

    Each draft is ``(num_draft_tokens, num_accepted_tokens)`` for one verify of one request, with
    ``0 <= accepted <= drafted <= k``; anything else raises ``ValueError`` (so does ``k < 1``).
    ``accepted_per_pos`` has ``k`` entries; entry ``i`` counts the drafts that kept at least
    ``i + 1`` tokens, so the entries add up to ``num_accepted_tokens``. Example with k = 3:
    ``[(3, 3), (3, 0), (3, 1), (2, 2), (1, 0)]`` -> 5 drafts, 12 drafted, 6 accepted, ``[3, 2, 1]``.
    """
    raise NotImplementedError("counters_from_drafts: fold per-draft outcomes into counters")


def mean_acceptance_length(c: SpecCounters) -> float:
    """Tokens one verify emits on average, as vLLM's log line reports it (the course's capture:
    2.8 accepted per draft reads as 3.8). ``ValueError`` when there were no drafts."""
    raise NotImplementedError("mean_acceptance_length: tokens per verify, as vLLM logs it")


def acceptance_rate(c: SpecCounters) -> float:
    """The fraction of draft tokens the target kept, in [0, 1] (the course's 56% is 0.56).
    ``ValueError`` when no draft token was proposed."""
    raise NotImplementedError("acceptance_rate: the fraction of draft tokens kept")


def per_position_acceptance(c: SpecCounters) -> list[float]:
    """One rate per draft position, as vLLM's log line prints them: for position ``i``, the share
    of drafts whose first ``i + 1`` tokens were kept (non-increasing). ``ValueError`` when there
    were no drafts."""
    raise NotImplementedError("per_position_acceptance: the per-position rates vLLM logs")


def expected_tokens_per_cycle(alpha: float, k: int) -> float:
    """Tokens a verify of ``k`` drafts emits on average when each draft is kept with probability
    ``alpha`` independently and the first rejection stops it: 1 at alpha = 0, ``k + 1`` at
    alpha = 1 (exactly, no division by zero)."""
    raise NotImplementedError("expected_tokens_per_cycle: the i.i.d. acceptance model")


def alpha_from_tokens_per_cycle(tokens_per_cycle: float, k: int) -> float:
    """The alpha in [0, 1] at which ``expected_tokens_per_cycle(alpha, k)`` equals
    ``tokens_per_cycle`` (3.8 tokens at k = 5 -> about 0.81). ``ValueError`` when
    ``tokens_per_cycle`` lies outside [1, k + 1] or ``k < 1``."""
    raise NotImplementedError("alpha_from_tokens_per_cycle: back-solve the acceptance model")


def predicted_speedup(alpha: float, k: int, c: float) -> float:
    """Lab 08-04's model: decode speed with speculation over decode speed without, where ``c`` is
    one draft step's cost in target steps (alpha = 0.75, k = 5, c = 0.05 -> 2.63)."""
    raise NotImplementedError("predicted_speedup: tokens per cycle over the cost of a cycle")


def measure_spec_decode(llm: Any, prompts: Sequence[str], params: Any, k: int) -> SpecDecodeRun:
    """Run ``prompts`` through ``llm.generate`` in one call and report what that call did.

    ``llm`` is a ``vllm.LLM`` (or anything with its ``generate`` and ``get_metrics``) whose
    speculation drafts up to ``k`` tokens. The counters count since the engine started, and other
    work may have run before: the result's counters are this call's change only, with ``k``
    per-position entries. A counter the engine does not have (no speculation) reads as 0.
    ``output_token_ids``: each request's completion ids, in prompt order.
    """
    raise NotImplementedError("measure_spec_decode: one run's change in vLLM's spec counters")
