"""Beam search over the engine, the way vLLM emulates it: every live beam is an ordinary request.

Upstream twins: ``vllm/beam_search.py`` (``BeamSearchSequence``, ``BeamSearchOutput``,
``get_beam_search_score``, ``create_sort_beams_key_function``), ``vllm/sampling_params.py:
BeamSearchParams`` and ``vllm/entrypoints/llm.py: LLM.beam_search`` (vLLM v0.22.1; 0.32 moved them
to ``vllm/entrypoints/generate/beam_search/`` with the same rules). The V1 engine core has no
beam search: beams branch and die every step, which fights continuous batching, so a loop outside
the engine drives it::

    live = [the prompt, cum_logprob 0]; completed = []
    repeat max_tokens times (stop early when nothing is live):
        send every live beam (of every prompt) as a request: prompt = the beam's tokens,
            max_tokens = 1, greedy, asking for the log-probs of its 2 * beam_width best tokens
        each returned (token, log-prob) is a proposal: the beam's tokens + token, its
            cum_logprob + log-prob; an EOS proposal (unless ignore_eos) goes to completed,
            never to be extended; the rest of the prompt's proposals are pooled
        live = the best beam_width of the pool
    answer = the best beam_width of completed + live

"Best" is :func:`get_beam_search_score`: ``cum_logprob / length ** length_penalty``, where the
length is the whole sequence (prompt included) minus a final EOS, and at least 1.

The beams of a step share their common prefix through prefix caching, as upstream: each beam is a
fresh request whose prompt starts with the original prompt (and the beam's earlier tokens), so its
full blocks are hits and only the tail is computed (``mini_vllm/tests/test_beam_search.py`` counts
the hits and the shared blocks' ref counts). With ``enable_caching=False`` every beam recomputes
its whole sequence: the same answer, more work.

The log-probs are the log-softmax of the model's raw logits for the beam's last token (upstream's
default ``logprobs_mode="raw_logprobs"``): the engine's sampler is wrapped for the duration of the
call to record them, and nothing else about sampling changes.

Departures from upstream, each for determinism or brevity:

* equal scores go to the smaller token sequence (upstream leaves them to its sort's stability);
* tokens with log-prob ``-inf`` are never proposed (a real model has none; a hand-written toy
  model may);
* ``BeamSearchParams`` has the four fields the engine needs (no ``temperature``: the beams are
  always greedy requests, so the proposals are exactly the top ``2 * beam_width``; no stop strings,
  structured output or LoRA);
* ``BeamSearchSequence`` carries ``num_prompt_tokens``, so ``output_token_ids`` can give the
  generated part; ``text`` decodes the whole sequence, prompt included, as upstream.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mini_vllm.engine import LLMEngine, sample_request
from mini_vllm.request import SamplingParams


@dataclass(frozen=True)
class BeamSearchParams:
    """``beam_width`` (>= 1), ``max_tokens`` (>= 1), ``length_penalty`` (finite; 1.0 ranks by the
    per-token average, 0 by the raw sum), ``ignore_eos`` (EOS proposals stay live, nothing
    finishes early). Bad values raise ``ValueError`` naming the field."""

    beam_width: int
    max_tokens: int
    length_penalty: float = 1.0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        for name in ("beam_width", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        penalty = self.length_penalty
        if (not isinstance(penalty, numbers.Real) or isinstance(penalty, bool)
                or not math.isfinite(float(penalty))):
            raise ValueError(f"length_penalty must be a finite number, got {penalty!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")


@dataclass
class BeamSearchSequence:
    """One hypothesis: ``tokens`` is the whole sequence (prompt first), ``cum_logprob`` the sum
    of the generated tokens' log-probs, ``logprobs`` one ``{token: log-prob}`` dict per generated
    token (the proposals its parent saw at that step)."""

    tokens: list[int]
    cum_logprob: float = 0.0
    logprobs: list[dict[int, float]] = field(default_factory=list)
    num_prompt_tokens: int = 0
    text: str | None = None

    @property
    def output_token_ids(self) -> list[int]:
        """The generated tokens (EOS last if the hypothesis finished)."""
        return self.tokens[self.num_prompt_tokens:]


@dataclass
class BeamSearchOutput:
    """The best ``beam_width`` hypotheses of one prompt, best first."""

    sequences: list[BeamSearchSequence]


def get_beam_search_score(
    tokens: Sequence[int],
    cumulative_logprob: float,
    eos_token_id: int | None,
    length_penalty: float = 1.0,
) -> float:
    """``cumulative_logprob / max(length, 1) ** length_penalty``; ``length`` counts every token
    of the whole sequence except a final ``eos_token_id``."""
    length = len(tokens)
    if length and eos_token_id is not None and tokens[-1] == eos_token_id:
        length -= 1
    return cumulative_logprob / (max(length, 1) ** length_penalty)


def create_sort_beams_key_function(
    eos_token_id: int | None, length_penalty: float,
) -> Callable[[BeamSearchSequence], tuple[float, tuple[int, ...]]]:
    """A key for ``sorted`` that puts the best hypothesis first: the highest score, then (a
    mini_vllm rule) the smaller token sequence."""

    def key(beam: BeamSearchSequence) -> tuple[float, tuple[int, ...]]:
        score = get_beam_search_score(beam.tokens, beam.cum_logprob, eos_token_id, length_penalty)
        return (-score, tuple(beam.tokens))

    return key


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of one row of logits, in float64 (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - np.max(x)
    return shifted - np.log(np.exp(shifted).sum())


def top_logprobs(logprobs: np.ndarray, n: int) -> dict[int, float]:
    """The ``n`` most probable tokens, best first (lower id first on ties), ``-inf`` left out."""
    order = np.lexsort((np.arange(logprobs.size), -logprobs))[:n]
    return {int(t): float(logprobs[t]) for t in order if np.isfinite(logprobs[t])}


class _LogprobRecorder:
    """Wraps the engine's sampler for one beam search: remembers the raw log-probs of every row
    it samples, by request id, and samples exactly as the wrapped sampler does."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.rows: dict[str, np.ndarray] = {}

    def sample(self, logits: Any, params: Any, request: Any = None) -> int:
        if request is None:
            return int(self.sampler.sample(logits, params))
        self.rows[request.request_id] = log_softmax(logits)
        return sample_request(self.sampler, logits, request)

    __call__ = sample


