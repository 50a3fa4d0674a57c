"""Kata 08-01 — n-gram drafts and greedy verification: several tokens per target run.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase08/ngram_spec_decode``.

Token ids are plain ints; a context is a sequence of them. The big model is a deterministic
``target(context) -> token`` (its greedy choice after ``context``); every call to it is part of
one "run" of the big model, and a run may check many drafts at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Target = Callable[[Sequence[int]], int]


def ngram_propose(context: Sequence[int], n: int, k: int) -> list[int]:
    """Up to ``k`` draft tokens for what follows ``context``, from its own earlier text.

    Look for the **most recent earlier** occurrence of the last ``n`` tokens — one that starts
    before the suffix's own position at the end (it may overlap the suffix) — and return the
    (at most ``k``) tokens that followed it; fewer when the context ends first. Example:
    ``ngram_propose([1, 2, 7, 1, 2, 8, 1, 2], n=2, k=2) == [8, 1]``.

    Returns ``[]`` when there is no such occurrence, when ``k == 0``, or when the context has
    ``n`` tokens or fewer. Raises ``ValueError`` naming ``n`` when ``n < 1`` and naming ``k``
    when ``k < 0``.
    """
    raise NotImplementedError("ngram_propose: draft tokens from an earlier match of the suffix")


def verify_greedy(context: Sequence[int], proposed: Sequence[int],
                  target: Target) -> tuple[list[int], int]:
    """One run of the big model over the drafts: ``(emitted tokens, drafts accepted)``.

    Draft ``i`` is accepted iff it equals the target's choice after ``context`` followed by the
    drafts accepted before it. The first rejected draft is replaced by the target's own choice
    (the correction) and ends the run; when every draft is accepted, the target's next choice is
    appended (the bonus). So ``emitted`` is the accepted drafts plus exactly one token
    (``len(emitted) == accepted + 1``), and it is exactly what greedy decoding would produce.
    With the periodic target 3, 1, 4, 1, 5, ...: drafts ``[3, 1, 9]`` give ``([3, 1, 4], 2)``.
    """
    raise NotImplementedError("verify_greedy: accept the matching drafts, then one target token")


def run_speculative(context: Sequence[int], target: Target, n: int, k: int,
                    num_tokens: int) -> tuple[list[int], dict[str, int]]:
    """Generate exactly ``num_tokens`` tokens by draft-then-verify runs: ``(tokens, stats)``.

    Each run proposes with :func:`ngram_propose` over everything so far (at most ``k`` drafts,
    and never more than the tokens still wanted leave room for: a run emits one token more
    than it accepts), then verifies with :func:`verify_greedy`. ``tokens`` equals
    ``run_baseline(context, target, num_tokens)``. ``stats`` has the integer keys
    ``"proposed"`` (drafts proposed over all runs), ``"accepted"`` (drafts accepted) and
    ``"runs"`` (verify runs, one with no drafts included), so ``accepted + runs == num_tokens``
    and ``(accepted + runs) / runs`` is the tokens per big-model run.

    Raises ``ValueError`` when ``num_tokens < 0`` or ``k < 0``.
    """
    raise NotImplementedError("run_speculative: the draft-verify loop with its counts")


def run_baseline(context: Sequence[int], target: Target, num_tokens: int) -> list[int]:
    """Plain greedy decoding: ``num_tokens`` tokens, one target call (one run) each.

    Raises ``ValueError`` when ``num_tokens < 0``.
    """
    raise NotImplementedError("run_baseline: greedy decoding, one token per run")
