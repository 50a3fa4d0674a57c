"""The ``katas`` command: the learner's view of the repository outside pytest.

One function per subcommand; anything longer than a screen lives in its own module (``course``,
``reset``, ``watch``, ``doctor``). A user mistake (unknown kata, unreadable progress, reset with
no pristine copy, watch outside ``katas/``...) is one line on stderr, exit status 2, and nothing
is changed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import course
from .catalog import KataError, discover, find_root, resolve
from .progress import render_markdown, render_table, stored_rows


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2, nothing changed."""


def _root() -> Path:
    root = find_root()
    if root is None:
        raise CliError("not inside a vllm-katas checkout (no katas/ folder and pyproject.toml "
                       "above the current directory)")
    return root


def _progress(root: Path, impl: str) -> dict[str, dict]:
    try:
        return course.stored_progress(root, impl)
    except course.ProgressCacheError as exc:
        raise CliError(str(exc)) from None


def _report_progress(path: Path) -> tuple[dict[str, dict], str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k["id"]: k for k in data["katas"]}, str(data["impl"])
    except FileNotFoundError:
        raise CliError(f"no report at {path}; write one with pytest --katas-report={path}") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is not a vllm-katas report ({type(exc).__name__}: {exc})") \
            from None


def cmd_status(args: argparse.Namespace) -> int:
    root = _root()
    phase = args.phase
    if phase is not None:
        try:
            phase = phase if phase.startswith("phase") else f"phase{int(phase):02d}"
        except ValueError:
            raise CliError(f"{args.phase!r} is not a phase; use e.g. 2 or phase02") from None
    if args.report:
        stored, impl = _report_progress(Path(args.report))
    else:
        stored, impl = _progress(root, args.impl), args.impl
    rows = stored_rows(root, stored, phase)
    if phase and not rows:
        raise CliError(f"no katas in {phase}")
    if args.markdown:
        print("\n".join(render_markdown(rows, impl)))
        return 0
    if not stored:
        print(f"No results yet for impl={impl}. Run: pytest --impl={impl} katas")
    print("\n".join(render_table(rows)))
    return 0


def cmd_hint(args: argparse.Namespace) -> int:
    kata = resolve(_root(), args.kata)
    levels = len(kata.hints)
    if not 1 <= args.level <= levels:
        raise CliError(f"{kata.id} has {levels} hint level(s); choose --level 1 to {levels}")
    print(f"{kata.id} ({kata.lab} {kata.title}) - hint {args.level} of {levels}:")
    print(f"  {kata.hints[args.level - 1]}")
    if args.level < levels:
        print(f"More: katas hint {kata.slug} --level {args.level + 1}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from .reset import ResetError, reset

    root = _root()
    kata = resolve(root, args.kata)
    try:
        result = reset(kata, force=args.yes)
    except ResetError as exc:
        raise CliError(str(exc)) from None
    where = result.restored.relative_to(root)
    if result.backup is None:
        print(f"{where} is the pristine stub; nothing to back up")
    else:
        print(f"your file was kept as {result.backup.relative_to(root)}")
        print(f"restored the pristine stub at {where}")
    course.forget(root, "mine", kata.id)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import WatchError, watch

    root = _root()
    scope = Path(args.path) if args.path else root / "katas"
    try:
        return watch(root, scope, once=args.once)
    except WatchError as exc:
        raise CliError(str(exc)) from None
    except course.ProgressCacheError as exc:
        raise CliError(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report, run_checks

    lines, status = report(run_checks(deep=not args.quick))
    print("\n".join(lines))
    return status


def cmd_diff(args: argparse.Namespace) -> int:
    root = _root()
    kata = resolve(root, args.kata)
    entry = _progress(root, "mine").get(kata.id, {})
    status = entry.get("status", "not run")
    if status != "passed":
        raise CliError(f"{kata.id} has not passed yet (last run: {status}); the reference stays "
                       f"hidden until it does: pytest --impl=mine katas/{kata.id}")
    if course.changed_since_verdict(kata, entry):
        raise CliError(f"{kata.stub_path.relative_to(root)} changed after it passed; run "
                       f"pytest --impl=mine katas/{kata.id} again first")
    mine = kata.stub_path.read_text(encoding="utf-8").splitlines(keepends=True)
    reference = kata.reference_path.read_text(encoding="utf-8").splitlines(keepends=True)
    diff = difflib.unified_diff(mine, reference,
                                fromfile=f"{kata.stub_path.relative_to(root)} (yours)",
                                tofile=f"{kata.reference_path.relative_to(root)} (reference)")
    text = "".join(diff)
    print(text if text else "identical to the reference")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    root = _root()
    katas = discover(root)
    target = course.next_unfinished(katas, _progress(root, "mine"))
    if target is None:
        print("every kata passes (or is skipped on this machine). Well done.")
        return 0
    status = course.status_of(_progress(root, "mine"), target)
    print(f"next: {target.lab}  {target.id}  {target.title}  ({status})")
    print(f"  read   {(target.folder / 'README.md').relative_to(root)}")
    print(f"  edit   {target.stub_path.relative_to(root)}")
    print(f"  run    pytest --impl=mine katas/{target.id}")
    print(f"  stuck? katas hint {target.slug}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    try:
        from .live import models
    except ImportError:
        raise CliError("this version has no live (real vLLM) katas") from None
    return int(models.main(args.rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="katas", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="the progress table from the last run")
    status.add_argument("phase", nargs="?", help="only this phase (e.g. 2 or phase02)")
    status.add_argument("--impl", choices=("mine", "reference"), default="mine")
    status.add_argument("--markdown", action="store_true",
                        help="GitHub Markdown (e.g. >> $GITHUB_STEP_SUMMARY)")
    status.add_argument("--report", metavar="PATH",
                        help="read a --katas-report JSON instead of pytest's cache")
    status.set_defaults(func=cmd_status)

    hint = sub.add_parser("hint", help="a hint for a kata, easiest first")
    hint.add_argument("kata", help="slug (block_allocator) or phaseNN/slug")
    hint.add_argument("--level", type=int, default=1, help="1 = a nudge (default)")
    hint.set_defaults(func=cmd_hint)

    reset = sub.add_parser("reset", help="restore a kata's pristine stub (keeps a backup)")
    reset.add_argument("kata", help="slug or phaseNN/slug")
    reset.add_argument("--yes", action="store_true",
                       help="reset even though the file has changes (they go to a backup)")
    reset.set_defaults(func=cmd_reset)

    watch = sub.add_parser("watch", help="re-run your tests on save, kata after kata")
    watch.add_argument("path", nargs="?", help="katas/ (default) or a folder inside it")
    watch.add_argument("--once", action="store_true",
                       help="grade until the first unfinished kata, then exit (no watching)")
    watch.set_defaults(func=cmd_watch)

    doctor = sub.add_parser("doctor", help="check this machine's set-up, with fixes")
    doctor.add_argument("--quick", action="store_true",
                        help="skip the child-process probes of torch and vllm")
    doctor.set_defaults(func=cmd_doctor)

    diff = sub.add_parser("diff", help="your solution beside the reference, once it passes")
    diff.add_argument("kata", help="slug or phaseNN/slug")
    diff.set_defaults(func=cmd_diff)

    nxt = sub.add_parser("next", help="the next unfinished kata in course order")
    nxt.set_defaults(func=cmd_next)

    models = sub.add_parser("models", help="local checkpoints for the live katas",
                            add_help=False)
    models.add_argument("rest", nargs=argparse.REMAINDER)
    models.set_defaults(func=cmd_models)
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
