"""Request, its status and its sampling parameters: the live state the scheduler moves around.

Upstream twins: ``vllm/v1/request.py: Request, RequestStatus`` and
``vllm/sampling_params.py: SamplingParams``.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass
class SamplingParams:
    """Validated at construction, so a bad request fails in ``add_request``, not mid-step.

    Defaults follow upstream (temperature 1.0, no seed), which is *not* reproducible: pass
    ``temperature=0.0`` (greedy) or a ``seed`` when a test compares outputs.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1.0 disables
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or int(self.max_tokens) != self.max_tokens:
            raise ValueError(f"max_tokens must be an integer, got {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.temperature >= 0.0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] (1 disables it), got {self.top_p}")


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
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams | None = None,
        request_id: str | None = None,
        eos_token_id: int = EOS_TOKEN_ID,
    ) -> None:
        prompt = [int(t) for t in prompt_token_ids]
        if not prompt:
            raise ValueError("prompt must contain at least one token")
        bad = [t for t in prompt if not 0 <= t < VOCAB_SIZE]
        if bad:
            raise ValueError(f"prompt token ids must lie in [0, {VOCAB_SIZE}), got {bad[:5]}")
        self.request_id: str = request_id if request_id is not None else next_request_id()
        self.prompt_token_ids: list[int] = prompt
        self.output_token_ids: list[int] = []
        self.sampling_params: SamplingParams = sampling_params or SamplingParams()
        self.eos_token_id: int = eos_token_id
        self.status: RequestStatus = RequestStatus.WAITING
        self.num_computed_tokens: int = 0
        self.num_preemptions: int = 0

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
