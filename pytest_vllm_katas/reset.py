"""``katas reset``: put a kata's stub back as the project shipped it, keeping the learner's file.

Where the pristine stub comes from: the **pristine store**, ``katas/pristine.json``, which maps
each kata id (``phase00/kv_cache_speedup``) to the exact text of its stub as shipped, committed
with the project. Not git: a learner who committed their work (or squashed, rebased, or
downloaded a zip, or made a repository from the template) has no reliable "first commit that has
the stub", while the store is just a file that travels with every copy of the repository. It is
data, not code: nothing imports or collects it, and it holds no second copy of any module.

One source of truth: kata authors edit the stub in ``katas/`` and refresh the store with
``python -m pytest_vllm_katas.reset snapshot``; ``tests/test_pristine.py`` fails, naming that
command, whenever a stub and its stored copy differ.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import Kata, discover, find_root

STORE = Path("katas") / "pristine.json"
SNAPSHOT_COMMAND = "python -m pytest_vllm_katas.reset snapshot"


class ResetError(Exception):
    """Reset cannot proceed; nothing was changed."""


def load_store(root: Path) -> dict[str, str]:
    """The pristine store: kata id -> stub text ({} when the file does not exist)."""
    path = root / STORE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ResetError(f"{STORE} is not valid JSON ({exc}); restore it with "
                         f"`git checkout -- {STORE}`; nothing was changed") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ResetError(f"{STORE} must map kata ids to stub text; restore it with "
                         f"`git checkout -- {STORE}`; nothing was changed")
    return data


def pristine_text(kata: Kata) -> str | None:
    return load_store(kata.root).get(kata.id)


def changed_lines(kata: Kata) -> int:
    """How many lines of the learner's stub differ from the pristine copy (0: untouched)."""
    pristine = pristine_text(kata) or ""
    current = kata.stub_path.read_text(encoding="utf-8") if kata.stub_path.exists() else ""
    diff = difflib.unified_diff(pristine.splitlines(), current.splitlines(), lineterm="", n=0)
    return sum(1 for line in diff
               if line[:1] in "+-" and not line.startswith(("+++", "---")))


@dataclass(frozen=True)
class ResetResult:
    restored: Path
    backup: Path | None  # None when there was nothing to keep


def backup_path(stub: Path, now: float | None = None) -> Path:
    """``<stub>.bak-YYYYmmdd-HHMMSS`` next to the stub (never an existing file)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    candidate = stub.with_name(f"{stub.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = stub.with_name(f"{stub.name}.bak-{stamp}-{n}")
    return candidate


def reset(kata: Kata, *, force: bool) -> ResetResult:
    """Restore the pristine stub. The current file, if it differs, is first copied to a
    timestamped backup; without ``force`` a changed file is refused (ResetError)."""
    pristine = pristine_text(kata)
    where = kata.stub_path.relative_to(kata.root)
    if pristine is None:
        raise ResetError(
            f"no pristine copy of {kata.id} (no entry in {STORE}); {where} was left as it is"
        )
    if not kata.stub_path.exists():
        kata.stub_path.write_text(pristine, encoding="utf-8")
        return ResetResult(kata.stub_path, None)
    if kata.stub_path.read_text(encoding="utf-8") == pristine:
        return ResetResult(kata.stub_path, None)
    if not force:
        raise ResetError(
            f"{where} has your changes ({changed_lines(kata)} lines differ from the pristine "
            f"stub); nothing was changed. Run `katas reset {kata.slug} --yes` to keep your file "
            f"as a timestamped backup and restore the stub"
        )
    backup = backup_path(kata.stub_path)
    shutil.copy2(kata.stub_path, backup)  # the copy exists before the stub is overwritten
    kata.stub_path.write_text(pristine, encoding="utf-8")
    return ResetResult(kata.stub_path, backup)


# -- maintainers: refresh the store ----------------------------------------------------------


def _valid_katas(root: Path) -> list[Kata]:
    """Every kata whose folder is complete enough to have a stub (others are being written;
    the contract tests report them)."""
    return [k for k in discover(root, skip_invalid=True) if k.stub_path.is_file()]


def out_of_sync(root: Path) -> list[str]:
    """Kata ids whose stored pristine copy is missing or differs from the stub in ``katas/``."""
    store = load_store(root)
    return [k.id for k in _valid_katas(root)
            if store.get(k.id) != k.stub_path.read_text(encoding="utf-8")]


def snapshot(root: Path, names: Sequence[str] = ()) -> list[str]:
    """Copy the stubs (all, or the named katas) into the store; return the ids written."""
    store = load_store(root)
    written = []
    for kata in _valid_katas(root):
        if names and kata.id not in names and kata.slug not in names:
            continue
        text = kata.stub_path.read_text(encoding="utf-8")
        if store.get(kata.id) != text:
            store[kata.id] = text
            written.append(kata.id)
    if written or not (root / STORE).exists():
        text = json.dumps(store, indent=1, sort_keys=True, ensure_ascii=False)
        (root / STORE).write_text(text + "\n", encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """For kata authors: ``snapshot [kata ...]`` copies the current stubs into the store;
    ``check`` lists katas whose store copy is out of date."""
    parser = argparse.ArgumentParser(prog="python -m pytest_vllm_katas.reset",
                                     description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    snap = sub.add_parser("snapshot", help="record the stubs in katas/pristine.json (authors only)")
    snap.add_argument("katas", nargs="*", help="kata slugs or ids (default: every kata)")
    sub.add_parser("check", help="list katas whose pristine copy differs from the stub")
    args = parser.parse_args(argv)
    root = find_root()
    if root is None:
        print("not inside a vllm-katas checkout", file=sys.stderr)
        return 2
    if args.cmd == "check":
        stale = out_of_sync(root)
        for kata_id in stale:
            print(f"out of date: {kata_id}")
        return 1 if stale else 0
    for kata_id in snapshot(root, args.katas):
        print(f"stored: {kata_id}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
