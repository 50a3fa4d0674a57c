"""``katas watch``: re-run the learner's tests on every save, and move on when a kata passes.

The loop is stepwise over the course: it grades the next unfinished kata (``--impl=mine``); while
that passes it goes straight on to the next one; otherwise it waits for a save. A save inside a
kata's folder grades that kata; any other save re-grades the current one. Each run is a fresh
``python -m pytest`` process, so the learner's edited module is imported anew every time.

What to run is decided by pure functions in :mod:`pytest_vllm_katas.course`; the file watcher
(``watchfiles``, the ``watch`` extra) is imported only when the loop really waits for changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .catalog import Kata, discover
from .course import DONE, kata_of_change, next_unfinished, stored_progress

INSTALL_HINT = 'pip install -e ".[watch]"  (or: pip install watchfiles)'

Runner = Callable[[Path, Kata], str]


class WatchError(Exception):
    """The watch cannot start; nothing was run."""


def scope_katas(root: Path, scope: Path) -> list[Kata]:
    """The katas under ``scope``, which must be ``katas/`` or a folder inside it."""
    base = (root / "katas").resolve()
    scope = scope.resolve()
    if scope != base and base not in scope.parents:
        raise WatchError(f"{scope} is outside katas/; watch katas/ or a folder in it "
                         f"(e.g. `katas watch katas/phase00`)")
    if not scope.is_dir():
        raise WatchError(f"{scope} is not a folder")
    return [k for k in discover(root, skip_invalid=True)
            if scope == k.folder.resolve() or scope in k.folder.resolve().parents]


def run_kata_tests(root: Path, kata: Kata) -> str:
    """Grade ``kata`` with ``--impl=mine`` in a fresh pytest process; return its verdict."""
    # The child writes to the same terminal (or pipe): flush our own lines first so the two never
    # interleave out of order when stdout is buffered.
    sys.stdout.flush()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pytest", "--impl=mine", "-q", f"--katas-report={report}",
             str(kata.folder.relative_to(root))],
            cwd=root, check=False,
        )
        try:
            found = json.loads(report.read_text(encoding="utf-8"))["katas"]
        except (OSError, ValueError, KeyError):
            return "error"
    return next((k["status"] for k in found if k["id"] == kata.id), "error")


def file_changes(scope: Path) -> Iterator[set[Path]]:
    """Batches of saved ``.py`` / ``.toml`` files under ``scope`` (until Ctrl-C)."""
    try:
        import watchfiles
    except ImportError:
        raise WatchError(f"`katas watch` needs the watchfiles package: {INSTALL_HINT}") from None

    def wanted(change: object, path: str) -> bool:
        return path.endswith((".py", ".toml")) and ".bak-" not in Path(path).name

    for batch in watchfiles.watch(scope, watch_filter=wanted, raise_interrupt=False):
        yield {Path(path) for _, path in batch}


def watch(
    root: Path,
    scope: Path,
    *,
    once: bool = False,
    changes: Iterable[set[Path]] | None = None,
    runner: Runner = run_kata_tests,
    say: Callable[[str], None] | None = None,
) -> int:
    """The loop. ``once`` grades until the first kata that does not pass, then returns 1 (0 when
    every kata in scope passes) instead of waiting; ``changes`` replaces the file watcher."""
    if say is None:
        def say(line: str) -> None:
            print(line, flush=True)  # before the next child run writes to the same stream
    katas = scope_katas(root, scope)
    if not katas:
        raise WatchError(f"no katas under {scope}")
    if changes is None and not once:
        changes = file_changes(scope)  # fails now, before any run, if watchfiles is missing
    pending = iter(changes or ())
    progress = dict(stored_progress(root, "mine"))
    target = next_unfinished(katas, progress)
    while True:
        while target is not None:
            status = runner(root, target)
            progress[target.id] = {"status": status}
            if status not in DONE:
                break
            following = next_unfinished(katas, progress)
            if following is not None:
                say(f"katas: {target.id} {status}; next: {following.id} ({following.title})")
            target = following
        if target is None:
            say("katas: every kata here passes (or is skipped on this machine). Well done.")
            return 0
        if once:
            return 1
        say(f"katas: watching for saves; working on {target.id} "
            f"(`katas hint {target.slug}` for a hint, Ctrl-C to stop)")
        batch = next(pending, None)
        if batch is None:
            return 0
        target = kata_of_change(katas, batch) or target
