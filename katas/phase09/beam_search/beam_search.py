"""Kata 09-03 — beam search, when greedy is a trap. Your work goes here.

Fill in the three bodies; grade them with ``pytest --impl=mine katas/phase09/beam_search``.

Everything runs over a *step model* (see ``scaffold.py``): ``step(tokens)`` takes the whole
sequence so far (prompt + generated, a tuple of ints) and returns a 1-D float64 array of
log-probabilities over the vocabulary (``-inf`` = impossible). A hypothesis is a
``scaffold.Beam(tokens, cum_logprob)``: its generated tokens (a tuple of Python ints, prompt
excluded, EOS last if it finished) and the sum of their log-probabilities (a float).
"""

from __future__ import annotations

from collections.abc import Sequence

from katas.phase09.beam_search.scaffold import Beam, StepModel


def beam_score(
    tokens: Sequence[int],
    cum_logprob: float,
    eos_token_id: int | None,
    length_penalty: float = 1.0,
) -> float:
    """The number hypotheses are ranked by (upstream ``get_beam_search_score``), higher is better.

    ``tokens`` is the whole sequence (prompt and generated tokens). The summed log-prob is
    divided by the sequence's length raised to the power ``length_penalty``. The length counts
    every token except a final ``eos_token_id`` (an EOS anywhere else counts; with
    ``eos_token_id=None`` nothing is discounted), and is never taken below 1.

    Examples: 4 tokens, ``cum_logprob -6.0``: ``-1.5`` at ``length_penalty 1``, ``-6.0`` at 0,
    ``-0.375`` at 2; the same with a final EOS: ``-2.0`` at 1.
    """
    raise NotImplementedError("beam_score: rank a hypothesis the way vLLM does")


def greedy_decode(
    step: StepModel,
    prompt: Sequence[int],
    *,
    max_tokens: int,
    eos_token_id: int | None = None,
) -> Beam:
    """Decode by taking the most probable next token at every step.

    Ties go to the lowest token id (as ``np.argmax``). Stops after ``max_tokens`` tokens, or
    right after emitting ``eos_token_id`` (which is kept in ``tokens``); ``None`` means no token
    stops it. Calls ``step`` once per generated token. Returns ``Beam(tokens, cum_logprob)``.
    ``max_tokens < 1`` raises ``ValueError`` naming it.

    On the course's garden path this takes A (0.6) then X (0.51): joint 0.306.
    """
    raise NotImplementedError("greedy_decode: the locally best token, step after step")


def beam_search(
    step: StepModel,
    prompt: Sequence[int],
    *,
    beam_width: int,
    max_tokens: int,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
) -> list[Beam]:
    """The best ``beam_width`` hypotheses found by beam search, best first.

    The contract (vLLM's ``LLM.beam_search`` emulation, made exact):

    - The search starts from one live hypothesis: no generated tokens, ``cum_logprob`` 0.
    - A step asks the step model once about each live hypothesis (prompt + its tokens). Each
      one *proposes* its ``2 * beam_width`` most probable next tokens (ties: lower id first;
      impossible tokens are never proposed, so a hypothesis may propose fewer). A proposal's
      ``cum_logprob`` is its parent's plus the token's log-prob.
    - A proposal ending in ``eos_token_id`` is *finished*: it never goes to the step model
      again and takes no live slot, but it takes part in the final ranking.
    - The other proposals of all live hypotheses are pooled, and the best ``beam_width`` of the
      pool are the next step's live hypotheses (fewer if the pool is smaller).
    - At most ``max_tokens`` steps; the search ends early if nothing is left live.
    - The result: the best ``beam_width`` of all finished and all still-live hypotheses.

    "Best" always means a higher :func:`beam_score` of ``prompt + tokens``; equal scores go to
    the smaller ``tokens`` tuple (Python's tuple order). ``eos_token_id=None``: nothing
    finishes. ``length_penalty`` defaults to 1.0, as upstream. With ``length_penalty=0`` width
    1 reproduces :func:`greedy_decode` exactly. ``beam_width`` or ``max_tokens`` below 1 raises
    ``ValueError`` naming it.

    On the course's garden path width 2 returns ``[BC (0.36), AX (0.306)]``.
    """
    raise NotImplementedError("beam_search: pool the proposals, keep the best, finish at EOS")
