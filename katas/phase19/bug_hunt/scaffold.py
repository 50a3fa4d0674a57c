"""Lab 19-01 scaffold: buggy copies of mini_vllm, the scope-page parser, and the behaviour battery.

Nothing here is yours to write. What it gives you:

* ``BUGS``: the bug ids, one folder each under ``bugs/`` with its ``REPORT.md``.
* ``buggy(bug)``: mini_vllm with that bug planted, imported as a package of its own name (so
  pristine ``mini_vllm`` stays untouched in the same process). Pass it to your regression test.
* ``fixed(bug, edits)``: the buggy copy with your fix's edits applied on top.
* ``browse_dir(bug)``: a readable copy of the buggy tree, named ``mini_vllm/`` like the original,
  tests included: read it, run it, quote its ``file:line`` in your scope page.
* ``run_until_idle(engine, max_steps)``: step an engine to the end, never forever.
* ``ScriptedSampler(tokens)``: a sampler that emits the tokens you choose (EOS is 256).
* ``source_digest()``: which mini_vllm the copies were made from (your "Reproduced at").
* ``parse_scope(text)``: the scope page's fields, as the grader reads them.
* ``behaviour(pkg)``: what an engine package does on a fixed battery of small workloads; a fixed
  copy must do exactly what pristine mini_vllm does.

The planted bugs are stored as edits (file, old text, new text) applied to a fresh copy of the
current mini_vllm, never as a second copy of the engine, so they follow mini_vllm as it changes.
They live in ``bugs/planted.b64`` (zlib + base64 of a TOML file) only so that a learner does not
read the answers by accident; maintainers decode, edit and re-encode it with this module's CLI.
Copies are built once per mini_vllm content and kept in a temp folder (``KATAS_BUG_HUNT_DIR``
overrides where). The kata's tests run on the reference (``pytest katas/phase19/bug_hunt``) are
the maintainers' check that every planted edit still applies and still reproduces.

Command line (``python -m katas.phase19.bug_hunt.scaffold ...``):

* ``path BUG``: build the buggy copy and print its readable tree (a ``mini_vllm/`` folder).
* ``suite [BUG ...]``: run mini_vllm's whole test suite against your fixed copies (slow: several
  minutes per bug; the kata's default tests run a fast battery instead).
* ``suite --module M``: the same with module ``M``'s fixes (maintainers: the reference's).
* ``planted --decode`` / ``planted --encode FILE``: maintainers: read or rewrite the planted edits.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import mini_vllm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

KATA_DIR = Path(__file__).resolve().parent
BUGS_DIR = KATA_DIR / "bugs"
PLANTED_FILE = BUGS_DIR / "planted.b64"
SOURCE_DIR = Path(mini_vllm.__file__).resolve().parent
PACKAGE = "mini_vllm"

#: The bugs, in the order of the README. The learner's functions drop the ``NN_`` prefix:
#: ``regression_full_prefix_hit``, ``fix_full_prefix_hit``, ``scope_full_prefix_hit``.
BUGS: tuple[str, ...] = (
    "01_full_prefix_hit",
    "02_preempt_double_free",
    "03_hash_ignores_parent",
    "04_budget_skips_decodes",
    "05_stop_after_length",
    "06_detok_splits_utf8",
    "07_abort_leaks_blocks",
)

#: The scope page's fields (lab 19-01's one-page template), in order.
SCOPE_FIELDS: tuple[str, ...] = (
    "Issue", "Reproduced at", "Cause (file:line)", "Fix sketch", "Test plan", "Blast radius",
    "Out of scope", "Open questions",
)
#: How far (in lines) a scope page's cause may sit from the planted edit and still count.
CAUSE_WINDOW = 3
#: Most open questions a scope page may ask (the course: at most two).
MAX_OPEN_QUESTIONS = 2


class Edit(NamedTuple):
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``file``.

    ``file`` is a path inside the package, ``"kv_cache.py"`` (``"mini_vllm/kv_cache.py"`` is
    accepted too).
    """

    file: str
    old: str
    new: str


