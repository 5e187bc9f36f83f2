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
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ecotune.process import ManagedProcess, free_port


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
        full_env = {**os.environ, **(env or {})}
        full_env.pop("MLFLOW_TRACKING_URI", None)
        # SIGTERM reaches the server's whole process group (uvicorn workers included)
        with ManagedProcess(cmd, log_path=Path(tmp) / "server.log", ready=f"{uri}/health",
                            name="mlflow server", env=full_env, cwd=tmp,
                            startup_timeout_s=startup_timeout_s, poll_s=0.3, stop_grace_s=10.0):
            yield uri
