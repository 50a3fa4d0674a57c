"""The ``katas`` command: the learner's view of the repository outside pytest."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .catalog import KataError, find_root
from .progress import CACHE_KEY, load_stored_progress, render_table, stored_rows


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2, nothing changed."""


def _root() -> Path:
    root = find_root()
    if root is None:
        raise CliError("not inside a vllm-katas checkout (no katas/ folder and pyproject.toml "
                       "above the current directory)")
    return root


def _stored_progress(root: Path, impl: str) -> tuple[dict[str, dict], str | None]:
    """Progress from pytest's cache; a corrupted cache is reported, never fatal."""
    path = root / ".pytest_cache" / "v" / CACHE_KEY / impl
    if not path.exists():
        return {}, None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, f"note: ignored an unreadable progress file ({path.relative_to(root)})"
    return load_stored_progress(raw), None


def cmd_status(args: argparse.Namespace) -> int:
    root = _root()
    phase = args.phase
    if phase is not None:
        phase = phase if phase.startswith("phase") else f"phase{int(phase):02d}"
    stored, note = _stored_progress(root, args.impl)
    rows = stored_rows(root, stored, phase)
    if phase and not rows:
        raise CliError(f"no katas in {phase}")
    if note:
        print(note)
    if not stored:
        print(f"No results yet for impl={args.impl}. Run: pytest --impl={args.impl} katas")
    for line in render_table(rows):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="katas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the progress table from the last run")
    status.add_argument("phase", nargs="?", help="only this phase (e.g. 2 or phase02)")
    status.add_argument("--impl", choices=("mine", "reference"), default="mine")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, KataError) as exc:
        print(f"katas: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