class Location(NamedTuple):
    """Where an edit landed in the edited tree: ``file`` and the 1-based lines it spans."""

    file: str
    first: int
    last: int


def bug_name(bug: str) -> str:
    """``"01_full_prefix_hit"`` -> ``"full_prefix_hit"`` (the learner's function suffix)."""
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; the bugs are {', '.join(BUGS)}")
    return bug.split("_", 1)[1]


def report_path(bug: str) -> Path:
    bug_name(bug)
    return BUGS_DIR / bug / "REPORT.md"


# -- the planted edits ------------------------------------------------------------------------


def decode_planted(blob: str) -> str:
    return zlib.decompress(base64.b64decode("".join(blob.split()))).decode("utf-8")


def encode_planted(toml_text: str) -> str:
    data = base64.b64encode(zlib.compress(toml_text.encode("utf-8"), 9)).decode("ascii")
    return "\n".join(data[i:i + 76] for i in range(0, len(data), 76)) + "\n"


@cache
def _planted_table() -> dict[str, tuple[Edit, ...]]:
    data = tomllib.loads(decode_planted(PLANTED_FILE.read_text(encoding="utf-8")))
    table: dict[str, tuple[Edit, ...]] = {}
    for entry in data.get("bug", []):
        table[entry["id"]] = tuple(Edit(e["file"], e["old"], e["new"]) for e in entry["edit"])
    missing = [b for b in BUGS if b not in table]
    if missing:
        raise ValueError(f"{PLANTED_FILE.name}: no planted edits for {missing}")
    return table


def planted(bug: str) -> tuple[Edit, ...]:
    """The edits that plant ``bug`` into pristine mini_vllm (spoilers: the grader's use only)."""
    bug_name(bug)
    return _planted_table()[bug]


# -- building copies ----------------------------------------------------------------------------


def _relative(file: str) -> str:
    file = file.replace("\\", "/").lstrip("./")
    return file[len(PACKAGE) + 1:] if file.startswith(PACKAGE + "/") else file


def normalize_edits(edits: Iterable[Any], label: str) -> tuple[Edit, ...]:
    """``edits`` as ``Edit`` s; ``ValueError`` naming the entry that is not (file, old, new)."""
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Iterable):
        raise ValueError(f"{label}: expected a list of (file, old, new) edits, got {edits!r}")
    out: list[Edit] = []
    for index, edit in enumerate(edits):
        if not (isinstance(edit, (tuple, list)) and len(edit) == 3
                and all(isinstance(part, str) for part in edit)):
            raise ValueError(f"{label}: edit {index} must be (file, old, new), three strings; "
                             f"got {edit!r}")
        file, old, new = edit
        if not old or old == new:
            raise ValueError(f"{label}: edit {index} ({file}) needs a non-empty `old` and a "
                             f"different `new`")
        out.append(Edit(_relative(file), old, new))
    return tuple(out)


def apply_edits(root: Path, edits: Sequence[Edit], label: str) -> list[Location]:
    """Apply ``edits`` in order to the package tree at ``root``; where each landed.

    ``ValueError`` naming the edit when its file is missing or its ``old`` text does not occur
    exactly once (at the moment it is applied).
    """
    where: list[Location] = []
    for index, edit in enumerate(edits):
        path = root / edit.file
        if not path.is_file() or root not in path.resolve().parents:
            raise ValueError(f"{label}: edit {index}: no file {edit.file!r} in {PACKAGE}/")
        text = path.read_text(encoding="utf-8")
        found = text.count(edit.old)
        if found != 1:
            raise ValueError(f"{label}: edit {index}: its `old` text occurs {found} times in "
                             f"{PACKAGE}/{edit.file} (must be exactly once)")
        start = text.index(edit.old)
        first = text.count("\n", 0, start) + 1
        where.append(Location(edit.file, first, first + edit.new.rstrip("\n").count("\n")))
        path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")
    return where


