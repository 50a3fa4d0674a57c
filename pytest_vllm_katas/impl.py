"""``--impl``: which implementation the katas grade, and the fixtures that hand it to tests.

A kata test never imports its stub or its reference: it asks for ``impl`` and gets the module
chosen on the command line (or by ``KATAS_IMPL``), resolved from the test file's location. One
test file therefore grades both, and a learner's broken module cannot break any other kata.

Importing the learner's module is guarded: whatever its top level does (raise, ``sys.exit()``,
loop forever, import the reference solution), the kata gets one line naming the file, and every
other kata carries on.
"""

from __future__ import annotations

import ast
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pytest

from .catalog import IMPLS, OPTION_GROUP, Kata, kata_for_path, relative_path
from .timeout import KataTimeout, limit_seconds, time_limit
from .variants import compile_module, variant_module_name, variant_source

IMPL_KEY = pytest.StashKey[str]()
ENV_VAR = "KATAS_IMPL"


class KataImportError(Exception):
    """The module under test could not be imported; the message is one line with file:line."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--impl",
        choices=IMPLS,
        default=None,
        help="which implementation the katas grade: 'reference' (default) or 'mine' "
        f"(your code in katas/); falls back to ${ENV_VAR}",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--impl")
    if chosen is None:
        chosen = os.environ.get(ENV_VAR, "").strip() or "reference"
        if chosen not in IMPLS:
            raise pytest.UsageError(
                f"{ENV_VAR}={chosen!r} is not an implementation; use one of: {', '.join(IMPLS)}"
            )
    config.stash[IMPL_KEY] = chosen
    if getattr(config.option, "dist", "no") == "load":
        # `-n N` means --dist load; loadgroup is the same, except that tests marked with one
        # xdist_group (those sharing an expensive session fixture) stay on one worker.
        # Set here, not in addopts: pytest-benchmark turns timing off whenever --dist is given.
        config.option.dist = "loadgroup"
    if distributed(config) and not hasattr(config, "workerinput"):
        share_cores_among_workers(config.option.numprocesses)
    if getattr(config, "workerinput", {}).get("katas_loadgroup"):
        # A worker parses the command line again ("load") and decides whether to tag its tests
        # with their group before any plugin is configured: it learns the controller's choice
        # from pytest_configure_node below.
        config.option.loadgroup = True


#: The thread pools numpy's BLAS (and torch) size themselves by, read once when they load.
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores_among_workers(workers: object) -> None:
    """Controller side, before the workers start (they inherit the environment): give each
    worker's BLAS ``cores // workers`` threads, unless the user chose. Two workers on two cores
    with two BLAS threads each spin against each other: a SmolLM2 test that takes 6 s alone
    took over 100 s that way. A one-kata run (no ``-n``) keeps every core."""
    if not isinstance(workers, int) or workers < 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in _THREAD_VARS:
        os.environ.setdefault(name, threads)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Worker side: put each grouped test's ``@group`` suffix on its node id.

    pytest-xdist (3.8) does this by assigning ``item._nodeid``; pytest 9.2 keeps the id in
    ``item._id`` instead, so the suffix is lost and ``--dist loadgroup`` spreads a group over
    every worker (each then pays for the group's expensive session fixture). Where xdist's own
    suffix took, there is nothing to do.
    """
    if not getattr(config, "workerinput", None) or not config.getvalue("loadgroup"):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # an older pytest: xdist's assignment works there
        return
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller side (pytest-xdist): tell each worker that groups are on."""
    node.workerinput["katas_loadgroup"] = node.config.option.dist == "loadgroup"


def selected_impl(config: pytest.Config) -> str:
    return config.stash.get(IMPL_KEY, "reference")


def distributed(config: pytest.Config) -> bool:
    """True when pytest-xdist spreads this run over workers (``-n N`` with N > 0, or ``--tx``)."""
    return bool(getattr(config.option, "numprocesses", None)
                or getattr(config.option, "tx", None))


# Import failures are remembered so a broken module is reported once per kata and never
# re-executed for each of its tests (its top level may have side effects).
_import_failures: dict[str, KataImportError] = {}


def _where(exc: BaseException, module_file: Path) -> str:
    """file:line of the learner's mistake: the SyntaxError's position, or the deepest frame
    inside the module (falling back to the deepest frame anywhere)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{relative_path(Path(exc.filename))}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve() == module_file.resolve()]
    frame = (inside or frames or [None])[-1]
    if frame is None:
        return relative_path(module_file)
    return f"{relative_path(Path(frame.filename))}:{frame.lineno}"


