"""Request, its status and its sampling parameters: the live state the scheduler moves around.

Upstream twins: ``vllm/v1/request.py: Request, RequestStatus`` and
``vllm/sampling_params.py: SamplingParams``.
"""

from __future__ import annotations

import enum
import itertools
import math
import numbers
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mini_vllm.tokenizer import EOS_TOKEN_ID, VOCAB_SIZE


class RequestStatus(enum.IntEnum):
    """Declaration order is load-bearing: everything after PREEMPTED is a finished state.

    So ``is_finished`` is one comparison (upstream writes ``status > PREEMPTED``).
    Departure from the course: ``FINISHED_ABORTED`` exists (declared last, so no comparison
    changes) because ``LLMEngine.abort_request`` needs a terminal state that is neither
    "stop" nor "length".
    """

    WAITING = enum.auto()
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH = enum.auto()
    FINISHED_ABORTED = enum.auto()

    @staticmethod
    def is_finished(status: RequestStatus) -> bool:
        return status >= RequestStatus.FINISHED_STOPPED


# -- validation ------------------------------------------------------------------------------
# Every message has one shape, "<field> must be <what is allowed>, got <bad value>", so a refused
# request says exactly which knob to fix.

# Positive temperatures below float64's smallest normal number make ``logits / temperature``
# overflow to inf, and softmax turns inf into NaN: the sampler would crash mid-step, taking every
# in-flight request with it. Nothing above it changes: those values behave as before.
_MIN_POSITIVE_TEMPERATURE = sys.float_info.min


