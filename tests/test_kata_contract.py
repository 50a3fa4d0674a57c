"""The kata contract (CONTRIBUTING.md), checked for every kata in the repository.

The authoring guarantees: the reference passes every test (the README's `pytest` grades it), and
the stub as shipped fails every test with NotImplementedError only (reported as "todo"), proven
by running the kata suite on the pristine store in a subprocess, so a learner's edits to their
stubs never turn this red.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from pytest_vllm_katas.catalog import Kata, discover, kata_folders, load_kata
from pytest_vllm_katas.devcheck import (
    AUTHOR_CHECKS,
    AUTHOR_CHECKS_SKIP_REASON,
    run_suite_once,
    stub_problems,
)

ROOT = Path(__file__).resolve().parents[1]
# An invalid kata.toml fails test_kata_toml_is_valid for its own folder; it must not hide
# every other kata's checks.
KATAS = discover(ROOT, skip_invalid=True)
IDS = [k.id for k in KATAS]


def test_the_repository_has_katas() -> None:
    assert len(KATAS) >= 4, "expected at least the four Phase 00 katas"


@pytest.mark.parametrize("folder", kata_folders(ROOT), ids=lambda f: f"{f.parent.name}/{f.name}")
def test_kata_toml_is_valid(folder: Path) -> None:
    load_kata(folder)  # raises KataError naming the file and the problem


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_kata_folder_has_every_file(kata: Kata) -> None:
    required = [kata.folder / "__init__.py", kata.folder / "README.md", kata.stub_path,
                kata.test_path, kata.folder / "kata.toml", kata.reference_path,
                kata.folder.parent / "__init__.py", kata.reference_path.parent / "__init__.py"]
    missing = [str(p.relative_to(ROOT)) for p in required if not p.is_file()]
    assert not missing, f"{kata.id} is missing: {', '.join(missing)}"


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_readme_tells_how_to_run_and_what_it_mirrors(kata: Kata) -> None:
    text = (kata.folder / "README.md").read_text(encoding="utf-8")
    assert f"pytest --impl=mine katas/{kata.id}" in text, "README must show how to grade it"
    assert "upstream" in text.lower(), "README must name the vLLM file and symbol it mirrors"
    assert "hint" in text.lower(), "README must carry tiered hints"


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_readme_never_prints_the_hints(kata: Kata) -> None:
    # Hints come out through `katas hint --level N`, one level at a time, when the learner asks;
    # printed in the README, level 3 (nearly the answer) would be read before the kata is tried.
    readme = " ".join((kata.folder / "README.md").read_text(encoding="utf-8").split())
    for level, hint in enumerate(kata.hints, 1):
        words = " ".join(hint.split())
        assert words[:60] not in readme, f"{kata.id}: README.md prints hint level {level}"
    assert f"katas hint {kata.slug}" in readme, f"{kata.id}: README.md must say `katas hint`"


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_test_module_never_imports_stub_or_reference(kata: Kata) -> None:
    source = kata.test_path.read_text(encoding="utf-8")
    for forbidden in (kata.module_name("mine"), kata.module_name("reference")):
        assert forbidden not in source, f"{kata.test_path.name} imports {forbidden}; use `impl`"


def public_api(module_name: str) -> dict[str, str]:
    """Public functions and classes defined in the module, with their signatures (and for a
    class, the signatures of its public methods)."""
    module = importlib.import_module(module_name)
    api: dict[str, str] = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj):
            api[name] = "class"
            for attr, member in vars(obj).items():
                if (attr.startswith("_") and attr != "__init__") or not callable(member):
                    continue
                api[f"{name}.{attr}"] = str(inspect.signature(member))
        elif callable(obj):
            try:
                api[name] = str(inspect.signature(obj))
            except (TypeError, ValueError):  # e.g. a triton.jit kernel: compare by name only
                api[name] = "callable"
    return api


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_stub_and_reference_expose_the_same_api(kata: Kata) -> None:
    if kata.missing_requirements():
        pytest.skip(f"needs {', '.join(kata.missing_requirements())} to import")
    stub = public_api(kata.module_name("mine"))
    reference = public_api(kata.module_name("reference"))
    assert stub, f"{kata.id}: the stub defines no public functions or classes"
    assert stub == reference, (
        f"{kata.id}: stub and reference differ: only in stub {sorted(stub.keys() - reference)}, "
        f"only in reference {sorted(reference.keys() - stub)}, different signatures "
        f"{sorted(k for k in stub.keys() & reference.keys() if stub[k] != reference[k])}"
    )


@pytest.fixture(scope="session")
def stub_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    # The stubs as shipped (katas/pristine.json), never the learner's working files: this check
    # stays meaningful in a clone where the learner has started filling stubs in. (That the
    # reference passes every test is proven by the same `pytest` run that runs this file.)
    return run_suite_once("stub_results", tmp_path_factory.getbasetemp(), ROOT, ["katas"],
                          "--impl=mine", "--katas-check=pristine")


@pytest.mark.skipif(not AUTHOR_CHECKS, reason=AUTHOR_CHECKS_SKIP_REASON)
@pytest.mark.xdist_group("pristine_suite")
@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_pristine_stub_fails_every_test_with_todo_only(kata: Kata,
                                                      stub_results: dict[str, dict]) -> None:
    result = stub_results.get(kata.id)
    assert result is not None, f"{kata.id}: no tests were collected"
    if result["status"] in ("skipped", "blocked") and result["skip_reasons"]:
        pytest.skip(f"{kata.id} skipped here: {result['skip_reasons'][0]}")
    problems = stub_problems(result)
    assert not problems, f"{kata.id}: with the shipped stub: {'; '.join(problems[:5])}"


def test_readme_kata_map_lists_every_kata() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [k.id for k in KATAS if f"| {k.lab} | `{k.slug}` | {k.tier} |" not in readme]
    assert not missing, f"README.md's kata map lacks: {', '.join(missing)}"