def reference_use(kata: Kata) -> str | None:
    """file:line where the learner's files import the reference solution or name a file under
    ``reference/``, else None. A static look: it prevents accidents, not determined cheating."""
    for path in sorted(kata.folder.glob("*.py")):
        if path.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, OSError):
            continue  # the import itself reports it
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]
            if any(n == "reference" or n.startswith(("reference.", "reference/"))
                   or "/reference/" in n for n in names):
                return f"{relative_path(path)}:{node.lineno}"
    return None


@contextmanager
def _own_interrupts() -> Iterator[list[bool]]:
    """Tell the run's own Ctrl-C apart from a ``KeyboardInterrupt`` a module raises itself."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        pressed.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _import(kata: Kata, impl: str, variant: str | None) -> ModuleType:
    if variant is None:
        return importlib.import_module(kata.module_name(impl))
    filename, source = variant_source(kata, variant)
    return compile_module(variant_module_name(kata, variant), filename, source)


def load_impl(kata: Kata, impl: str, *, variant: str | None = None,
              config: pytest.Config | None = None) -> ModuleType:
    """Import ``impl``'s module for ``kata`` (or a ``variant``, see :mod:`.variants`), turning
    any import-time failure into one line."""
    name = variant_module_name(kata, variant) if variant else kata.module_name(impl)
    if name in _import_failures:
        raise _import_failures[name]
    if name in sys.modules:
        return sys.modules[name]
    shown = relative_path(kata.module_path(impl)) if variant is None else f"{kata.id} [{variant}]"
    if impl == "mine" and variant is None:
        where = reference_use(kata)
        if where is not None:
            _import_failures[name] = KataImportError(
                f"your code imports the reference solution ({where}); the tests compare with it "
                f"for you: remove that import and write your own")
            raise _import_failures[name]
    seconds = limit_seconds(config) if config is not None else 0
    try:
        with _own_interrupts() as pressed, time_limit(seconds, "at import: a loop at the "
                                                      "module's top level?"):
            return _import(kata, impl, variant)
    except KeyboardInterrupt as exc:
        if pressed:
            raise  # the learner pressed Ctrl-C: stop the run as pytest always does
        failure = _import_failure(shown, exc, kata, impl)
    except KataTimeout as exc:
        failure = KataImportError(f"cannot import {shown}: {exc}")
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit, anything at top level
        failure = _import_failure(shown, exc, kata, impl)
    sys.modules.pop(name, None)
    _import_failures[name] = failure
    raise failure from None


def _import_failure(shown: str, exc: BaseException, kata: Kata, impl: str) -> KataImportError:
    if isinstance(exc, SyntaxError):
        detail = exc.msg
    elif isinstance(exc, SystemExit):
        detail = f"the module called sys.exit({exc.code!r}) while being imported"
    elif isinstance(exc, KeyboardInterrupt):
        detail = "the module raised KeyboardInterrupt while being imported"
    else:
        detail = str(exc).splitlines()[0] if str(exc) else ""
    return KataImportError(f"cannot import {shown}: {type(exc).__name__}: {detail} "
                           f"({_where(exc, kata.module_path(impl))})")


@pytest.fixture
def kata(request: pytest.FixtureRequest) -> Kata:
    """The kata whose test is running, from its ``kata.toml``."""
    found = kata_for_path(Path(request.path))
    if found is None:
        raise pytest.UsageError(
            f"{request.path}: the kata fixtures work only in tests under katas/phaseNN/<slug>/"
        )
    return found


@pytest.fixture
def impl(request: pytest.FixtureRequest, kata: Kata, katas_variant: str | None) -> ModuleType:
    """The module under test: your stub with ``--impl=mine``, else the reference solution (or,
    for kata authors, a ``--katas-check`` variant)."""
    return load_impl(kata, selected_impl(request.config), variant=katas_variant,
                     config=request.config)


@pytest.fixture
def reference_impl(request: pytest.FixtureRequest, kata: Kata) -> ModuleType:
    """The reference module, for tests that compare the implementation under test against it."""
    return load_impl(kata, "reference", config=request.config)