@cache
def source_digest() -> str:
    """A digest of mini_vllm's current sources: copies are rebuilt when it changes."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(SOURCE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _root() -> Path:
    base = os.environ.get("KATAS_BUG_HUNT_DIR") or tempfile.gettempdir()
    return Path(base) / "vllm_katas_bug_hunt"


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc")]


_IMPORT_NAME = re.compile(rf"\b{PACKAGE}\b")


def build(edit_groups: Sequence[Sequence[Edit]], labels: Sequence[str]) -> Path:
    """The folder of mini_vllm with each group of edits applied in turn (built once, cached).

    It holds ``mini_vllm/`` (readable, tests included), ``import/bug_hunt_<digest>/`` (the same
    code under its own package name, without tests) and ``locations.txt``.
    """
    key = hashlib.sha256(repr((source_digest(), [tuple(g) for g in edit_groups])).encode())
    digest = key.hexdigest()[:16]
    base = _root() / f"{'+'.join(labels) or 'pristine'}-{digest}"
    if (base / ".done").is_file():
        package = (base / ".done").read_text().strip()
        if (base / "import" / package / "__init__.py").is_file() and (base / PACKAGE).is_dir():
            return base
        shutil.rmtree(base, ignore_errors=True)  # a temp cleaner took part of it: rebuild
    _root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=_root()))
    try:
        browse = tmp / PACKAGE
        shutil.copytree(SOURCE_DIR, browse, ignore=_ignore)
        locations: list[Location] = []
        for group, label in zip(edit_groups, labels, strict=True):
            locations = apply_edits(browse, group, label)  # the last group's (the bug's)
        package = f"bug_hunt_{digest}"
        importable = tmp / "import" / package
        shutil.copytree(browse, importable, ignore=lambda d, n: _ignore(d, n) + (
            ["tests"] if Path(d) == browse else []))
        for path in importable.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            path.write_text(_IMPORT_NAME.sub(package, text), encoding="utf-8")
        (tmp / "locations.txt").write_text(
            "".join(f"{loc.file}:{loc.first}:{loc.last}\n" for loc in locations))
        (tmp / ".done").write_text(package)
        try:
            tmp.rename(base)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return base


def load(base: Path) -> ModuleType:
    """Import the copy built at ``base`` under its own package name."""
    package = (base / ".done").read_text().strip()
    if package in sys.modules:
        return sys.modules[package]
    path = str(base / "import")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(package)


def buggy_dir(bug: str) -> Path:
    return build([planted(bug)], [bug])


def browse_dir(bug: str) -> Path:
    """The readable buggy tree: ``<this folder>/mini_vllm/...``."""
    return buggy_dir(bug) / PACKAGE


def buggy(bug: str) -> ModuleType:
    """mini_vllm with ``bug`` planted, as an importable package of its own name."""
    return load(buggy_dir(bug))


def _restores_pristine(edit_groups: Sequence[Sequence[Edit]]) -> bool:
    """Whether applying the groups in turn leaves every file exactly as in mini_vllm."""
    texts: dict[str, str] = {}
    for group in edit_groups:
        for edit in group:
            path = SOURCE_DIR / edit.file
            if edit.file not in texts:
                if not path.is_file():
                    return False
                texts[edit.file] = path.read_text(encoding="utf-8")
            if texts[edit.file].count(edit.old) != 1:
                return False
            texts[edit.file] = texts[edit.file].replace(edit.old, edit.new)
    return all((SOURCE_DIR / f).read_text(encoding="utf-8") == t for f, t in texts.items())


def fixed(bug: str, edits: Iterable[Any]) -> ModuleType:
    """The buggy copy with ``edits`` (your fix) applied on top; ``ValueError`` if one does not
    apply. A fix that restores mini_vllm's text exactly is mini_vllm itself (nothing to build).
    """
    fix = normalize_edits(edits, f"fix for {bug}")
    if _restores_pristine([planted(bug), fix]):
        return mini_vllm
    return load(build([planted(bug), fix], [bug, "fix"]))


def cause_locations(bug: str) -> list[Location]:
    """Where the planted edits sit in the buggy copy (what a scope page's cause must name)."""
    lines = (buggy_dir(bug) / "locations.txt").read_text().split()
    out = []
    for line in lines:
        file, first, last = line.rsplit(":", 2)
        out.append(Location(file, int(first), int(last)))
    return out


# -- the scope page -----------------------------------------------------------------------------

_FIELD_RE = re.compile(
    r"(?im)(?:^|\s{2,}|\|)[ \t#>*_\-|]*"
    r"(issue|reproduced at|cause\s*\(file:line\)|fix sketch|test plan|blast radius|out of scope"
    r"|open questions(?:[ \t]+for[ \t]+maintainers)?)[ \t*_]*:")
_CAUSE_RE = re.compile(r"([\w./\\-]+\.py):(\d+)")


def parse_scope(text: str) -> dict[str, str]:
    """The scope page's fields that are present, by their ``SCOPE_FIELDS`` name -> their text.

    A field is its label followed by a colon, at the start of a line (markdown ``#``, ``-``,
    ``*``, ``**`` around it are fine) or after two spaces on a line (the course's
    ``Issue: ...  Reproduced at: ...``). Its text runs to the next label.
    """
    found: dict[str, str] = {}
    matches = list(_FIELD_RE.finditer(text))
    canonical = {f.lower().split(" (")[0]: f for f in SCOPE_FIELDS}
    for index, match in enumerate(matches):
        label = re.sub(r"\s+", " ", match.group(1).lower())
        label = "cause" if label.startswith("cause") else label
        label = "open questions" if label.startswith("open questions") else label
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        value = text[match.end():end].strip().strip("*_").strip()
        name = canonical[label]
        found[name] = (found.get(name, "") + "\n" + value).strip()
    return found


_NO_QUESTION = ("none", "-", "n/a", "no", "")


def count_questions(value: str) -> int:
    """Open questions in a field's text: list items, or else non-empty lines; "none" is 0."""
    bullet = re.compile(r"^([-*+]|\d+[.)]|q\d+[.:)]?)\s+", re.I)
    lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
    lines = [ln for ln in lines if bullet.sub("", ln).strip(" .").lower() not in _NO_QUESTION]
    items = [ln for ln in lines if bullet.match(ln)]
    return len(items) if items else len(lines)


def parse_cause(value: str) -> list[tuple[str, int]]:
    """Every ``file.py:line`` in a cause field, files relative to the package."""
    return [(_relative(m.group(1)), int(m.group(2))) for m in _CAUSE_RE.finditer(value)]


# -- the behaviour battery ----------------------------------------------------------------------


class ScriptedSampler:
    """Emits ``script[k]`` as a request's k-th output token (past the end: the last one)."""

    def __init__(self, script: Sequence[int]) -> None:
        self.script = list(script)

    def sample(self, logits: Any, params: Any, request: Any = None) -> int:
        k = len(request.output_token_ids)
        return self.script[min(k, len(self.script) - 1)]


def run_until_idle(engine: Any, max_steps: int = 300) -> tuple[list[Any], list[dict[str, int]]]:
    """Step ``engine`` until it has no unfinished request; the requests that finished and each
    step's plan (``{request_id: tokens scheduled}``). ``AssertionError`` after ``max_steps``
    steps: a regression test must never hang on a stuck engine."""
    finished: list[Any] = []
    plans: list[dict[str, int]] = []
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            break
        finished.extend(engine.step())
        plans.append(dict(engine.scheduler.last_num_scheduled_tokens))
    else:
        raise AssertionError(f"the engine still had unfinished requests after {max_steps} steps "
                             f"(stuck: a request that never gets scheduled?)")
    return finished, plans


def _summary(engine: Any, finished: list[Any]) -> list[tuple[Any, ...]]:
    rows = []
    for request in sorted(finished, key=lambda r: r.request_id):
        out = engine._to_output(request)
        rows.append((request.request_id, tuple(out.output_token_ids), out.text, out.finish_reason,
                     out.num_preemptions))
    return rows


def _scenario_prefix_sharing(vllm: ModuleType) -> object:
    # Shared prefixes, identical whole-block prompts sent again, and a pool tight enough that
    # requests get preempted and come back through their own cached blocks.
    engine = vllm.LLMEngine(num_blocks=14, block_size=4, max_num_batched_tokens=24,
                            max_num_seqs=4)
    params = vllm.SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True)
    prompts = ["the cat sat on", "the cat sat on the mat", "the cat sat on a", "a dog ran",
               "the cat sat on"]
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=f"w1-{i}")
    first, plans1 = run_until_idle(engine)
    for i, prompt in enumerate(prompts[:3]):
        engine.add_request(prompt, params, request_id=f"w2-{i}")
    second, plans2 = run_until_idle(engine)
    return (_summary(engine, first + second), plans1, plans2, engine.kv_cache_manager.get_usage())


