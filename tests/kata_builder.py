"""A tiny kata repository, written into a pytester folder, for testing the plugin."""

from __future__ import annotations

import textwrap

import pytest

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]
addopts = "-p no:hypothesispytest -p no:anyio"
"""

KATA_TOML = """
id = "{phase}/{slug}"
lab = "{lab}"
title = "Demo {slug}"
order = {order}
tier = "{tier}"
requires = {requires}
upstream = "vllm/v1/demo.py: Demo"
hints = ["look at the docstring"]
"""

STUB = '''
def add(a: int, b: int) -> int:
    """Return a + b."""
    raise NotImplementedError("add: return the sum of a and b")
'''

REFERENCE = '''
def add(a: int, b: int) -> int:
    """Return a + b."""
    return a + b
'''

TESTS = """
import pytest

pytestmark = pytest.mark.{tier}


def test_adds_small_numbers(impl):
    assert impl.add(2, 3) == 5


def test_adds_negative_numbers(impl):
    assert impl.add(-2, -3) == -5
"""


def write_kata(
    pytester: pytest.Pytester,
    slug: str = "demo",
    *,
    phase: str = "phase00",
    lab: str = "00-01",
    order: int = 1,
    tier: str = "cpu_ok",
    requires: str = "[]",
    stub: str = STUB,
    reference: str = REFERENCE,
    tests: str | None = None,
) -> None:
    """Write one kata (stub, reference, tests, kata.toml) into ``pytester``'s folder."""
    root = pytester.path
    (root / "pyproject.toml").write_text(PYPROJECT)
    folder = root / "katas" / phase / slug
    folder.mkdir(parents=True, exist_ok=True)
    for package in (root / "katas", root / "katas" / phase, folder,
                    root / "reference", root / "reference" / phase):
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
    (folder / "kata.toml").write_text(
        KATA_TOML.format(phase=phase, slug=slug, lab=lab, order=order, tier=tier,
                         requires=requires))
    (folder / f"{slug}.py").write_text(textwrap.dedent(stub))
    (folder / f"test_{slug}.py").write_text(textwrap.dedent(tests or TESTS.format(tier=tier)))
    (folder / "README.md").write_text(f"# {slug}\n")
    (root / "reference" / phase / f"{slug}.py").write_text(textwrap.dedent(reference))
