"""Provided for kata 11-02: what a job is, what a verdict says, and a stand-in ``LoRARequest``.

Nothing here imports vLLM: the kata's core tests run without it, on the stand-in and a fake
engine; the live tests hand your code vLLM's own ``LoRARequest`` and ``LLM``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: ``Verdict.served_as`` when a request's tokens equal no solo run of its prompt.
UNMATCHED = "<unmatched>"


@dataclass(frozen=True)
class Job:
    """One request of the batch: a prompt and the adapter it asks for (None = the base model)."""

    prompt: str
    adapter: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What one batched request produced, and whose behaviour that was.

    ``index``: the job's position in the batch; ``requested``: the adapter it asked for (None
    = base); ``served_as``: the tag (an adapter name, None for base, or ``UNMATCHED``) whose solo
    run of the same prompt produced exactly these tokens; ``tokens``: what the batch gave it.
    """

    index: int
    prompt: str
    requested: str | None
    served_as: str | None
    tokens: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.served_as == self.requested


@dataclass(eq=False)
class StandInLoRARequest:
    """Shaped like ``vllm.lora.request.LoRARequest`` (v0.22.1 and later): built as
    ``StandInLoRARequest(lora_name, lora_int_id, lora_path)``; refuses an id below 1 with
    vLLM's own ``ValueError`` (id 0 is the base model upstream); equal by name, like vLLM's."""

    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        if not self.lora_path:
            raise ValueError("lora_path cannot be empty")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StandInLoRARequest) and other.lora_name == self.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)


def vllm_lora_request_class() -> Any:
    """vLLM's ``LoRARequest`` class (imports vLLM: seconds)."""
    from vllm.lora.request import LoRARequest

    return LoRARequest
