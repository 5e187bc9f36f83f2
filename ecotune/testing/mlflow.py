"""A real ``mlflow server`` for integration tests (and local experiments).

:func:`start_mlflow_server` runs the tracking server as a subprocess with a throw-away
SQLite backend store and yields its URI. Artifacts are *proxied* by default
(``--serve-artifacts --artifacts-destination <artifact_root>``): clients upload and
download through the server's ``mlflow-artifacts:/`` API, so only the server needs the
S3 endpoint and credentials, the way a shared team server is deployed. With
``serve_artifacts=False`` the root becomes ``--default-artifact-root`` and clients write
to it directly (then they need ``MLFLOW_S3_ENDPOINT_URL`` and AWS credentials too).

Example:
    >>> with start_mlflow_server(str(tmp_path / "artifacts"), {}) as uri:   # doctest: +SKIP
    ...     MlflowClient(uri).search_experiments()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(uri: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Poll ``<uri>/health`` until it answers OK; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{uri}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server not healthy after {timeout_s:.0f}s:\n{_tail(log)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group (uvicorn workers included), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


@contextmanager
def start_mlflow_server(
    artifact_root: str,
    env: Mapping[str, str] | None = None,
    *,
    serve_artifacts: bool = True,
    port: int | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Run ``mlflow server`` on 127.0.0.1 with one worker; yield ``http://127.0.0.1:<port>``.

    Args:
        artifact_root: ``s3://bucket/prefix`` or a local directory for artifacts.
        env: Extra environment for the server, e.g. ``MLFLOW_S3_ENDPOINT_URL``,
            ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` for an S3 root.
        serve_artifacts: Proxy artifacts through the server (see module docstring).
        port: Port to bind; default a free one.
        startup_timeout_s: How long to wait for ``/health`` (about 10-25 s on 2 cores).
    """
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mlflow-server-") as tmp:
        if "://" not in artifact_root:
            Path(artifact_root).mkdir(parents=True, exist_ok=True)
            artifact_root = str(Path(artifact_root).resolve())
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        if serve_artifacts:
            cmd += ["--serve-artifacts", "--artifacts-destination", artifact_root]
        else:
            cmd += ["--no-serve-artifacts", "--default-artifact-root", artifact_root]
        log = Path(tmp) / "server.log"
        full_env = {**os.environ, **(env or {})}
        full_env.pop("MLFLOW_TRACKING_URI", None)
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=tmp, env=full_env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(uri, proc, startup_timeout_s, log)
            yield uri
        finally:
            _stop(proc)
