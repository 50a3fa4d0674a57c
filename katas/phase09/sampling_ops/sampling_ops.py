"""Kata 09-01 — the sampling ops, a logits-processor pipeline, and an ordered sampler.

Fill in every body that raises ``NotImplementedError``. Every function takes one logits row (a
1-D float array, one entry per token) and returns a NEW float64 array: the caller's row, the
caller's ``generated`` list and the ``ctx`` dict are never modified. "Masked" means ``-inf``,
never a probability of 0 set by hand.

``params`` (for ``sampling_probs`` and ``sample``) is anything with the attributes
``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty`` and ``seed``, such as
``mini_vllm.SamplingParams``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: A logits processor: ``(logits, ctx) -> logits``; ``ctx`` is ``{"generated": [token ids]}``.
Processor = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (non-negative, summing to 1) from logits.

    A ``-inf`` logit gets probability exactly 0; logits in the thousands must not overflow.
    """
    raise NotImplementedError("softmax: a stable softmax over one row")


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The row scaled by temperature: ``T < 1`` sharpens, ``T > 1`` flattens, ``T = 1`` no-op.

    ``[2, -1, 0.5]`` at ``T = 2`` becomes ``[1, -0.5, 0.25]``. Raises ``ValueError`` naming
    ``temperature`` when it is not > 0 (greedy is handled by ``sample``, not here).
    """
    raise NotImplementedError("apply_temperature: scale the logits by the temperature")


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Mask every token below the k-th largest logit.

    Ties with the k-th largest value survive (``k = 2`` over ``[3, 2, 2, 0]`` keeps three
    tokens), as in vLLM. ``k <= 0`` or ``k >= len(logits)`` disables it (an unchanged copy).
    """
    raise NotImplementedError("apply_top_k: keep the k largest logits")


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the nucleus: the fewest most-probable tokens whose total probability reaches ``p``.

    The token whose probability makes the running total reach ``p`` is kept: ``p = 0.5`` over
    probabilities ``[0.4, 0.4, 0.2]`` keeps two tokens. Equal probabilities are taken in index
    order. Never masks every token. ``p >= 1`` disables it.
    """
    raise NotImplementedError("apply_top_p: keep the nucleus of mass p")


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep the tokens whose probability is at least ``min_p`` times the largest probability.

    The cutoff is relative to this row's own most likely token: with ``min_p = 0.5`` and
    probabilities ``[0.5, 0.3, 0.15, 0.05]`` the threshold is 0.25 and two tokens stay. The
    most likely token always stays. ``min_p <= 0`` disables it.
    """
    raise NotImplementedError("apply_min_p: drop tokens far less likely than the best one")


def apply_repetition_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Make every token in ``generated_token_ids`` less likely (CTRL's multiplicative penalty).

    A penalty > 1 pushes each such logit down whatever its sign: ``[2, -1]`` with both tokens
    generated and ``penalty = 2`` becomes ``[1, -2]``. Each distinct token is penalised once,
    however often it occurs. Other tokens are untouched; ``penalty = 1`` changes nothing.
    """
    raise NotImplementedError("apply_repetition_penalty: push repeated tokens down")


def apply_presence_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Subtract ``penalty`` from the logit of every token that occurs in ``generated_token_ids``,
    the same amount however many times it occurs. Other tokens are untouched."""
    raise NotImplementedError("apply_presence_penalty: a flat additive penalty per token seen")


def apply_frequency_penalty(
    logits: np.ndarray, generated_token_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """Subtract ``penalty`` from a token's logit once per occurrence in ``generated_token_ids``
    (a token generated twice loses ``2 * penalty``). Other tokens are untouched."""
    raise NotImplementedError("apply_frequency_penalty: an additive penalty per occurrence")


class Pipeline:
    """An ordered list of logits processors, applied first to last.

    Calling it with ``(logits, ctx)`` gives the first processor the row and ``ctx``, each later
    processor the previous one's output and the same ``ctx``, and returns the last output (a
    copy of the row for an empty pipeline). The caller's row is not modified.
    """

    def __init__(self, processors: Sequence[Processor] = ()) -> None:
        raise NotImplementedError("Pipeline.__init__: remember the processors, in order")

    def __call__(self, logits: np.ndarray, ctx: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError("Pipeline.__call__: run the processors in order")


class MinTokensProcessor:
    """A processor that keeps a request from stopping too early.

    While ``len(ctx["generated"]) < min_tokens``, ``eos_token_id`` is masked; from then on the
    row comes back unchanged (as a copy). No other token is ever touched.
    """

    def __init__(self, min_tokens: int, eos_token_id: int) -> None:
        raise NotImplementedError("MinTokensProcessor.__init__: remember the two settings")

    def __call__(self, logits: np.ndarray, ctx: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError("MinTokensProcessor.__call__: mask EOS until min_tokens")


def sampling_probs(
    logits: np.ndarray,
    params: Any,
    generated: Sequence[int] = (),
    processors: Sequence[Processor] = (),
) -> np.ndarray:
    """The probability vector ``sample`` draws from, stages in the course's order.

    Custom processors (called with ``ctx = {"generated": [...]}``, in list order) -> repetition
    penalty over ``generated`` -> temperature -> top-k -> top-p -> min-p -> softmax. Each
    truncation works on the distribution the stages before it left.

    Greedy (``params.temperature == 0``): the processors and the penalty still apply, then the
    result is one-hot on the argmax (lowest index on ties); top-k, top-p, min-p are ignored.

    The result sums to 1, and a token any stage masked has probability exactly 0.
    """
    raise NotImplementedError("sampling_probs: the ordered pipeline down to probabilities")


def sample(
    logits: np.ndarray,
    params: Any,
    generated: Sequence[int] = (),
    processors: Sequence[Processor] = (),
) -> int:
    """One token id (a Python ``int``) from ``sampling_probs``' distribution.

    Greedy returns the argmax and uses no randomness. Otherwise exactly one draw from a fresh
    ``np.random.default_rng(params.seed)``: ``choice(vocab_size, p=probs)``, the same call
    mini_vllm's ``Sampler`` makes, so a seed picks the same token in both.
    """
    raise NotImplementedError("sample: draw one token id")