def _scenario_cached_prefixes(vllm: ModuleType) -> object:
    engine = vllm.LLMEngine(num_blocks=64, block_size=4)
    params = vllm.SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    out = []
    for i, prompt in enumerate(["yyyyzz", "xxxxyyyyzz", "xxxxyyyyzzq", "yyyyxxxx", "xxxxyyyy"]):
        engine.add_request(prompt, params, request_id=f"h{i}")
        finished, plans = run_until_idle(engine)
        out.append((_summary(engine, finished), plans))
    return out


def _scenario_chunked_budget(vllm: ModuleType) -> object:
    engine = vllm.LLMEngine(num_blocks=64, block_size=4, max_num_batched_tokens=8)
    params = vllm.SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine.add_request("hi", params, request_id="a")
    engine.add_request("ok", params, request_id="b")
    engine.step()
    engine.add_request("a much longer prompt than that", params, request_id="c")
    finished, plans = run_until_idle(engine)
    return _summary(engine, finished), plans


def _scenario_stop(vllm: ModuleType) -> object:
    eos = 256
    out = []
    for script, max_tokens, ignore_eos in (([eos], 1, False), ([65, 66, eos], 3, False),
                                           ([65, eos], 5, False), ([65, eos], 3, True),
                                           ([65, 66, 67], 2, False)):
        engine = vllm.LLMEngine(num_blocks=32, block_size=4, sampler=ScriptedSampler(script))
        params = vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                     ignore_eos=ignore_eos)
        engine.add_request("stop?", params, request_id="s")
        finished, _ = run_until_idle(engine, 20)
        out.append(_summary(engine, finished))
    return out