def _is_int(value: object) -> bool:
    """A Python or numpy integer. Never a bool (``True`` is an int to Python, not a count), and
    never a float, even ``3.0``: accepting floats means ``int()`` would silently truncate ``3.7``.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite_float(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (numpy scalars included, bool not)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        as_float = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return as_float if math.isfinite(as_float) else None


def _refuse(field: str, allowed: str, value: object) -> ValueError:
    return ValueError(f"{field} must be {allowed}, got {value!r}")


@dataclass
class SamplingParams:
    """Validated by :meth:`verify`, so a bad request fails in ``add_request``, not mid-step.

    Accepted values are normalised to plain ``int`` / ``float`` / ``bool`` (numpy scalars and
    ``temperature=0`` included), which changes no sampled token.

    Defaults follow upstream (temperature 1.0, no seed), which is *not* reproducible: pass
    ``temperature=0.0`` (greedy) or a ``seed`` when a test compares outputs.

    ``max_tokens=None`` is refused: upstream reads it as "up to the model's context length", and
    mini_vllm has no context length to fall back on (only the KV pool, which is checked per
    request by ``LLMEngine.add_request``).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1.0 disables
    seed: int | None = None
    ignore_eos: bool = False
    #: Samples per prompt (parallel sampling): ``LLMEngine`` fans a request with ``n > 1`` out
    #: into n child requests (``mini_vllm/parallel_sampling.py``). A ``Request`` itself ignores it.
    n: int = 1
    # Phase 09 logits processing (``mini_vllm/sample/``); every default is "off".
    min_p: float = 0.0  # keep prob >= min_p * max prob; 0 disables
    repetition_penalty: float = 1.0  # prompt + output tokens; 1 disables
    presence_penalty: float = 0.0  # output tokens, flat; 0 disables
    frequency_penalty: float = 0.0  # output tokens, times their count; 0 disables
    bad_words: list[list[int]] | None = None  # token-id sequences whose last token is banned
    min_tokens: int = 0  # EOS masked while fewer tokens were generated
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit

    def __post_init__(self) -> None:
        self.verify()

    def verify(self) -> None:
        """Raise ``ValueError`` for the first bad field; normalise the accepted ones in place.

        Upstream's ``_verify_args``. It runs at construction and again when a request is created
        (``check_sampling_params``): the dataclass is mutable, and a field set to a bad value
        after construction would otherwise reach the sampler.
        """
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise _refuse("max_tokens", "an int >= 1", self.max_tokens)
        self.max_tokens = int(self.max_tokens)

        temperature = _finite_float(self.temperature)
        if temperature is None or not (
            temperature == 0.0 or temperature >= _MIN_POSITIVE_TEMPERATURE
        ):
            raise _refuse(
                "temperature",
                f"0 (greedy) or a finite number >= {_MIN_POSITIVE_TEMPERATURE!r}",
                self.temperature,
            )
        self.temperature = temperature

        # No upper bound: k >= vocab size simply disables top-k, as upstream.
        if not _is_int(self.top_k) or self.top_k < 0:
            raise _refuse("top_k", "an int >= 0 (0 disables it)", self.top_k)
        self.top_k = int(self.top_k)

        top_p = _finite_float(self.top_p)
        if top_p is None or not 0.0 < top_p <= 1.0:
            raise _refuse("top_p", "a number in (0, 1] (1 disables it)", self.top_p)
        self.top_p = top_p

        # numpy's default_rng, which the sampler seeds per call, refuses negative seeds.
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise _refuse("seed", "a non-negative int or None", self.seed)
        self.seed = None if self.seed is None else int(self.seed)

        if not isinstance(self.ignore_eos, (bool, np.bool_)):
            raise _refuse("ignore_eos", "a bool", self.ignore_eos)
        self.ignore_eos = bool(self.ignore_eos)

        if not _is_int(self.n) or self.n < 1:
            raise _refuse("n", "an int >= 1", self.n)
        self.n = int(self.n)

        self._verify_logits_processing()

    def logits_processing_knobs(self) -> list[str]:
        """The phase 09 knobs this request turns on (their names), ``[]`` when all are off."""
        off = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
               "frequency_penalty": 0.0, "bad_words": None, "min_tokens": 0, "logit_bias": None}
        return [name for name, value in off.items() if getattr(self, name) not in (value, [], {})]

    def _verify_logits_processing(self) -> None:
        """The phase 09 knobs, with upstream's bounds (``SamplingParams._verify_args``)."""
        min_p = _finite_float(self.min_p)
        if min_p is None or not 0.0 <= min_p <= 1.0:
            raise _refuse("min_p", "a number in [0, 1] (0 disables it)", self.min_p)
        self.min_p = min_p

        repetition = _finite_float(self.repetition_penalty)
        if repetition is None or repetition <= 0.0:
            raise _refuse(
                "repetition_penalty", "a finite number > 0 (1 disables it)",
                self.repetition_penalty,
            )
        self.repetition_penalty = repetition

        for name in ("presence_penalty", "frequency_penalty"):
            value = _finite_float(getattr(self, name))
            if value is None or not -2.0 <= value <= 2.0:
                raise _refuse(name, "a number in [-2, 2] (0 disables it)", getattr(self, name))
            setattr(self, name, value)

        if self.bad_words is not None:
            words = self.bad_words
            if isinstance(words, (str, bytes)) or not isinstance(words, Iterable):
                raise _refuse("bad_words", "None or a list of token-id sequences", words)
            normalised = []
            for index, word in enumerate(words):
                if isinstance(word, (str, bytes)) or not isinstance(word, Iterable):
                    raise _refuse(f"bad_words[{index}]", "a non-empty sequence of token ids", word)
                word = list(word)
                if not word or not all(_is_int(t) and t >= 0 for t in word):
                    raise _refuse(f"bad_words[{index}]", "a non-empty sequence of token ids", word)
                normalised.append([int(t) for t in word])
            self.bad_words = normalised

        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise _refuse(
                "min_tokens", f"an int in [0, max_tokens={self.max_tokens}]", self.min_tokens
            )
        self.min_tokens = int(self.min_tokens)

        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise _refuse("logit_bias", "None or a dict token id -> bias", self.logit_bias)
            bias: dict[int, float] = {}
            for token, value in self.logit_bias.items():
                as_float = _finite_float(value)
                if not _is_int(token) or token < 0 or as_float is None:
                    raise _refuse(
                        f"logit_bias[{token!r}]", "a finite bias for an int token id >= 0", value
                    )
                bias[int(token)] = min(100.0, max(-100.0, as_float))  # upstream clamps
            self.logit_bias = bias

    def check_vocab(self, vocab_size: int) -> None:
        """``ValueError`` if a bad word or a logit-bias key names a token outside the vocab."""
        for index, word in enumerate(self.bad_words or []):
            for token in word:
                if token >= vocab_size:
                    raise _refuse(f"bad_words[{index}]", f"token ids in [0, {vocab_size})", word)
        for token in self.logit_bias or {}:
            if token >= vocab_size:
                raise _refuse("logit_bias key", f"a token id in [0, {vocab_size})", token)


