"""The vLLM launcher and server context manager, with stand-in servers (no vLLM needed).

A stand-in is a small Python script run in place of ``katas vllm serve``: one answers
``/health`` and starts a grandchild in its process group (as ``vllm serve`` starts its engine
core), one dies at once, one never answers. The context manager must yield only a healthy
server, quote the log of a dead one, and leave no member of the group behind in every case.
"""

from __future__ import annotations

import os
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from pytest_vllm_katas.live import vllm_server as server_mod
from pytest_vllm_katas.live.vllm_server import ServerError, free_port, launcher_argv, vllm_server

HEALTHY = textwrap.dedent("""
    import http.server, subprocess, sys
    port = int(sys.argv[sys.argv.index("--port") + 1])
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the "engine core"
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass
    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")
DIES = "import sys; print('no model here', flush=True); sys.exit(3)"
SILENT = "import time; time.sleep(600)"


def _group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    return False


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def use(source: str) -> None:
        script = tmp_path / "stand_in.py"
        script.write_text(source)
        monkeypatch.setattr(server_mod, "launcher_argv",
                            lambda *args: [sys.executable, str(script), *args])
    return use


def test_launcher_runs_vllm_cli_in_this_interpreter() -> None:
    argv = launcher_argv("bench", "serve")
    assert argv == [sys.executable, "-m", "pytest_vllm_katas.live.vllm_cli", "bench", "serve"]


def test_free_port_can_be_bound() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_healthy_server_is_yielded_and_its_whole_group_stopped(stand_in) -> None:
    stand_in(HEALTHY)
    with vllm_server("some/model", "--max-model-len", "64", startup_timeout=30) as server:
        with urllib.request.urlopen(f"{server.base_url}/health", timeout=5) as response:
            assert response.status == 200
        assert server.model == "some/model"
        assert server.openai_base_url == f"http://127.0.0.1:{server.port}/v1"
        pgid = server.process.pid
    assert _group_is_gone(pgid), "a member of the server's process group outlived the block"
    assert "serving" in server.log.read_text()


def test_server_is_stopped_when_the_block_fails(stand_in) -> None:
    stand_in(HEALTHY)
    with pytest.raises(KeyError), vllm_server("m", startup_timeout=30) as server:
        pgid = server.process.pid
        raise KeyError("the test failed")
    assert _group_is_gone(pgid)


def test_dead_server_raises_with_its_log(stand_in) -> None:
    stand_in(DIES)
    with pytest.raises(ServerError, match=r"exited with code 3.*\n.*no model here"):
        with vllm_server("m", startup_timeout=30):
            pytest.fail("a dead server must not be yielded")


def test_server_that_never_gets_healthy_times_out_and_is_stopped(stand_in, monkeypatch) -> None:
    stand_in(SILENT)
    started = []
    real_popen = server_mod.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(server_mod.subprocess, "Popen", popen)
    with pytest.raises(ServerError, match="not healthy after 1 s"):
        with vllm_server("m", startup_timeout=1):
            pytest.fail("an unhealthy server must not be yielded")
    assert _group_is_gone(started[0].pid)


def test_katas_vllm_without_vllm_names_the_install(monkeypatch, capsys) -> None:
    from pytest_vllm_katas.live import vllm_cli

    monkeypatch.setattr(vllm_cli, "_installed_vllm_version", lambda: None)
    assert vllm_cli.main(["--version"]) == 2
    assert "pip install" in capsys.readouterr().err
