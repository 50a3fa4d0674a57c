"""vllm-katas: graded exercises on vLLM's internals.

The public helpers for kata tests are re-exported here; the pytest plugin itself lives in
:mod:`pytest_vllm_katas.plugin`. Importing this package never imports torch, triton or vllm.
"""

from __future__ import annotations

from .catalog import Kata, KataError, discover, find_root
from .expect import expect_raises
from .invariants import (
    assert_same_outputs,
    check_block_pool,
    check_block_tables,
    check_kv_covers_schedule,
    check_scheduler_step,
)
from .tolerance import TOLERANCES, assert_close

__all__ = [
    "TOLERANCES",
    "Kata",
    "KataError",
    "assert_close",
    "assert_same_outputs",
    "check_block_pool",
    "check_block_tables",
    "check_kv_covers_schedule",
    "check_scheduler_step",
    "discover",
    "expect_raises",
    "find_root",
]
