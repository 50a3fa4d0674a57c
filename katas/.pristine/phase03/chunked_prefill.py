"""Kata 03-02 — chunked prefill's timing. Your work goes here.

One request alone in the engine owns the whole token budget. Each step it computes one chunk of
its prompt: at most ``threshold`` tokens when the threshold is on, never more than the budget.
Predict the chunks and the number of steps; the tests then run the engine and check both, and
check that chunking changed nothing about the tokens that come out.
"""

from __future__ import annotations


def prefill_chunk_sizes(prompt_len: int, threshold: int, budget: int) -> list[int]:
    """Tokens a lone request computes in each step of its prefill, in order.

    The chunk is ``threshold`` when ``threshold > 0``, else ``budget``; and never more than
    ``budget``. The prompt is cut into full chunks, followed by the remainder if there is one
    (``prompt_len=10, threshold=4`` gives ``[4, 4, 2]``; an empty prompt gives ``[]``).
    Raise ``ValueError`` for ``prompt_len < 0``, ``threshold < 0`` or ``budget < 1``.
    """
    raise NotImplementedError(
        "prefill_chunk_sizes: full chunks of min(threshold or budget, budget), then the rest"
    )


def num_prefill_steps(prompt_len: int, threshold: int, budget: int) -> int:
    """Steps a lone request needs to prefill ``prompt_len`` tokens: ``ceil(prompt_len / chunk)``.

    Same chunk and same ``ValueError`` cases as :func:`prefill_chunk_sizes`. Boundaries to get
    right: ``threshold == 0`` means off (the budget alone decides, not "chunks of zero"); a
    threshold above the budget changes nothing; an exact multiple takes exactly
    ``prompt_len / chunk`` steps, no extra one. Use integer arithmetic.
    """
    raise NotImplementedError(
        "num_prefill_steps: ceil(prompt_len / min(threshold or budget, budget))"
    )
