"""vllm-katas: graded exercises on vLLM's internals.

The public helpers for kata tests are re-exported here; the pytest plugin itself lives in
:mod:`pytest_vllm_katas.plugin`. Importing this package never imports torch, triton or vllm,
and the helpers that need numpy are imported on first use (PEP 562), so that every pytest run
(the plugin is this package's module) does not pay for numpy before a test needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .catalog import Kata, KataError, discover, find_root
from .expect import expect_raises

_LAZY = {
    "assert_same_outputs": "invariants",
    "check_block_pool": "invariants",
    "check_block_tables": "invariants",
    "check_kv_covers_schedule": "invariants",
    "check_scheduler_step": "invariants",
    "first_step_difference": "invariants",
    "TOLERANCES": "tolerance",
    "assert_close": "tolerance",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from .invariants import (
        assert_same_outputs,
        check_block_pool,
        check_block_tables,
        check_kv_covers_schedule,
        check_scheduler_step,
        first_step_difference,
    )
    from .tolerance import TOLERANCES, assert_close


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "first_step_difference",
    "find_root",
]
