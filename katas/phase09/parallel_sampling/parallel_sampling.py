"""Kata 09-02: predict what ``n > 1`` shares, then read it off real block tables.

One prompt sampled n times runs as n child requests. With prefix caching, the first child
prefills the prompt and caches its full blocks; every other child hits them at admission.
All counts are for one prompt of ``prompt_len`` tokens, blocks of ``block_size`` tokens.
Every function raises ``ValueError`` for an ``n``, ``prompt_len``, ``block_size`` or
``output_len`` that is not an int >= 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from katas.phase09.parallel_sampling.scaffold import Sharing


def shared_blocks(n: int, prompt_len: int, block_size: int, enable_caching: bool = True) -> int:
    """How many of the prompt's blocks all n children hold in common (each with ref count n).

    0 when nothing can be shared (one child, or caching off). Example: n=4, a 30-token
    prompt, blocks of 4 -> 7. ``enable_caching`` must be a bool (``ValueError`` otherwise).
    """
    raise NotImplementedError("shared_blocks: prompt blocks the n children share")


def prefill_tokens(n: int, prompt_len: int, block_size: int,
                   enable_caching: bool = True) -> int:
    """Prompt tokens the engine computes to prefill all n children (the course: ~P at n=4,
    against n x P with caching off)."""
    raise NotImplementedError("prefill_tokens: prompt tokens computed for n children")


def hit_rate(n: int, prompt_len: int, block_size: int, enable_caching: bool = True) -> float:
    """The prefix-cache hit rate over the n children's lookups of the prompt's full blocks:
    hit blocks / looked-up full blocks, in [0, 1]; 0.0 for a prompt with no full block.
    The course's capture: 75% at n=4."""
    raise NotImplementedError("hit_rate: share of the prompt's full-block lookups that hit")


def kv_tokens(n: int, prompt_len: int, output_len: int, block_size: int,
              enable_caching: bool = True) -> int:
    """KV slots written once every child has produced ``output_len`` tokens (a sampled token
    gets its KV only when it is fed back, so the last one never does); shared slots count once."""
    raise NotImplementedError("kv_tokens: KV slots the n children write together")


def block_ref_counts(n: int, prompt_len: int, block_size: int,
                     enable_caching: bool = True) -> list[int]:
    """The ref count of every distinct block holding the prompt's KV right after all n children
    are admitted: the shared blocks first (in table order), then every private one."""
    raise NotImplementedError("block_ref_counts: ref count of each block the prompt occupies")


def read_sharing(block_tables: Sequence[Sequence[Any]]) -> Sharing:
    """Read n children's block tables (block ids, or objects with a ``block_id``) into a
    :class:`Sharing`: the leading blocks every table holds are shared (none for a single
    table), the rest private. ``ValueError`` for no tables."""
    raise NotImplementedError("read_sharing: which blocks the children share")
