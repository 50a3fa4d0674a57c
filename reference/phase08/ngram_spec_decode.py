"""Reference for kata 08-01: n-gram drafts, greedy verification, the speculative loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Target = Callable[[Sequence[int]], int]


def ngram_propose(context: Sequence[int], n: int, k: int) -> list[int]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    tokens = list(context)
    if k == 0 or len(tokens) <= n:
        return []
    suffix = tokens[-n:]
    # Latest first; the suffix itself starts at len - n and is not an earlier occurrence.
    for start in range(len(tokens) - n - 1, -1, -1):
        if tokens[start:start + n] == suffix:
            return tokens[start + n:start + n + k]
    return []


def verify_greedy(context: Sequence[int], proposed: Sequence[int],
                  target: Target) -> tuple[list[int], int]:
    accepted: list[int] = []
    for token in proposed:
        choice = target(list(context) + accepted)
        if choice != token:
            return accepted + [choice], len(accepted)
        accepted.append(choice)
    bonus = target(list(context) + accepted)
    return accepted + [bonus], len(accepted)


def run_speculative(context: Sequence[int], target: Target, n: int, k: int,
                    num_tokens: int) -> tuple[list[int], dict[str, int]]:
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    sequence = list(context)
    out: list[int] = []
    stats = {"proposed": 0, "accepted": 0, "runs": 0}
    while len(out) < num_tokens:
        budget = min(k, num_tokens - len(out) - 1)  # a run emits one more than it accepts
        proposed = ngram_propose(sequence, n, budget)
        emitted, num_accepted = verify_greedy(sequence, proposed, target)
        stats["proposed"] += len(proposed)
        stats["accepted"] += num_accepted
        stats["runs"] += 1
        sequence += emitted
        out += emitted
    return out, stats


def run_baseline(context: Sequence[int], target: Target, num_tokens: int) -> list[int]:
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    sequence = list(context)
    out: list[int] = []
    for _ in range(num_tokens):
        token = target(sequence)
        sequence.append(token)
        out.append(token)
    return out
