"""What the lab gives you for kata 09-03: the hypothesis record and three kinds of step model.

None of this is your work. A *step model* is anything you can call with a whole token sequence
(the prompt followed by the tokens generated so far, as a tuple of ints) that answers with a 1-D
float64 numpy array of **log-probabilities** over the vocabulary, one per token id: ``-inf``
where a token is impossible, and the finite entries' probabilities add up to 1. It is the only
thing beam search knows about the model, just as vLLM's beam search only sees the log-probs the
engine returns for each candidate sequence.

* ``table_model``: a hand-written tree of probabilities (the garden-path fixtures).
* ``DenseStepModel``: a real network (mini_vllm's seeded tiny Llama), run on the whole sequence.
* ``restricted``: any step model, renormalised over a few allowed tokens, so that a search can
  be checked against trying every sequence.
* ``EngineStepModel``: mini_vllm's whole engine as a step model, each sequence one request, as
  vLLM's beam search sends each live beam (so your search can be compared with
  ``mini_vllm.beam_search``, which drives the engine the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mini_vllm.attention import AttentionMetadata
from mini_vllm.engine import sample_request
from mini_vllm.request import SamplingParams

#: ``step(tokens) -> log-probs``: ``tokens`` is the prompt plus everything generated so far.
StepModel = Callable[[tuple[int, ...]], np.ndarray]


class Beam(NamedTuple):
    """One hypothesis: upstream's ``BeamSearchSequence`` reduced to what the search needs.

    ``tokens`` are the generated tokens only (the prompt is not repeated), ending with the EOS id
    when the hypothesis finished; ``cum_logprob`` is the sum of their log-probabilities under the
    step model. It unpacks like the course's ``(tokens, score)`` pair:
    ``tokens, score = greedy_decode(...)``.
    """

    tokens: tuple[int, ...]
    cum_logprob: float


def table_model(
    table: Mapping[tuple[int, ...], Mapping[int, float]],
    vocab_size: int,
    *,
    prompt: Sequence[int] = (),
    default: Mapping[int, float] | None = None,
) -> StepModel:
    """A step model written out by hand: ``table[generated] = {token: probability}``.

    Keys are the tokens generated after ``prompt`` (``()`` for the first step); a token that a
    row does not list has probability 0 (log-prob ``-inf``). A sequence that does not start with
    ``prompt``, or whose generated part has no row and no ``default``, raises ``LookupError``
    naming it: the search asked about a hypothesis the fixture never meant to be reached.
    """
    prompt = tuple(prompt)
    rows = {tuple(k): _log_row(v, vocab_size) for k, v in table.items()}
    fallback = None if default is None else _log_row(default, vocab_size)

    def step(tokens: tuple[int, ...]) -> np.ndarray:
        tokens = tuple(int(t) for t in tokens)
        if tokens[: len(prompt)] != prompt:
            raise LookupError(f"step model called with {tokens}, which does not start with the "
                              f"prompt {prompt}: pass prompt + generated tokens")
        row = rows.get(tokens[len(prompt):], fallback)
        if row is None:
            raise LookupError(f"step model called with generated tokens {tokens[len(prompt):]}, "
                              "a sequence this fixture never continues (was a finished or "
                              "pruned hypothesis extended?)")
        return row.copy()

    return step


def _log_row(probs: Mapping[int, float], vocab_size: int) -> np.ndarray:
    row = np.full(vocab_size, -np.inf)
    for token, p in probs.items():
        if p > 0:
            row[int(token)] = np.log(p)
    return row


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of a 1-D row of logits, in float64 (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


class DenseStepModel:
    """A mini_vllm real model (``forward`` + ``compute_logits``, e.g. the ``tiny_llama``
    fixture) as a step model: the log-softmax of the logits of the sequence's last token.

    Every call runs the network densely over the whole sequence from position 0 (no paging, no
    cache reuse between calls), so the answer depends on the tokens alone. Answers are memoised
    per sequence; ``forward_passes`` counts the sequences actually run.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.forward_passes = 0
        self._memo: dict[tuple[int, ...], np.ndarray] = {}

    def __call__(self, tokens: tuple[int, ...]) -> np.ndarray:
        tokens = tuple(int(t) for t in tokens)
        if not tokens:
            raise ValueError("a real model needs at least one token: give beam search a prompt")
        if tokens not in self._memo:
            self.forward_passes += 1
            self._memo[tokens] = log_softmax(self._last_logits(tokens))
        return self._memo[tokens].copy()

    def _last_logits(self, tokens: tuple[int, ...]) -> np.ndarray:
        model, n, block_size = self.model, len(tokens), 16
        num_blocks = -(-n // block_size)
        shape = (num_blocks + 1, block_size, model.num_kv_heads, model.head_dim)
        caches = [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
                  for _ in range(model.num_layers)]
        positions = np.arange(n, dtype=np.int64)
        meta = AttentionMetadata(  # block 0 stays the null block, as in the engine
            query_start_loc=np.array([0, n]), seq_lens=np.array([n]),
            block_table=np.arange(1, num_blocks + 1, dtype=np.int64)[None],
            slot_mapping=positions + block_size, block_size=block_size,
        )
        hidden = model.forward(np.array(tokens, dtype=np.int64), positions, caches, meta)
        return model.compute_logits(hidden[-1:])[0]


def restricted(step: StepModel, allowed: Iterable[int]) -> StepModel:
    """``step`` with every token outside ``allowed`` made impossible, the rest renormalised.

    The allowed tokens keep their relative probabilities; the finite entries add up to 1 again.
    """
    keep = np.array(sorted({int(t) for t in allowed}), dtype=np.int64)

    def step_restricted(tokens: tuple[int, ...]) -> np.ndarray:
        full = np.asarray(step(tokens), dtype=np.float64)
        out = np.full(full.shape, -np.inf)
        out[keep] = log_softmax(full[keep])
        return out

    return step_restricted


class EngineStepModel:
    """A ``mini_vllm.LLMEngine`` as a step model.

    Each call sends the sequence to the engine as one greedy request for a single token (what
    vLLM's beam search does with every live beam) and answers the log-softmax of the raw logits
    the engine computed for the sequence's last token. The engine serves it through its paged KV
    cache: with prefix caching on (the default), a sequence that extends an earlier one reuses
    that one's full blocks. ``requests`` counts the calls.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.requests = 0
        self._rows: dict[str, np.ndarray] = {}
        engine.sampler = _RecordingSampler(engine.sampler, self._rows)

    def __call__(self, tokens: tuple[int, ...]) -> np.ndarray:
        self.requests += 1
        params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        (out,) = self.engine.generate([[int(t) for t in tokens]], params)
        return self._rows.pop(out.request_id)


class _RecordingSampler:
    """Samples as the engine's sampler does; keeps each request's log-probs on the way."""

    def __init__(self, sampler: Any, rows: dict[str, np.ndarray]) -> None:
        self.sampler = sampler
        self.rows = rows

    def sample(self, logits: Any, params: Any, request: Any = None) -> int:
        if request is None:
            return int(self.sampler.sample(logits, params))
        self.rows[request.request_id] = log_softmax(logits)
        return sample_request(self.sampler, logits, request)