def _scenario_text(vllm: ModuleType) -> object:
    out = []
    for text in ("héllo", "→ ok", "日本", "ascii"):
        script = [*text.encode("utf-8"), 256]
        engine = vllm.LLMEngine(num_blocks=32, block_size=4, sampler=ScriptedSampler(script))
        params = vllm.SamplingParams(max_tokens=20, temperature=0.0)
        engine.add_request("say", params, request_id="t")
        finished, _ = run_until_idle(engine, 40)
        out.append(_summary(engine, finished))
    # A byte sequence that is not UTF-8 at all decodes with replacement characters.
    engine = vllm.LLMEngine(num_blocks=32, block_size=4,
                            sampler=ScriptedSampler([0xC3, 0x28, 0xE2, 0x82, 256]))
    engine.add_request("bad", vllm.SamplingParams(max_tokens=9), request_id="u")
    finished, _ = run_until_idle(engine, 40)
    return out, _summary(engine, finished)


def _scenario_abort(vllm: ModuleType) -> object:
    engine = vllm.LLMEngine(num_blocks=32, block_size=4)
    params = vllm.SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(["first prompt", "second one", "third"]):
        engine.add_request(prompt, params, request_id=f"r{i}")
    engine.step()
    engine.abort_request("r1")
    after_abort = engine.kv_cache_manager.get_usage()
    finished, _ = run_until_idle(engine)
    return after_abort, _summary(engine, finished), engine.kv_cache_manager.get_usage()


