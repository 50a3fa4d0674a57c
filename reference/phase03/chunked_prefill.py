"""Reference for kata 03-02 — how prefills are cut into chunks, alone and in company."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence


def _check_knobs(threshold: int, budget: int) -> None:
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0 disables it), got {threshold}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")


def num_prefill_steps(prompt_len: int, threshold: int, budget: int) -> int:
    """Steps a lone request needs to prefill its prompt: ceil(prompt_len / chunk)."""
    if prompt_len < 0:
        raise ValueError(f"prompt_len must be >= 0, got {prompt_len}")
    _check_knobs(threshold, budget)
    # Threshold 0 means "no per-request cap"; a threshold above the budget is moot.
    chunk = min(threshold if threshold > 0 else budget, budget)
    return -(-prompt_len // chunk)


def chunk_schedule(
    prompts: Mapping[str, int],
    *,
    budget: int,
    threshold: int = 0,
    decoding: Sequence[str] = (),
) -> list[dict[str, int]]:
    """Each step's ``{request: tokens}``, in row order, until every prompt is prefilled."""
    _check_knobs(threshold, budget)
    names = [*decoding, *prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"request names must be unique, got {names}")
    short = {name: n for name, n in prompts.items() if n < 1}
    if short:
        raise ValueError(f"every prompt needs at least 1 token, got {short}")
    if prompts and len(names) > budget:
        # Nobody here ever finishes decoding, so each request can hold 1 token of every step:
        # with more requests than the budget, the last prompt could wait forever.
        raise ValueError(
            f"{len(names)} requests cannot share a budget of {budget} tokens: each decoding "
            "request takes 1 token every step, so some prefill could starve"
        )

    def clamp(gap: int, left: int) -> int:
        if 0 < threshold < gap:
            gap = threshold
        return max(min(gap, left), 0)

    # Running requests in admission order -> prompt tokens still to prefill (0: decoding).
    running: dict[str, int] = dict.fromkeys(decoding, 0)
    waiting = deque(prompts.items())
    unfinished = len(prompts)
    steps: list[dict[str, int]] = []
    while unfinished:
        step: dict[str, int] = {}
        left = budget
        for name, rest in running.items():  # running first: a decode's gap is 1
            n = clamp(rest or 1, left)
            if n:
                step[name] = n
                left -= n
        while waiting and left > 0:  # then admissions, first come first served
            name, prompt_len = waiting.popleft()
            running[name] = prompt_len
            step[name] = clamp(prompt_len, left)
            left -= step[name]
        for name, n in step.items():
            if running[name]:
                running[name] -= n
                if running[name] == 0:  # prefill complete: it samples, then decodes
                    unfinished -= 1
        steps.append(step)
    return steps
