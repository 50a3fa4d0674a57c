"""Reference for kata 03-02 — how many steps a prompt's prefill takes, and in which chunks."""

from __future__ import annotations


def _chunk(threshold: int, budget: int) -> int:
    # Threshold 0 means "no per-request cap"; a threshold above the budget is moot.
    return min(threshold if threshold > 0 else budget, budget)


def _check(prompt_len: int, threshold: int, budget: int) -> None:
    if prompt_len < 0:
        raise ValueError(f"prompt_len must be >= 0, got {prompt_len}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0 disables it), got {threshold}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")


def prefill_chunk_sizes(prompt_len: int, threshold: int, budget: int) -> list[int]:
    """Tokens computed in each prefill step of a lone request: full chunks, then the remainder."""
    _check(prompt_len, threshold, budget)
    chunk = _chunk(threshold, budget)
    full, rest = divmod(prompt_len, chunk)
    return [chunk] * full + ([rest] if rest else [])


def num_prefill_steps(prompt_len: int, threshold: int, budget: int) -> int:
    """Steps a lone request needs to prefill its prompt: ceil(prompt_len / chunk)."""
    _check(prompt_len, threshold, budget)
    return -(-prompt_len // _chunk(threshold, budget))
