"""Kata 03-02 — chunked prefill's timing. Your work goes here.

Chunked prefill changes *when* a prompt is computed, never *what* comes out. Predict the when:
first for one request alone in the engine (the course's formula), then for several requests
sharing each step's token budget, step by step, exactly as mini_vllm's scheduler will run them.
The tests run the engine and compare, and check that chunking changed no output token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def num_prefill_steps(prompt_len: int, threshold: int, budget: int) -> int:
    """Steps a lone request needs to prefill a ``prompt_len``-token prompt.

    Alone in the engine, the request owns each step's whole ``budget`` (tokens per step), but
    computes at most ``threshold`` tokens of its prompt per step when the threshold is on
    (``threshold > 0``; ``0`` means off). A threshold above the budget changes nothing, and a
    prompt that divides evenly takes no extra step. ``(10, 4, 2048) -> 3`` (chunks 4, 4, 2);
    ``(4096, 512, 512) -> 8``; an empty prompt takes 0 steps. Integer arithmetic only.

    Raise ``ValueError`` for ``prompt_len < 0``, ``threshold < 0`` or ``budget < 1``.
    """
    raise NotImplementedError("num_prefill_steps: prefill steps of a lone request")


def chunk_schedule(
    prompts: Mapping[str, int],
    *,
    budget: int,
    threshold: int = 0,
    decoding: Sequence[str] = (),
) -> list[dict[str, int]]:
    """Every step's ``{request: tokens}`` until the last prompt is completely prefilled.

    The scene: the requests named in ``decoding`` are already running, each decoding one token
    per step. At step 0 the prompts ``{name: prompt_len}`` arrive, waiting in the mapping's
    order. The engine runs with ``max_num_batched_tokens=budget`` and
    ``long_prefill_token_threshold=threshold`` (``0``: off), no caching, memory and seats to
    spare, and no request finishes in the window. Predict what mini_vllm's scheduler does:

    * each step spends at most ``budget`` tokens, handed out in row order; no request gets more
      than the threshold (when on), and nobody is scheduled for 0 tokens;
    * running requests come first, in the order they started running (the decodes as given,
      then prompts in arrival order); a decode takes 1 token, a prompt mid-prefill the next
      chunk of what it has left;
    * then, with budget left, waiting prompts are admitted first come first served;
    * a prompt whose prefill completes samples its first token, and from the next step on is a
      decode in its own place in the row order.

    Return one dict per step, rows in order, ending with the step that completes the last
    prefill (``[]`` when there are no prompts). The course's trace: ``{"A": 11, "B": 7}`` at
    budget 8 gives ``[{"A": 8}, {"A": 3, "B": 5}, {"A": 1, "B": 2}]``.

    Raise ``ValueError`` for ``threshold < 0``, ``budget < 1``, a prompt shorter than 1 token,
    a name used twice (across ``decoding`` and ``prompts``), or more requests in all than the
    ``budget``: nobody here ever stops decoding, so some prefill could starve forever.
    """
    raise NotImplementedError("chunk_schedule: each step's tokens per request, until prefilled")