SCENARIOS: dict[str, Callable[[ModuleType], object]] = {
    "prefix sharing under preemption": _scenario_prefix_sharing,
    "cached prefixes": _scenario_cached_prefixes,
    "chunked prefill budget": _scenario_chunked_budget,
    "stop versus length": _scenario_stop,
    "output text": _scenario_text,
    "abort": _scenario_abort,
}


def behaviour(vllm: ModuleType) -> dict[str, object]:
    """Each scenario's observable result on the engine package ``vllm`` (an exception's type
    name stands in for a result)."""
    out: dict[str, object] = {}
    for name, scenario in SCENARIOS.items():
        try:
            out[name] = scenario(vllm)
        except Exception as exc:  # noqa: BLE001 - a crash is an observable result
            out[name] = f"raised {type(exc).__name__}"
    return out


@cache
def pristine_behaviour() -> dict[str, object]:
    return behaviour(mini_vllm)


def behaviour_differences(vllm: ModuleType) -> list[str]:
    """The scenarios in which ``vllm`` does not do what pristine mini_vllm does."""
    expected = pristine_behaviour()
    got = behaviour(vllm)
    return [name for name in SCENARIOS if got[name] != expected[name]]


# -- command line -------------------------------------------------------------------------------


def _learner_fix(module: ModuleType, bug: str) -> Any:
    return getattr(module, f"fix_{bug_name(bug)}")()


def run_suite(bugs: Sequence[str], module: ModuleType) -> int:
    """mini_vllm's own test suite against each fixed copy (planted + ``module``'s fix)."""
    status = 0
    for bug in bugs:
        fix = normalize_edits(_learner_fix(module, bug), f"fix for {bug}")
        base = build([planted(bug), fix], [bug, "fix"])
        print(f"== {bug}: mini_vllm's suite on {base / PACKAGE}", flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(base), *filter(None, [os.environ.get("PYTHONPATH")])]))
        # One worker per core when pytest-xdist is there (the dev extra): seven copies of the
        # whole suite are minutes of work.
        spread = ["-n", "auto"] if importlib.util.find_spec("xdist") else []
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", *spread, "-p",
                              "no:cacheprovider", f"{PACKAGE}/tests"], cwd=base, env=env)
        status = status or rc
    return status


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m katas.phase19.bug_hunt.scaffold")
    sub = parser.add_subparsers(dest="command", required=True)
    p_path = sub.add_parser("path", help="build a buggy copy and print where to read it")
    p_path.add_argument("bug", choices=BUGS)
    p_suite = sub.add_parser("suite", help="mini_vllm's test suite against your fixed copies")
    p_suite.add_argument("bugs", nargs="*", default=[], help=f"any of {', '.join(BUGS)}")
    p_suite.add_argument("--module", default="katas.phase19.bug_hunt.bug_hunt",
                         help="the module whose fix_<name>() functions to use (default: yours)")
    p_planted = sub.add_parser("planted", help="maintainers: decode or encode the planted edits")
    group = p_planted.add_mutually_exclusive_group(required=True)
    group.add_argument("--decode", action="store_true")
    group.add_argument("--encode", metavar="TOML_FILE")
    args = parser.parse_args(argv)

    if args.command == "path":
        print(browse_dir(args.bug))
        print(f"(mini_vllm {source_digest()})", file=sys.stderr)
        return 0
    if args.command == "planted":
        if args.decode:
            sys.stdout.write(decode_planted(PLANTED_FILE.read_text(encoding="utf-8")))
        else:
            text = Path(args.encode).read_text(encoding="utf-8")
            tomllib.loads(text)  # refuse a malformed file before writing it
            PLANTED_FILE.write_text(encode_planted(text), encoding="utf-8")
        return 0
    if args.command == "suite":
        for bug in args.bugs:
            bug_name(bug)
        return run_suite(args.bugs or BUGS, importlib.import_module(args.module))
    return 0  # unreachable: argparse requires a command


if __name__ == "__main__":
    raise SystemExit(main())
