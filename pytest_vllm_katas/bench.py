"""Speed against the reference: the ``kata_bench`` fixture and ``--katas-speed``.

A speed test hands ``kata_bench`` a function of the module under test; the fixture runs it once
untimed (so an unfinished stub is a "todo" and a crash is a failure), then times the
implementation under test and the reference on the same input, in the same process, in
alternating rounds: yours, the reference, yours, the reference... Each round repeats the call a
calibrated number of times (a round lasts about a millisecond, or ``--benchmark-min-time`` if
longer), so drift in the machine (a frequency step, a noisy neighbour, a warming cache) lands on
both sides alike instead of on whichever was timed second. The verdict is the ratio of the two
medians. The rounds are ordinary pytest-benchmark records in one group, so ``--benchmark-save`` /
``--benchmark-compare`` work on them as on any benchmark; ``--benchmark-max-time`` (the whole
pairing), ``--benchmark-min-rounds``, ``--benchmark-timer``, ``--benchmark-disable-gc`` and
``--benchmark-warmup`` apply, ``--benchmark-cprofile`` and ``--benchmark-precision`` do not.

A fast wrong answer is not fast: the output of the last timed call of each side is compared (by
``same=``, default :func:`first_difference`: exact equality through numpy arrays, tensors,
containers and plain objects) and a difference fails the test.

The ratio (yours / reference) goes to the progress table and the JSON report. A kata whose
``kata.toml`` has ``[speed] budget = N`` fails for being more than N times slower than the
reference only when ``--katas-speed`` is given. With ``--impl=reference`` the reference is timed
against itself: the ratio (about 1) is the noise floor of the measurement on this machine.
Under pytest-xdist timing is unreliable, so the function runs once, untimed, with a one-line note.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .catalog import find_root, kata_for_path
from .impl import distributed, load_impl, selected_impl
from .progress import SPEED_PROPERTY

UNTIMED_PROPERTY = "katas_speed_untimed"
WRONG_OUTPUT = ("speed: your timed output differs from the reference's on the same input "
                "(a fast wrong answer is not fast)")
ROUND_S = 1e-3  # the shortest timed round: long against the timer, short against machine drift
MAX_LOOPS = 10**7  # calls per round, whatever the timer says (a coarse or stalled timer)
# The pytest-benchmark table, narrowed in a kata checkout unless --benchmark-columns is given:
# the ratio that matters is in the progress table; these say how steady each median was.
KATA_COLUMNS = ["min", "median", "iqr", "rounds"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm-katas")
    group.addoption(
        "--katas-speed",
        action="store_true",
        default=False,
        help="fail speed tests slower than the kata's [speed] budget x the reference",
    )


@dataclass(frozen=True)
class SpeedResult:
    """Medians in seconds and their ratio (implementation under test / reference)."""

    impl_median_s: float
    reference_median_s: float
    budget: float | None

    @property
    def ratio(self) -> float:
        return self.impl_median_s / max(self.reference_median_s, 1e-12)

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.ratio > self.budget

    def as_json(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "impl_median_s": self.impl_median_s,
                "reference_median_s": self.reference_median_s, "budget": self.budget,
                "over_budget": self.over_budget}


def _reference_fixture(request: pytest.FixtureRequest, group: str) -> Any:
    """A second pytest-benchmark fixture on the same test, recorded as ``<test>::reference``."""
    from pytest_benchmark.fixture import BenchmarkFixture
    from pytest_benchmark.utils import NameWrapper

    session = request.config._benchmarksession
    marker = request.node.get_closest_marker("benchmark")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if "timer" in options:
        options["timer"] = NameWrapper(options["timer"])
    options.pop("group", None)
    fixture = BenchmarkFixture(request.node, add_stats=session.benchmarks.append,
                               logger=session.logger, warner=request.node.warn,
                               disabled=session.disabled, group=group,
                               **dict(session.options, **options))
    fixture.name = f"{request.node.name}::reference"
    fixture.fullname = f"{request.node.nodeid}::reference"
    fixture.extra_info["impl"] = "reference"
    request.addfinalizer(fixture._cleanup)
    return fixture


def first_difference(yours: Any, reference: Any, where: str = "output",
                     _depth: int = 0) -> str | None:
    """Where ``yours`` differs from ``reference`` (e.g. ``"output[2]['x'][0, 3]: 1.5 vs 1.25"``),
    or None when they are equal: the default ``same=`` of ``kata_bench``.

    Exact equality, made robust: numpy arrays and torch tensors compare element by element (NaN
    equals NaN; a list equals an array of the same values), lists and tuples and dicts compare
    item by item, floats compare exactly (NaN equals NaN), enums by name, and objects without
    their own ``__eq__`` (or of the same-named class from the other module, yours vs the
    reference's) by their public attributes.
    """
    if _depth > 12:  # a linked structure, deep enough: the answer is what is near the top
        return None
    if _is_tensor(yours) or _is_tensor(reference):
        return _tensor_difference(yours, reference, where)
    if _is_array(yours) or _is_array(reference):
        return _array_difference(yours, reference, where)
    if isinstance(yours, Mapping) and isinstance(reference, Mapping):
        if yours.keys() != reference.keys():
            only = [repr(k) for k in yours.keys() ^ reference.keys()]
            return f"{where}: key(s) {', '.join(sorted(only)[:5])} in only one of the two"
        for key in reference:
            found = first_difference(yours[key], reference[key], f"{where}[{key!r}]", _depth + 1)
            if found:
                return found
        return None
    if isinstance(yours, (list, tuple)) and isinstance(reference, (list, tuple)):
        if len(yours) != len(reference):
            return f"{where}: {len(yours)} items vs {len(reference)}"
        for i, (a, b) in enumerate(zip(yours, reference, strict=True)):
            found = first_difference(a, b, f"{where}[{i}]", _depth + 1)
            if found:
                return found
        return None
    if isinstance(yours, enum.Enum) and isinstance(reference, enum.Enum):
        same = (type(yours).__name__, yours.name) == (type(reference).__name__, reference.name)
        return None if same else f"{where}: {yours} vs {reference}"
    if isinstance(yours, numbers.Number) and isinstance(reference, numbers.Number):
        if yours == reference or (_is_nan(yours) and _is_nan(reference)):
            return None
        return f"{where}: {yours!r} vs {reference!r}"
    if _compare_attributes(yours, reference):
        if type(yours).__name__ != type(reference).__name__:
            return f"{where}: a {type(yours).__name__} vs a {type(reference).__name__}"
        a, b = _public(yours), _public(reference)
        if a.keys() != b.keys():
            only = sorted(a.keys() ^ b.keys())
            return f"{where}: attribute(s) {', '.join(only[:5])} in only one of the two"
        for name in b:
            found = first_difference(a[name], b[name], f"{where}.{name}", _depth + 1)
            if found:
                return found
        return None
    try:
        equal = yours == reference
        equal = bool(equal) if isinstance(equal, bool) else bool(_numpy().all(equal))
    except Exception as exc:  # noqa: BLE001 - any failure to compare is a difference, said so
        return f"{where}: cannot be compared ({type(exc).__name__}: {exc})"
    return None if equal else f"{where}: {_short(yours)} vs {_short(reference)}"


def _numpy() -> Any:
    import numpy

    return numpy


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "shape")


def _is_nan(value: Any) -> bool:
    try:
        return value != value  # noqa: PLR0124 - NaN is the only value unequal to itself
    except Exception:  # noqa: BLE001
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _public(obj: Any) -> dict[str, Any]:
    """An object's public attributes: what a kata's contract names (the rest is yours)."""
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def _compare_attributes(yours: Any, reference: Any) -> bool:
    """Both plain objects (attributes in ``__dict__``) whose ``==`` would not say what they hold:
    identity (no ``__eq__`` of their own), or classes from two modules (yours, the reference's)."""
    if not (hasattr(yours, "__dict__") and hasattr(reference, "__dict__")):
        return False
    if isinstance(yours, type) or isinstance(reference, type) or callable(yours):
        return False
    identity = type(yours).__eq__ is object.__eq__ and type(reference).__eq__ is object.__eq__
    return identity or type(yours) is not type(reference)


def _array_difference(yours: Any, reference: Any, where: str) -> str | None:
    np = _numpy()
    try:
        a, b = np.asarray(yours), np.asarray(reference)
    except Exception as exc:  # noqa: BLE001
        return f"{where}: cannot be compared as arrays ({type(exc).__name__}: {exc})"
    if a.shape != b.shape:
        return f"{where}: shape {a.shape} vs {b.shape}"
    try:
        unequal = ~((a == b) | (_nan_mask(np, a) & _nan_mask(np, b)))
    except Exception as exc:  # noqa: BLE001
        return f"{where}: cannot be compared as arrays ({type(exc).__name__}: {exc})"
    unequal = np.asarray(unequal, dtype=bool)
    if not unequal.any():
        return None
    if unequal.ndim == 0:
        return f"{where}: {a.item()!r} vs {b.item()!r}"
    index = tuple(int(i) for i in np.argwhere(unequal)[0])
    return f"{where}[{', '.join(map(str, index))}]: {a[index].item()!r} vs {b[index].item()!r}"


def _nan_mask(np: Any, array: Any) -> Any:
    if array.dtype.kind in "fc":
        return np.isnan(array)
    return np.zeros(array.shape, dtype=bool)


def _tensor_difference(yours: Any, reference: Any, where: str) -> str | None:
    if not (_is_tensor(yours) and _is_tensor(reference)):
        return f"{where}: a {type(yours).__name__} vs a {type(reference).__name__}"
    a, b = yours.detach().cpu(), reference.detach().cpu()
    if tuple(a.shape) != tuple(b.shape):
        return f"{where}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.dtype != b.dtype:
        return f"{where}: dtype {a.dtype} vs {b.dtype}"
    equal = a == b
    if a.is_floating_point() or a.is_complex():
        equal = equal | (a.isnan() & b.isnan())
    if bool(equal.all()):
        return None
    index = tuple(int(i) for i in (~equal).nonzero()[0])
    return f"{where}[{', '.join(map(str, index))}]: {a[index].item()!r} vs {b[index].item()!r}"


@dataclass
class _Timed:
    """One side of the pairing: ``fn(module)``, calls per round, the last timed call's output."""

    fn: Callable[[ModuleType], object]
    module: ModuleType
    loops: int = 1
    round_s: float = 0.0
    output: object = None


try:  # pytest-benchmark >= 5: coverage's tracer and profilers paused while timing
    from pytest_benchmark.fixture import PauseInstrumentation as _Paused
except ImportError:  # pragma: no cover - pytest-benchmark 4
    _Paused = contextlib.nullcontext


def _time_round(side: _Timed, loops: int, timer: Callable[[], float], disable_gc: bool) -> float:
    fn, module, output = side.fn, side.module, None
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.disable()
    try:
        with _Paused():
            start = timer()
            for _ in range(loops):
                output = fn(module)
            end = timer()
    finally:
        if disable_gc and gc_was_enabled:
            gc.enable()
    side.output = output
    return end - start


def _calibrate(side: _Timed, target_s: float, timer: Callable[[], float],
               disable_gc: bool) -> None:
    """Calls per round so that one round lasts about ``target_s`` (the runs warm up too)."""
    loops = 1
    while True:
        duration = _time_round(side, loops, timer, disable_gc)
        if duration >= target_s or loops >= MAX_LOOPS:
            side.loops, side.round_s = loops, duration
            return
        if duration >= target_s / 10:  # enough signal to scale from
            side.loops = min(MAX_LOOPS, math.ceil(loops * target_s / duration))
            side.round_s = duration * side.loops / loops
            return
        loops *= 10


def _time_in_pairs(mine: Any, ref: Any, yours: _Timed, theirs: _Timed) -> int:
    """Time ``yours`` and ``theirs`` in alternating rounds into the two fixtures' statistics;
    return the number of rounds (each side). Options are pytest-benchmark's, read from ``mine``
    (``ref`` was built from the same session options)."""
    timer, disable_gc = mine._timer, mine._disable_gc
    target_s = max(float(mine._min_time), ROUND_S)
    for side in (yours, theirs):
        _calibrate(side, target_s, timer, disable_gc)
    pair_s = max(yours.round_s + theirs.round_s, target_s)
    rounds = max(int(mine._min_rounds), math.ceil(float(mine._max_time) / pair_s))
    warmup = min(rounds, math.ceil(mine._warmup / min(yours.loops, theirs.loops))) \
        if mine._warmup else 0
    for _ in range(warmup):
        for side in (yours, theirs):
            _time_round(side, side.loops, timer, disable_gc)
    mine_stats, ref_stats = mine._make_stats(yours.loops), ref._make_stats(theirs.loops)
    for _ in range(rounds):
        mine_stats.update(_time_round(yours, yours.loops, timer, disable_gc))
        ref_stats.update(_time_round(theirs, theirs.loops, timer, disable_gc))
    return rounds


def _check_same(yours: object, reference: object,
                same: Callable[[Any, Any], object] | None) -> str | None:
    """None when the outputs agree, else what differs (or the comparator's own message)."""
    if same is None:
        return first_difference(yours, reference)
    try:
        verdict = same(yours, reference)
    except AssertionError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "same= raised"
    if verdict is not None and not verdict:  # False, numpy's False_, 0: they differ
        return f"same={getattr(same, '__name__', 'comparator')} returned {verdict!r}"
    return None  # True, or None from an assert-style comparator that did not raise


@pytest.fixture
def kata_bench(request: pytest.FixtureRequest) -> Callable[..., SpeedResult | None]:
    """Time ``fn(module)`` for the implementation under test and for the reference.

    Usage: ``kata_bench(lambda m: m.sample(logits, temperature=0.7, seed=0))``. ``fn`` must be
    deterministic: its output for your module is compared with its output for the reference
    (``same=`` replaces the comparison: ``same(yours, reference)`` returns False, or raises
    AssertionError, when they differ). Returns a :class:`SpeedResult`, or None when benchmarks
    are off (xdist, ``--benchmark-disable``).
    """
    kata = kata_for_path(Path(request.path))
    if kata is None:
        raise pytest.UsageError(f"{request.path}: kata_bench works only in kata tests")
    impl_name = selected_impl(request.config)
    if not hasattr(request.config, "_benchmarksession"):
        pytest.skip("speed benchmarks need pytest-benchmark (it is disabled: -p no:benchmark)")
    mine = request.getfixturevalue("benchmark")

    def bench(fn: Callable[[ModuleType], object], *,
              same: Callable[[Any, Any], object] | None = None) -> SpeedResult | None:
        impl, reference = load_impl(kata, impl_name), load_impl(kata, "reference")
        try:
            fn(impl)  # untimed: a stub's NotImplementedError surfaces here, as a todo
        except BaseException:
            mine.skipped = True  # not "fixture unused": the test failed before timing
            raise
        if not mine.enabled:
            mine(fn, impl)  # pytest-benchmark's disabled mode: one call, no statistics
            request.node.user_properties.append((UNTIMED_PROPERTY, True))
            return None
        if mine._mode:
            from pytest_benchmark.fixture import FixtureAlreadyUsed

            raise FixtureAlreadyUsed("kata_bench times once per test")
        mine._mode = "kata_bench(...)"  # pytest-benchmark's "used" mark: no "unused" warning
        group = mine.group or f"{kata.id}::{request.node.name}"
        mine.group = group
        mine.extra_info["impl"] = impl_name
        ref = _reference_fixture(request, group)
        ref._mode = mine._mode
        yours, theirs = _Timed(fn, impl), _Timed(fn, reference)
        try:
            _time_in_pairs(mine, ref, yours, theirs)
        except BaseException:
            mine.has_error = ref.has_error = True
            raise
        difference = _check_same(yours.output, theirs.output, same)
        if difference is not None:
            mine.has_error = ref.has_error = True  # shown red, never saved as a timing
            pytest.fail(f"{WRONG_OUTPUT}: {difference}", pytrace=False)
        result = SpeedResult(mine.stats.stats.median, ref.stats.stats.median, kata.speed_budget)
        request.node.user_properties.append((SPEED_PROPERTY, result.as_json()))
        if result.over_budget and request.config.getoption("--katas-speed"):
            pytest.fail(
                f"speed: {result.ratio:.1f}x slower than the reference "
                f"(median {_fmt(result.impl_median_s)} vs {_fmt(result.reference_median_s)}); "
                f"the budget in kata.toml is {result.budget:g}x",
                pytrace=False,
            )
        return result

    return bench


def _fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


class XdistNote:
    """On the xdist controller: one line at the end when speed tests ran untimed."""

    def __init__(self) -> None:
        self.untimed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and (UNTIMED_PROPERTY, True) in report.user_properties:
            self.untimed += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.untimed:
            terminalreporter.write_line(
                f"vllm-katas: speed benchmarks are off under xdist (-n): {self.untimed} speed "
                f"test(s) ran once, untimed; run without -n to time them")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before pytest-benchmark's own pytest_configure (trylast) reads the option.
    if (getattr(config.option, "benchmark_columns", "absent") is None
            and find_root(config.rootpath) is not None):
        config.option.benchmark_columns = list(KATA_COLUMNS)
    worker = hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ
    if not distributed(config) and not worker:
        return
    # Before pytest-benchmark configures itself: it would disable timing anyway, with a
    # two-line warning per process; XdistNote says it once, and only when a speed test ran.
    if hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True
    if not worker:
        config.pluginmanager.register(XdistNote(), "vllm-katas-xdist-speed-note")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    from .machine import machine_info as katas_machine_info

    machine_info["vllm_katas"] = {"impl": selected_impl(config), **katas_machine_info()}