def beam_search(
    engine: LLMEngine,
    prompts: str | Sequence[int] | Iterable[str | Sequence[int]],
    params: BeamSearchParams,
) -> list[BeamSearchOutput]:
    """Beam-search every prompt on ``engine``; one :class:`BeamSearchOutput` per prompt, in order.

    A prompt is a ``str`` (encoded with the engine's tokenizer) or a list of token ids; a single
    prompt may be passed bare. Each prompt must leave room for ``params.max_tokens`` more tokens
    (the engine's ``max_model_len`` and KV pool), checked before anything runs (``ValueError``).
    The beams of all prompts run together, one engine batch per step. Other requests on the
    engine are served alongside and sample as before.
    """
    if not isinstance(params, BeamSearchParams):
        raise ValueError(f"params must be a BeamSearchParams, got {params!r}")
    if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                    and isinstance(prompts[0], numbers.Integral)):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    width = params.beam_width
    eos = engine.tokenizer.eos_token_id
    rank = create_sort_beams_key_function(eos, params.length_penalty)
    whole_run = SamplingParams(max_tokens=params.max_tokens, temperature=0.0)
    token_lists = []
    for index, prompt in enumerate(prompts):
        try:
            token_lists.append(engine._vet(prompt, whole_run)[0])
        except ValueError as exc:
            raise ValueError(f"prompts[{index}]: {exc}") from exc

    live = [[BeamSearchSequence(list(t), 0.0, [], len(t))] for t in token_lists]
    completed: list[list[BeamSearchSequence]] = [[] for _ in token_lists]
    one_token = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    recorder = _LogprobRecorder(engine.sampler)
    engine.sampler = recorder
    try:
        for _ in range(params.max_tokens):
            beams = [(p, beam) for p, beams in enumerate(live) for beam in beams]
            if not beams:
                break
            outputs = engine.generate([beam.tokens for _, beam in beams], one_token)
            pools: list[list[BeamSearchSequence]] = [[] for _ in token_lists]
            for (p, beam), out in zip(beams, outputs, strict=True):
                proposals = top_logprobs(recorder.rows.pop(out.request_id), 2 * width)
                for token, logprob in proposals.items():
                    child = BeamSearchSequence(beam.tokens + [token], beam.cum_logprob + logprob,
                                               beam.logprobs + [proposals],
                                               beam.num_prompt_tokens)
                    if token == eos and not params.ignore_eos:
                        completed[p].append(child)  # finished: ranked at the end, never extended
                    else:
                        pools[p].append(child)
            live = [sorted(pool, key=rank)[:width] for pool in pools]
            recorder.rows.clear()
    finally:
        engine.sampler = recorder.sampler
    results = []
    for done, still_live in zip(completed, live, strict=True):
        best = sorted(done + still_live, key=rank)[:width]
        for beam in best:
            beam.text = engine.tokenizer.decode(beam.tokens)
        results.append(BeamSearchOutput(best))
    return results
