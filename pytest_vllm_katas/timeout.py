"""A hang is a verdict, not a frozen terminal: kata code that runs too long is stopped.

A learner's ``while`` loop that never ends would otherwise stall the whole run (and CI) with
no message. Each kata test's call phase gets a time limit (``--katas-timeout``, default
120 s; 0 turns it off), and so does the import of the module under test (a loop at a module's
top level runs while a fixture imports it). When the limit runs out, the test fails with one
line saying where the code was, and every other test carries on. Other fixtures (engine
start-up, model builds) are not limited: they are not the learner's code.

One looping function must not cost a timeout per test: after the first timeout inside a
learner's function, that function is replaced in its module by one that fails at once, so the
kata's other tests that call it are reported "timeout (skipped after the first)" immediately.

The limit uses ``SIGALRM``, so it works where tests run in the main thread of a POSIX process
(plain runs and pytest-xdist workers); elsewhere it is silently off.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType

import pytest

from .catalog import (
    OPTION_GROUP,
    is_learner_file,
    readable_kata_for_path,
    relative_path,
)

DEFAULT_SECONDS = 120.0
ENV_VAR = "KATAS_TIMEOUT"
LIMIT_KEY = pytest.StashKey[float]()


class KataTimeout(Exception):
    """The code under test ran past its time limit; the message says where it was."""

    def __init__(self, message: str, *, repeated: bool = False) -> None:
        super().__init__(message)
        self.repeated = repeated  # True: not run, because this function already timed out
        self.code: CodeType | None = None  # the learner's function that was running, if any
        self.globals: dict | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--katas-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"stop a kata test that runs longer than this (default {DEFAULT_SECONDS:g}, "
        f"or ${ENV_VAR}; 0 = no limit)",
    )


def _limit(config: pytest.Config) -> float:
    value = config.getoption("--katas-timeout")
    if value is None:
        raw = os.environ.get(ENV_VAR, "").strip()
        try:
            value = float(raw) if raw else DEFAULT_SECONDS
        except ValueError:
            raise pytest.UsageError(f"{ENV_VAR}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise pytest.UsageError(f"--katas-timeout must be >= 0 seconds, got {value:g}")
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LIMIT_KEY] = _limit(config)  # a bad value is a usage error before anything runs


def limit_seconds(config: pytest.Config) -> float:
    return config.stash.get(LIMIT_KEY, DEFAULT_SECONDS)


def _learner_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame in the learner's files (katas/, not a test)."""
    while frame is not None:
        if is_learner_file(Path(frame.f_code.co_filename)):
            return frame
        frame = frame.f_back
    return None


def _where(frame: FrameType | None) -> str:
    """file:line of the innermost learner frame, else of the innermost frame."""
    chosen = _learner_frame(frame) or frame
    if chosen is None:
        return "unknown"
    return f"{relative_path(Path(chosen.f_code.co_filename))}:{chosen.f_lineno}"


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`KataTimeout` inside the block once ``seconds`` have passed.

    ``what`` completes "still running after N s (...)"; a no-op when ``seconds`` is 0 or
    SIGALRM cannot be used here (not POSIX, not the main thread).
    """
    usable = (hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if seconds <= 0 or not usable:
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        error = KataTimeout(f"still running after {seconds:g} s ({what}); interrupted at "
                            f"{_where(frame)}")
        learner = _learner_frame(frame)
        if learner is not None:
            error.code, error.globals = learner.f_code, learner.f_globals
        raise error

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except KataTimeout as raised:
        # Raised from a signal handler, the exception's traceback can start at an instruction
        # with no line number (Python 3.11), which crashes pytest's report (INTERNALERROR).
        # A fresh exception raised here has a clean traceback; the message says where it was.
        fresh = KataTimeout(str(raised), repeated=raised.repeated)
        fresh.code, fresh.globals = raised.code, raised.globals
        raise fresh from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stand_in(code: CodeType, test: str, seconds: float) -> Callable[..., object]:
    def timed_out_before(*args: object, **kwargs: object) -> object:
        raise KataTimeout(f"{code.co_name} already ran past {seconds:g} s in {test}; fix that "
                          f"loop first ({relative_path(Path(code.co_filename))}:"
                          f"{code.co_firstlineno})", repeated=True)

    return timed_out_before


def _replace_function(module_globals: dict, code: CodeType,
                      stand_in: Callable[..., object]) -> bool:
    """Replace every function of the module (top level or a class's method) whose code is
    ``code`` by ``stand_in``; True when something was replaced."""
    replaced = False
    for name, value in list(module_globals.items()):
        if getattr(value, "__code__", None) is code:
            module_globals[name] = functools.wraps(value)(stand_in)
            replaced = True
        elif isinstance(value, type) and value.__module__ == module_globals.get("__name__"):
            for attr, member in list(vars(value).items()):
                inner = getattr(member, "__func__", member)  # staticmethod / classmethod
                if getattr(inner, "__code__", None) is code:
                    wrapped = functools.wraps(inner)(stand_in)
                    if isinstance(member, staticmethod):
                        wrapped = staticmethod(wrapped)
                    elif isinstance(member, classmethod):
                        wrapped = classmethod(wrapped)
                    setattr(value, attr, wrapped)
                    replaced = True
    return replaced


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    seconds = limit_seconds(item.config)
    if readable_kata_for_path(Path(item.path)) is None:
        return (yield)
    try:
        with time_limit(seconds, "an endless loop?"):
            return (yield)
    except KataTimeout as error:
        if error.code is not None and error.globals is not None and not error.repeated:
            _replace_function(error.globals, error.code,
                              _stand_in(error.code, item.name, seconds))
        raise
