"""Reference solution for kata 09-03: greedy decoding, beam search, and vLLM's beam score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from katas.phase09.beam_search.scaffold import Beam, StepModel


def beam_score(
    tokens: Sequence[int],
    cum_logprob: float,
    eos_token_id: int | None,
    length_penalty: float = 1.0,
) -> float:
    """The ranking score of a hypothesis (upstream ``get_beam_search_score``)."""
    length = len(tokens)
    if length and eos_token_id is not None and tokens[-1] == eos_token_id:
        length -= 1  # the EOS token does not count towards the length
    return cum_logprob / (max(length, 1) ** length_penalty)


def greedy_decode(
    step: StepModel,
    prompt: Sequence[int],
    *,
    max_tokens: int,
    eos_token_id: int | None = None,
) -> Beam:
    """The most probable next token at every step (lowest id on ties), up to EOS."""
    _check_positive("max_tokens", max_tokens)
    prompt = tuple(int(t) for t in prompt)
    tokens: tuple[int, ...] = ()
    cum = 0.0
    for _ in range(max_tokens):
        logprobs = np.asarray(step(prompt + tokens), dtype=np.float64)
        token = int(np.argmax(logprobs))  # np.argmax returns the first maximum
        tokens += (token,)
        cum += float(logprobs[token])
        if token == eos_token_id:
            break
    return Beam(tokens, cum)


def beam_search(
    step: StepModel,
    prompt: Sequence[int],
    *,
    beam_width: int,
    max_tokens: int,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
) -> list[Beam]:
    """The best ``beam_width`` hypotheses, best first (vLLM's ``LLM.beam_search`` emulation)."""
    _check_positive("beam_width", beam_width)
    _check_positive("max_tokens", max_tokens)
    prompt = tuple(int(t) for t in prompt)

    def rank(beam: Beam) -> tuple[float, tuple[int, ...]]:
        # Best score first; equal scores: the smaller token sequence first.
        score = beam_score(prompt + beam.tokens, beam.cum_logprob, eos_token_id, length_penalty)
        return (-score, beam.tokens)

    live = [Beam((), 0.0)]
    finished: list[Beam] = []
    for _ in range(max_tokens):
        if not live:
            break
        pool: list[Beam] = []
        for beam in live:
            logprobs = np.asarray(step(prompt + beam.tokens), dtype=np.float64)
            for token in _top_tokens(logprobs, 2 * beam_width):
                child = Beam(beam.tokens + (token,), beam.cum_logprob + float(logprobs[token]))
                if token == eos_token_id:
                    finished.append(child)  # leaves the live set, stays in the final ranking
                else:
                    pool.append(child)
        live = sorted(pool, key=rank)[:beam_width]
    return sorted(finished + live, key=rank)[:beam_width]


def _top_tokens(logprobs: np.ndarray, n: int) -> list[int]:
    """The ``n`` most probable tokens (lowest id first on ties), impossible ones left out."""
    order = np.lexsort((np.arange(logprobs.size), -logprobs))  # last key sorts first
    return [int(t) for t in order[:n] if np.isfinite(logprobs[t])]


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
