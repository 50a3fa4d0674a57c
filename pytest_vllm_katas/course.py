"""Where the learner stands in the course, outside pytest: stored verdicts and what comes next.

The verdicts are the ones the plugin stores after every run in pytest's cache
(``.pytest_cache/v/katas/progress/<impl>``, see :mod:`pytest_vllm_katas.progress`). The ``katas``
command reads them from here; it never runs tests to answer a question about progress.

"What next" is a pure function of the catalog and the verdicts, so ``katas next`` and
``katas watch`` agree, and both are testable without a file system.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .catalog import Kata
from .progress import CACHE_KEY, RUNNING_KEY, crash_entry, load_stored_progress

# Verdicts after which a kata needs nothing more from the learner on this machine.
DONE = ("passed", "blocked", "skipped")


class ProgressCacheError(Exception):
    """The stored progress exists but cannot be read; it is left exactly as it is."""


def progress_file(root: Path, impl: str) -> Path:
    return root / ".pytest_cache" / "v" / CACHE_KEY / impl


def stored_progress(root: Path, impl: str) -> dict[str, dict]:
    """The per-kata verdicts of the last runs with ``impl``; empty when nothing has run yet."""
    path = progress_file(root, impl)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as exc:
        raise ProgressCacheError(
            f"the stored progress {path.relative_to(root)} is unreadable ({type(exc).__name__}); "
            f"it was left as is: re-run `pytest --impl={impl} katas` to rewrite it"
        ) from None
    if not isinstance(raw, dict):
        raise ProgressCacheError(
            f"the stored progress {path.relative_to(root)} is not a JSON object; it was left as "
            f"is: re-run `pytest --impl={impl} katas` to rewrite it"
        )
    progress = load_stored_progress(raw)
    # A run that died (os._exit(), a crash) left a marker naming the test it was in.
    try:
        running = json.loads((root / ".pytest_cache" / "v" / RUNNING_KEY).read_text("utf-8"))
    except (OSError, ValueError):
        running = None
    crashed = crash_entry(running, impl)
    if crashed is not None:
        progress[crashed[0]] = {**progress.get(crashed[0], {}), **crashed[1]}
    return progress


def forget(root: Path, impl: str, kata_id: str) -> bool:
    """Drop one kata's stored verdict (after ``katas reset`` it no longer describes the file)."""
    path = progress_file(root, impl)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(raw, dict) or kata_id not in raw:
        return False
    del raw[kata_id]
    path.write_text(json.dumps(raw, indent=2, sort_keys=True), encoding="utf-8")
    return True


def status_of(progress: Mapping[str, dict], kata: Kata) -> str:
    return progress.get(kata.id, {}).get("status", "not run")


def next_unfinished(katas: Iterable[Kata], progress: Mapping[str, dict]) -> Kata | None:
    """The first kata, in course order (phase, then ``order``), that is not passed or skipped."""
    ordered = sorted(katas, key=lambda k: (k.phase, k.order, k.slug))
    return next((k for k in ordered if status_of(progress, k) not in DONE), None)


def kata_of_change(katas: Iterable[Kata], changed: Iterable[Path]) -> Kata | None:
    """The first kata, in course order, whose folder holds one of the ``changed`` files."""
    resolved = [Path(p).resolve() for p in changed]
    ordered = sorted(katas, key=lambda k: (k.phase, k.order, k.slug))
    for kata in ordered:
        folder = kata.folder.resolve()
        if any(folder in p.parents for p in resolved):
            return kata
    return None


def changed_since_verdict(kata: Kata, entry: Mapping[str, object]) -> bool:
    """True when the kata's files are not the ones the stored verdict was computed on (their
    digest differs; a verdict without a digest cannot vouch for any file)."""
    recorded = entry.get("source_hash")
    return not isinstance(recorded, str) or recorded != kata.source_hash("mine")


def describe_age(entry: Mapping[str, object]) -> str:
    updated = entry.get("updated")
    if not isinstance(updated, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(updated)))
