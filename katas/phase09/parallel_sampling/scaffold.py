"""Provided for kata 09-02: the shape of what ``read_sharing`` reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sharing:
    """How n children's block tables overlap.

    ``shared_block_ids``: the leading block ids every table holds (in table order);
    ``private_block_ids``: each table's remaining ids, one list per child;
    ``num_distinct_blocks``: how many different blocks the children hold together.
    """

    shared_block_ids: list[int]
    private_block_ids: list[list[int]]
    num_distinct_blocks: int
