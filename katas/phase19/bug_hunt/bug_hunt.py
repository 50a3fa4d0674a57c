"""Kata 19-01 — bug hunt: reproduce, fix and scope seven bugs planted in copies of mini_vllm.

Each bug has an issue-style report in ``bugs/<NN>_<name>/REPORT.md`` (the symptom, never the
cause) and a buggy copy of mini_vllm to read and run:
``python -m katas.phase19.bug_hunt.scaffold path <NN>_<name>`` prints where it is. For each bug
write three functions:

* ``regression_<name>(vllm)``: a regression test. ``vllm`` is an engine package with
  mini_vllm's API (``vllm.LLMEngine``, ``vllm.SamplingParams``, ``vllm.block_pool``, ...): the
  buggy copy or a fixed one. Return normally when the engine behaves; raise (``assert``) when it
  shows the reported bug. Bound every loop you drive (``scaffold.run_until_idle``): a test that
  hangs on the bug is not a test. Graded on the buggy copy (must fail) and on the fixed copy
  (must pass).
* ``fix_<name>()``: the fix, as a list of ``Edit(file, old, new)`` applied to the buggy copy in
  order; ``file`` is relative to the package (``"kv_cache.py"``) and ``old`` must occur exactly
  once in it. Graded by the grader's own regression test and by a battery of engine workloads
  that must behave exactly as pristine mini_vllm
  (``python -m katas.phase19.bug_hunt.scaffold suite`` runs mini_vllm's whole suite on your
  fixed copies, when you want the full proof).
* ``scope_<name>()``: the one-page scope plan, as text (return a string, or read a SCOPE.md you
  keep next to this file). Its fields, each a label and a colon: ``Issue``, ``Reproduced at``,
  ``Cause (file:line)``, ``Fix sketch``, ``Test plan``, ``Blast radius``, ``Out of scope``,
  ``Open questions`` (at most two). The cause's ``file:line`` is a line of the buggy copy, at the
  wrong code itself (not where the symptom surfaces).

Helpers to use: ``katas.phase19.bug_hunt.scaffold`` (``Edit``, ``run_until_idle``,
``ScriptedSampler``, ``source_digest``). Run the grader with
``pytest --impl=mine katas/phase19/bug_hunt``.
"""

from __future__ import annotations

from types import ModuleType

from katas.phase19.bug_hunt.scaffold import Edit

# -- 01_full_prefix_hit: bugs/01_full_prefix_hit/REPORT.md


def regression_full_prefix_hit(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package that shows a repeated prompt that never finishes, as the
    report describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_full_prefix_hit: a test that reproduces report 01")


def fix_full_prefix_hit() -> list[Edit]:
    """The edits that repair 01_full_prefix_hit in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_full_prefix_hit: edits that repair bug 01")


def scope_full_prefix_hit() -> str:
    """The scope page for 01_full_prefix_hit: every template field, at most two open questions,
    and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_full_prefix_hit: the one-page scope plan for bug 01")


# -- 02_preempt_double_free: bugs/02_preempt_double_free/REPORT.md


def regression_preempt_double_free(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package that crashes when requests sharing a prompt run under
    memory pressure, as the report describes; return normally on a correct one. Never loops
    unbounded."""
    raise NotImplementedError("regression_preempt_double_free: a test that reproduces report 02")


def fix_preempt_double_free() -> list[Edit]:
    """The edits that repair 02_preempt_double_free in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_preempt_double_free: edits that repair bug 02")


def scope_preempt_double_free() -> str:
    """The scope page for 02_preempt_double_free: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_preempt_double_free: the one-page scope plan for bug 02")


# -- 03_hash_ignores_parent: bugs/03_hash_ignores_parent/REPORT.md


def regression_hash_ignores_parent(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package whose prefix caching breaks a request, as the report
    describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_hash_ignores_parent: a test that reproduces report 03")


def fix_hash_ignores_parent() -> list[Edit]:
    """The edits that repair 03_hash_ignores_parent in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_hash_ignores_parent: edits that repair bug 03")


def scope_hash_ignores_parent() -> str:
    """The scope page for 03_hash_ignores_parent: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_hash_ignores_parent: the one-page scope plan for bug 03")


# -- 04_budget_skips_decodes: bugs/04_budget_skips_decodes/REPORT.md


def regression_budget_skips_decodes(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package that shows a step over max_num_batched_tokens as the
    report describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_budget_skips_decodes: a test that reproduces report 04")


def fix_budget_skips_decodes() -> list[Edit]:
    """The edits that repair 04_budget_skips_decodes in the buggy copy, changing nothing else
    the engine does."""
    raise NotImplementedError("fix_budget_skips_decodes: edits that repair bug 04")


def scope_budget_skips_decodes() -> str:
    """The scope page for 04_budget_skips_decodes: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_budget_skips_decodes: the one-page scope plan for bug 04")


# -- 05_stop_after_length: bugs/05_stop_after_length/REPORT.md


def regression_stop_after_length(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package that shows the wrong finish_reason as the report
    describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_stop_after_length: a test that reproduces report 05")


def fix_stop_after_length() -> list[Edit]:
    """The edits that repair 05_stop_after_length in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_stop_after_length: edits that repair bug 05")


def scope_stop_after_length() -> str:
    """The scope page for 05_stop_after_length: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_stop_after_length: the one-page scope plan for bug 05")


# -- 06_detok_splits_utf8: bugs/06_detok_splits_utf8/REPORT.md


def regression_detok_splits_utf8(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package that shows broken non-ASCII output text as the report
    describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_detok_splits_utf8: a test that reproduces report 06")


def fix_detok_splits_utf8() -> list[Edit]:
    """The edits that repair 06_detok_splits_utf8 in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_detok_splits_utf8: edits that repair bug 06")


def scope_detok_splits_utf8() -> str:
    """The scope page for 06_detok_splits_utf8: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_detok_splits_utf8: the one-page scope plan for bug 06")


# -- 07_abort_leaks_blocks: bugs/07_abort_leaks_blocks/REPORT.md


def regression_abort_leaks_blocks(vllm: ModuleType) -> None:
    """Fail (raise) on an engine package whose KV usage stays up after aborted requests, as
    the report describes; return normally on a correct one. Never loops unbounded."""
    raise NotImplementedError("regression_abort_leaks_blocks: a test that reproduces report 07")


def fix_abort_leaks_blocks() -> list[Edit]:
    """The edits that repair 07_abort_leaks_blocks in the buggy copy, changing nothing else the
    engine does."""
    raise NotImplementedError("fix_abort_leaks_blocks: edits that repair bug 07")


def scope_abort_leaks_blocks() -> str:
    """The scope page for 07_abort_leaks_blocks: every template field, at most two open
    questions, and the cause as ``file:line`` of the buggy copy."""
    raise NotImplementedError("scope_abort_leaks_blocks: the one-page scope plan for bug 07")