def check_prompt_token_ids(
    token_ids: object,
    field: str = "prompt_token_ids",
    forms: str = "a non-empty sequence of int token ids",
    vocab_size: int = VOCAB_SIZE,
) -> list[int]:
    """The prompt as a fresh list of plain ints, each in ``[0, vocab_size)``; ``ValueError`` else.

    Shared by ``Request`` and ``LLMEngine`` (which vets a whole ``generate`` batch before queuing
    any of it, and also accepts text). ``field`` and ``forms`` are the caller's argument name and
    what it accepts, so the message speaks the caller's API. ``vocab_size`` is the model's (the
    byte tokenizer's 257 by default).
    """
    allowed = f"{forms} in [0, {vocab_size})"
    # A str is iterable, but its items are characters: the engine encodes text, a Request doesn't.
    if isinstance(token_ids, str) or not isinstance(token_ids, Iterable):
        raise _refuse(field, allowed, token_ids)
    prompt = list(token_ids)  # once: the input may be a one-shot iterator
    if not prompt:
        raise _refuse(field, allowed, prompt)
    for index, token in enumerate(prompt):
        if not _is_int(token) or not 0 <= token < vocab_size:
            raise _refuse(f"{field}[{index}]", f"an int token id in [0, {vocab_size})", token)
    return [int(t) for t in prompt]  # numpy ints become plain ints: one token type downstream


def check_sampling_params(params: object) -> SamplingParams:
    """``params`` itself (re-verified), or the defaults for ``None``; else ``ValueError``."""
    if params is None:
        return SamplingParams()
    if not isinstance(params, SamplingParams):
        raise _refuse("sampling_params", "a SamplingParams or None", params)
    params.verify()
    return params


# Process-global on purpose (as upstream): ids never repeat across engines, so tests must use the
# ids an engine hands back instead of assuming "req-0".
_request_counter = itertools.count()


def next_request_id() -> str:
    return f"req-{next(_request_counter)}"


class Request:
    """One prompt's journey. The scheduler only ever reasons about two numbers of it:
    ``num_tokens`` (prompt + generated) and ``num_computed_tokens`` (how many have KV).
    """

    def __init__(
        self,
        prompt_token_ids: Iterable[int],
        sampling_params: SamplingParams | None = None,
        request_id: str | None = None,
        eos_token_id: int = EOS_TOKEN_ID,
        vocab_size: int = VOCAB_SIZE,
        lora_request: object | None = None,
        structured_output: object | None = None,
    ) -> None:
        # Everything is checked before an id is drawn, so a refused request leaves no trace.
        prompt = check_prompt_token_ids(prompt_token_ids, vocab_size=vocab_size)
        params = check_sampling_params(sampling_params)
        params.check_vocab(vocab_size)
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise _refuse("request_id", "a non-empty str or None", request_id)
        if not _is_int(eos_token_id) or not 0 <= eos_token_id < vocab_size:
            raise _refuse("eos_token_id", f"an int token id in [0, {vocab_size})", eos_token_id)
        self.request_id: str = request_id if request_id is not None else next_request_id()
        self.prompt_token_ids: list[int] = prompt
        self.output_token_ids: list[int] = []
        self.sampling_params: SamplingParams = params
        self.eos_token_id: int = int(eos_token_id)
        self.status: RequestStatus = RequestStatus.WAITING
        self.num_computed_tokens: int = 0
        self.num_preemptions: int = 0
        #: Draft tokens proposed for the next verify step (speculative decoding only; upstream's
        #: ``spec_token_ids``). Never part of ``num_tokens`` or ``all_token_ids``: they are
        #: guesses, and the KV manager hashes only verified tokens. Empty otherwise.
        self.spec_token_ids: list[int] = []
        #: The adapter this request runs with (a ``mini_vllm.lora.LoRARequest``; upstream's
        #: ``Request.lora_request``), ``None`` for the base model. The engine vets it.
        self.lora_request = lora_request
        #: This request's grammar state (a ``mini_vllm.structured_output.GrammarMatcher``;
        #: upstream's ``Request.structured_output_request``), ``None`` when unconstrained. The
        #: engine vets it, masks this request's logits with it and advances it.
        self.structured_output = structured_output

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_tokens_with_spec(self) -> int:
        """``num_tokens`` plus the pending drafts: what the scheduler schedules up to."""
        return len(self.prompt_token_ids) + len(self.output_token_ids) + len(self.spec_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def is_finished(self) -> bool:
        return RequestStatus.is_finished(self.status)

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(int(token_id))

    def maybe_finish(self) -> bool:
        """Set a finished status if the last appended token ends the request.

        EOS is checked before length, so an EOS landing exactly on the max_tokens-th token reports
        "stop". The EOS itself stays in ``output_token_ids`` and counts toward the length.
        """
        params = self.sampling_params
        if (
            not params.ignore_eos
            and self.output_token_ids
            and self.output_token_ids[-1] == self.eos_token_id
        ):
            self.status = RequestStatus.FINISHED_STOPPED
        elif self.num_output_tokens >= params.max_tokens:
            self.status = RequestStatus.FINISHED_LENGTH
        return self.is_finished

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.name}, "
            f"num_tokens={self.num_tokens}, num_computed_tokens={self.num_computed_tokens})"
        )
