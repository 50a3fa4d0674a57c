"""Reference for kata 09-02: what ``n > 1`` shares, predicted from block arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from katas.phase09.parallel_sampling.scaffold import Sharing


def _check(n: int, prompt_len: int, block_size: int) -> None:
    for name, value in (("n", n), ("prompt_len", prompt_len), ("block_size", block_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def shared_blocks(n: int, prompt_len: int, block_size: int, enable_caching: bool = True) -> int:
    if enable_caching is not True and enable_caching is not False:
        raise ValueError(f"enable_caching must be a bool, got {enable_caching!r}")
    _check(n, prompt_len, block_size)
    if n == 1 or not enable_caching:
        return 0
    # A sibling looks up at most num_tokens - 1 tokens: its last prompt token must be computed.
    return (prompt_len - 1) // block_size


def prefill_tokens(n: int, prompt_len: int, block_size: int,
                   enable_caching: bool = True) -> int:
    hit = shared_blocks(n, prompt_len, block_size, enable_caching) * block_size
    return prompt_len + (n - 1) * (prompt_len - hit)


def hit_rate(n: int, prompt_len: int, block_size: int, enable_caching: bool = True) -> float:
    full = prompt_len // block_size
    shared = shared_blocks(n, prompt_len, block_size, enable_caching)
    if full == 0:
        return 0.0
    return (n - 1) * shared / (n * full)


def kv_tokens(n: int, prompt_len: int, output_len: int, block_size: int,
              enable_caching: bool = True) -> int:
    if not isinstance(output_len, int) or isinstance(output_len, bool) or output_len < 1:
        raise ValueError(f"output_len must be an int >= 1, got {output_len!r}")
    hit = shared_blocks(n, prompt_len, block_size, enable_caching) * block_size
    # The shared prefix once; each child its private rest of the prompt and its samples but the
    # last (a sampled token gets its KV only when it is fed back).
    return hit + n * (prompt_len - hit + output_len - 1)


def block_ref_counts(n: int, prompt_len: int, block_size: int,
                     enable_caching: bool = True) -> list[int]:
    shared = shared_blocks(n, prompt_len, block_size, enable_caching)
    from_one_child = -(-prompt_len // block_size)
    return [n] * shared + [1] * (n * (from_one_child - shared))


def read_sharing(block_tables: Sequence[Sequence[Any]]) -> Sharing:
    if not block_tables:
        raise ValueError("block_tables must hold one table per child, got none")
    ids = [[int(getattr(b, "block_id", b)) for b in table] for table in block_tables]
    num_shared = 0
    for column in zip(*ids, strict=False):
        if len(set(column)) != 1:
            break
        num_shared += 1
    if len(ids) == 1:
        num_shared = 0
    private = [table[num_shared:] for table in ids]
    flat = [b for table in private for b in table]
    return Sharing(
        shared_block_ids=ids[0][:num_shared],
        private_block_ids=[list(t) for t in private],
        num_distinct_blocks=num_shared + len(set(flat)),
    )
