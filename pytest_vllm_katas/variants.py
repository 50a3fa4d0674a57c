"""The grader tests itself: kata tests run against the shipped stub and known-wrong solutions.

A kata's tests are only as good as the mistakes they catch. Each kata ships a ``wrong.toml``
next to its tests: plausible learner mistakes, each written as a small patch to the reference
solution, each naming the test that must catch it and saying why. ``--katas-check`` runs the
kata tests against one of two *variants* instead of ``--impl``'s module:

- ``--katas-check=pristine``: every kata's stub exactly as shipped (``katas/pristine.json``),
  never the learner's working file, so the check stays meaningful in a learner's clone.
  Every test must be a todo.
- ``--katas-check=wrong``: each test named by a wrong solution runs once per wrong solution
  naming it (parametrized ``[wrong=<name>]``), against that wrong solution; every other test is
  deselected. Every such run must fail.

``katas dev check`` (:mod:`pytest_vllm_katas.devcheck`) runs both and says, per wrong solution,
whether the named test caught it.

Variants are compiled from text into modules of their own names (``katas_variants.…``), so
they never collide with the learner's module or the reference in ``sys.modules``.
"""

from __future__ import annotations

import linecache
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from .catalog import OPTION_GROUP, Kata, KataError, kata_for_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

WRONG_FILE = "wrong.toml"
CHECKS = ("pristine", "wrong")
MIN_WRONG = 5  # the kata contract: at least this many plausible mistakes per kata


@dataclass(frozen=True)
class Patch:
    old: str
    new: str


@dataclass(frozen=True)
class WrongSolution:
    """One plausible learner mistake: the reference with ``patches`` applied."""

    kata: Kata
    name: str
    test: str  # the test function that must catch it
    why: str
    patches: tuple[Patch, ...]

    def source(self) -> str:
        """The reference's text with every patch applied; each ``old`` must occur exactly once,
        so a patch can never silently stop applying after the reference changes."""
        text = self.kata.reference_path.read_text(encoding="utf-8")
        for number, patch in enumerate(self.patches, 1):
            found = text.count(patch.old)
            if found != 1:
                raise KataError(
                    f"{self.kata.id}/{WRONG_FILE} [{self.name}]: patch {number}'s `old` text "
                    f"occurs {found} times in {self.kata.reference_path.name} (must be once)")
            text = text.replace(patch.old, patch.new)
        return text


def load_wrong_solutions(kata: Kata) -> list[WrongSolution]:
    """The wrong solutions in ``kata``'s ``wrong.toml`` ([] when there is none); KataError
    naming the file and entry when it is malformed."""
    path = kata.folder / WRONG_FILE
    where = f"{kata.id}/{WRONG_FILE}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except tomllib.TOMLDecodeError as exc:
        raise KataError(f"{where}: not valid TOML: {exc}") from None
    entries = data.get("wrong")
    if not isinstance(entries, list) or set(data) != {"wrong"}:
        raise KataError(f"{where}: expected only [[wrong]] tables")
    found: list[WrongSolution] = []
    for index, entry in enumerate(entries, 1):
        label = f"{where} [[wrong]] #{index}"
        if not isinstance(entry, dict) or set(entry) != {"name", "test", "why", "patch"}:
            raise KataError(f"{label}: needs exactly the keys name, test, why and [[wrong.patch]]")
        name, test, why, patches = entry["name"], entry["test"], entry["why"], entry["patch"]
        if not (isinstance(name, str) and name.isidentifier()):
            raise KataError(f"{label}: name must be a snake_case identifier, got {name!r}")
        if not (isinstance(test, str) and test.startswith("test_") and test.isidentifier()):
            raise KataError(f"{label} ({name}): test must name a test function, got {test!r}")
        if not (isinstance(why, str) and why.strip()):
            raise KataError(f"{label} ({name}): why must say what the mistake is")
        if (not isinstance(patches, list) or not patches
                or not all(isinstance(p, dict) and set(p) == {"old", "new"}
                           and isinstance(p["old"], str) and isinstance(p["new"], str)
                           and p["old"] and p["old"] != p["new"] for p in patches)):
            raise KataError(f"{label} ({name}): each [[wrong.patch]] needs a non-empty `old` "
                            "and a different `new`")
        if any(w.name == name for w in found):
            raise KataError(f"{label}: the name {name!r} is used twice")
        found.append(WrongSolution(kata, name, test, why.strip(),
                                   tuple(Patch(p["old"], p["new"]) for p in patches)))
    return found


def compile_module(name: str, filename: str, source: str) -> ModuleType:
    """Execute ``source`` as a fresh module called ``name``; tracebacks show its lines."""
    module = ModuleType(name)
    module.__file__ = filename
    # Tracebacks and the todo report read source lines through linecache.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - authors' text
    except BaseException:
        del sys.modules[name]
        raise
    return module


def variant_module_name(kata: Kata, variant: str) -> str:
    return f"katas_variants.{kata.phase}.{kata.slug}.{variant.replace(':', '__')}"


def variant_source(kata: Kata, variant: str) -> tuple[str, str]:
    """(filename for tracebacks, text) of ``variant``: ``pristine`` or ``wrong:<name>``."""
    if variant == "pristine":
        from .reset import STORE, pristine_text

        text = pristine_text(kata)
        if text is None:
            raise KataError(f"{STORE} has no stub for {kata.id}; kata authors run "
                            f"`python -m pytest_vllm_katas.reset snapshot {kata.slug}`")
        # Under katas/, so a NotImplementedError in it is reported as a todo like the stub's.
        return f"{kata.stub_path} [pristine]", text
    kind, _, name = variant.partition(":")
    wrong = {w.name: w for w in load_wrong_solutions(kata)}
    if kind != "wrong" or name not in wrong:
        raise KataError(f"{kata.id}: no variant {variant!r}")
    return f"{kata.reference_path} [wrong: {name}]", wrong[name].source()


# -- the pytest side ---------------------------------------------------------------------------

CHECK_KEY = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--katas-check",
        choices=CHECKS,
        default=None,
        help="for kata authors: grade the shipped stubs (pristine: every test must be todo) or "
        "each kata's wrong.toml solutions (wrong: every named test must fail) instead of --impl",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[CHECK_KEY] = config.getoption("--katas-check")


def selected_check(config: pytest.Config) -> str | None:
    return config.stash.get(CHECK_KEY, None)


@pytest.fixture
def katas_variant(request: pytest.FixtureRequest) -> str | None:
    """The variant the ``impl`` fixture hands out: None (``--impl``'s module), ``pristine``,
    or ``wrong:<name>`` (parametrized by :func:`pytest_generate_tests` under
    ``--katas-check=wrong``)."""
    if selected_check(request.config) == "pristine":
        return "pristine"
    return getattr(request, "param", None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if selected_check(metafunc.config) != "wrong" or "katas_variant" not in metafunc.fixturenames:
        return
    try:
        kata = kata_for_path(Path(metafunc.definition.path))
    except KataError:
        return
    if kata is None:
        return
    names = [w.name for w in load_wrong_solutions(kata) if w.test == metafunc.function.__name__]
    if names:
        metafunc.parametrize("katas_variant", [f"wrong:{n}" for n in names], indirect=True,
                             ids=[f"wrong={n}" for n in names])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under --katas-check=wrong only the runs against a wrong solution are wanted.
    if selected_check(config) != "wrong":
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        wanted = callspec is not None and "katas_variant" in callspec.params
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
