"""A hang is a verdict, not a frozen terminal: a kata test that runs too long is stopped.

A learner's ``while`` loop that never ends would otherwise stall the whole run (and CI) with
no message. Each kata test's call phase gets a time limit (``--katas-timeout``, default
120 s; 0 turns it off); when it runs out, the test fails with one line saying where the code
was when it was interrupted, and every other test carries on. Fixtures (engine start-up, model
builds) are not limited: they are not the learner's code.

The limit uses ``SIGALRM``, so it works where tests run in the main thread of a POSIX process
(plain runs and pytest-xdist workers); elsewhere it is silently off.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import pytest

from .catalog import is_learner_file, kata_for_path
from .impl import _relative

DEFAULT_SECONDS = 120.0
ENV_VAR = "KATAS_TIMEOUT"


class KataTimeout(Exception):
    """The test ran past its time limit; the message says where it was interrupted."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm-katas")
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
    _limit(config)  # a bad value is a usage error before anything runs


def _where(frame: FrameType | None) -> str:
    """The innermost frame in the learner's files (katas/, not a test), else the innermost."""
    innermost = frame
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if is_learner_file(path):
            return f"{_relative(path)}:{frame.f_lineno}"
        frame = frame.f_back
    if innermost is None:
        return "unknown"
    return f"{_relative(Path(innermost.f_code.co_filename))}:{innermost.f_lineno}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    seconds = _limit(item.config)
    usable = (hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if seconds <= 0 or not usable or kata_for_path(Path(item.path)) is None:
        return (yield)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KataTimeout(
            f"still running after {seconds:g} s (an endless loop?); interrupted at {_where(frame)}"
        )

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
