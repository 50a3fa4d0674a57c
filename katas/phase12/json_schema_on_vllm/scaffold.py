"""Provided for kata 12-02: the prompts, the jobs, and what a finished request looks like."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

#: The course's five fictional jobs; the profile schema's ``job`` is one of them.
JOBS: tuple[str, ...] = ("pirate", "astronaut", "barista", "wizard", "plumber")

#: Every verdict ``verdict`` may return, in the order ``tally`` lists them.
VERDICTS: tuple[str, ...] = ("valid", "truncated", "not_json", "schema_violation")


class Completion(NamedTuple):
    """One finished request: the generated text and why generation stopped (``"stop"`` or
    ``"length"``, as vLLM's ``CompletionOutput.finish_reason`` says)."""

    text: str
    finish_reason: str | None


def profile_prompt(job: str) -> str:
    """The user message for one request; both arms (constrained and not) get the same one."""
    return (f"Generate a profile for a fictional {job}. Respond ONLY with JSON with the keys "
            f"name, age, job and skills.")


def profile_prompts(n: int) -> list[str]:
    """``n`` prompts cycling through :data:`JOBS` (20 prompts: each job four times)."""
    return [profile_prompt(JOBS[i % len(JOBS)]) for i in range(n)]


def completions(request_outputs: Iterable[Any]) -> list[Completion]:
    """vLLM's ``RequestOutput`` list (one sample each) as :class:`Completion` tuples."""
    return [Completion(o.outputs[0].text, o.outputs[0].finish_reason) for o in request_outputs]
