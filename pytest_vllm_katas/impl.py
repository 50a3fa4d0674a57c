"""``--impl``: which implementation the katas grade, and the fixtures that hand it to tests.

A kata test never imports its stub or its reference: it asks for ``impl`` and gets the module
chosen on the command line (or by ``KATAS_IMPL``), resolved from the test file's location. One
test file therefore grades both, and a learner's broken module cannot break any other kata.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

import pytest

from .catalog import IMPLS, Kata, kata_for_path

IMPL_KEY = pytest.StashKey[str]()
ENV_VAR = "KATAS_IMPL"


class KataImportError(Exception):
    """The module under test could not be imported; the message is one line with file:line."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm-katas", "vllm-katas: graded exercises on vLLM's internals")
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


def selected_impl(config: pytest.Config) -> str:
    return config.stash.get(IMPL_KEY, "reference")


# Import failures are remembered so a broken module is reported once per kata and never
# re-executed for each of its tests (its top level may have side effects).
_import_failures: dict[str, KataImportError] = {}


def _where(exc: BaseException, module_file: Path) -> str:
    """file:line of the learner's mistake: the SyntaxError's position, or the deepest frame
    inside the module (falling back to the deepest frame anywhere)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(Path(exc.filename))}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve() == module_file.resolve()]
    frame = (inside or frames or [None])[-1]
    if frame is None:
        return _relative(module_file)
    return f"{_relative(Path(frame.filename))}:{frame.lineno}"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_impl(kata: Kata, impl: str) -> ModuleType:
    """Import ``impl``'s module for ``kata``, turning any import-time failure into one line."""
    name = kata.module_name(impl)
    if name in _import_failures:
        raise _import_failures[name]
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except Exception as exc:  # SyntaxError, ImportError, anything the module's top level raises
        detail = str(exc).splitlines()[0] if str(exc) else ""
        if isinstance(exc, SyntaxError):
            detail = exc.msg
        failure = KataImportError(
            f"cannot import {_relative(kata.module_path(impl))}: "
            f"{type(exc).__name__}: {detail} ({_where(exc, kata.module_path(impl))})"
        )
        _import_failures[name] = failure
        raise failure from None


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
def impl(request: pytest.FixtureRequest, kata: Kata) -> ModuleType:
    """The module under test: your stub with ``--impl=mine``, else the reference solution."""
    return load_impl(kata, selected_impl(request.config))


@pytest.fixture
def reference_impl(kata: Kata) -> ModuleType:
    """The reference module, for tests that compare the implementation under test against it."""
    return load_impl(kata, "reference")
