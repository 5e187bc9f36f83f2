"""ManagedProcess: a real child server comes up, answers, and is stopped with its group."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from ecotune.process import ManagedProcess, ProcessError, free_port, free_ports

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(8)
    assert len(set(ports)) == 8 and all(1024 < p < 65536 for p in ports)
    assert isinstance(free_port(), int)


def test_http_server_starts_answers_and_stops(tmp_path):
    port = free_port()
    log = tmp_path / "logs" / "http.log"
    server = ManagedProcess([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            log_path=log, ready=f"http://127.0.0.1:{port}/", name="http.server",
                            cwd=tmp_path, startup_timeout_s=30, poll_s=0.1)
    with server:
        assert server.running and server.returncode is None
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        pid = server.proc.pid
    assert server.proc is None and not server.running
    assert _gone(pid)
    assert "GET / HTTP" in log.read_text()  # its output went to the log file
    server.stop()  # stopping twice is harmless


def test_child_that_exits_early_is_a_clear_error_with_the_log_tail(tmp_path):
    code = "import sys; print('bad flag --nope', flush=True); sys.exit(3)"
    server = ManagedProcess([PY, "-c", code], log_path=tmp_path / "x.log",
                            ready=f"http://127.0.0.1:{free_port()}/", name="toy server",
                            startup_timeout_s=30, poll_s=0.1)
    with pytest.raises(ProcessError, match=r"(?s)toy server exited with code 3 before it was "
                                           r"ready; log .*x\.log:\nbad flag --nope"):
        server.start()
    assert server.proc is None


def test_never_ready_times_out_and_the_process_is_stopped(tmp_path):
    server = ManagedProcess([PY, "-c", "import time; print('starting', flush=True); "
                                       "time.sleep(60)"],
                            log_path=tmp_path / "slow.log", ready=lambda: False, name="slow",
                            startup_timeout_s=1.0, poll_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(ProcessError, match=r"(?s)slow did not become ready within 1s; .*starting"):
        server.start()
    assert time.monotonic() - t0 < 15
    assert server.proc is None


def test_stop_kills_the_whole_group_and_escalates_to_sigkill(tmp_path):
    """The child ignores SIGTERM and forks a grandchild: SIGKILL to the group takes both."""
    pidfile = tmp_path / "grandchild.pid"
    code = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print("ready", flush=True)
        time.sleep(60)
    """)
    log = tmp_path / "stubborn.log"
    server = ManagedProcess([PY, "-c", code], log_path=log, name="stubborn",
                            ready=lambda: "ready" in log.read_text(), startup_timeout_s=30,
                            poll_s=0.1, stop_grace_s=0.5)
    server.start()
    pid, grandchild = server.proc.pid, int(pidfile.read_text())
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 8
    assert _gone(pid) and _gone(grandchild)


def test_starting_twice_is_refused(tmp_path):
    log = tmp_path / "t.log"
    server = ManagedProcess([PY, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                            log_path=log, ready=lambda: "up" in log.read_text(), poll_s=0.1)
    with server, pytest.raises(ProcessError, match="already started"):
        server.start()


def test_local_vllm_is_a_managed_process_that_reports_its_log(tmp_path):
    """LocalVLLM's start-up failure path, with a stand-in command instead of vLLM."""
    from ecotune.serve_local import LocalVLLM, ServeError

    class Broken(LocalVLLM):
        def command(self) -> list[str]:
            return [PY, "-c", "print('no config.json in model dir'); raise SystemExit(1)"]

    server = Broken(tmp_path / "model", log_path=tmp_path / "vllm.log", startup_timeout_s=30)
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert "--enable-prefix-caching" in LocalVLLM.command(server)
    with pytest.raises(ServeError, match=r"(?s)vLLM exited with code 1 .*no config.json"):
        server.start()
    assert server.proc is None


def test_pipeline_serve_vllm_starts_waits_and_stops(tmp_path, monkeypatch):
    """The GPU evaluator's ``serve_vllm``, with a stand-in ``vllm`` executable on PATH."""
    from components._common import serve_vllm

    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(textwrap.dedent(f"""\
        #!{PY}
        import http.server, sys
        port = int(sys.argv[sys.argv.index("--port") + 1])
        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()
        http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    """))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    port = free_port()
    from components.testing import study_config

    with serve_vllm(study_config(), port=port, timeout_s=30) as url:
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
