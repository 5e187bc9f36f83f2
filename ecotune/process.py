"""Managed server processes: start in their own process group, wait until ready, stop.

Servers EcoTune starts itself (the embedded vLLM, the pipeline evaluator's ``vllm serve``,
the MLflow and S3 servers of the tests) are all run the same way by
:class:`ManagedProcess`:

* the command runs in a new session (its own process group), its output appended to a log
  file, so stopping it also stops the workers it forks (vLLM's engine core, uvicorn's
  workers) and a failure can be explained from the log;
* :meth:`ManagedProcess.start` polls a readiness probe (a URL that must answer 200, or a
  callable) with ``tenacity`` until it passes; if the process exits first, or the probe
  never passes in time, :class:`ProcessError` says so with the tail of the log;
* :meth:`ManagedProcess.stop` sends SIGTERM to the group, then SIGKILL after a grace period.

Example:
    >>> port = free_port()
    >>> cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    >>> with ManagedProcess(cmd, log_path="http.log", name="http.server",
    ...                     ready=f"http://127.0.0.1:{port}/"):  # doctest: +SKIP
    ...     httpx.get(f"http://127.0.0.1:{port}/").status_code
    200
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed


class ProcessError(RuntimeError):
    """A managed process exited before it was ready, or did not become ready in time."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports on ``host`` that were free a moment ago.

    All ``n`` sockets are held open together, so the ports differ from each other (a
    server that needs several ports, like SeaweedFS, gets distinct ones).
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    return free_ports(1, host)[0]


def url_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET url`` answers 200 (a refused or failed connection is "not yet")."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def log_tail(path: Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or why there are none."""
    if path is None:
        return "(output not captured)"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


class ManagedProcess:
    """A server subprocess in its own process group, as a context manager.

    Args:
        command: The command line.
        log_path: File the process's stdout and stderr are appended to; ``None`` lets the
            process write to this one's (the pipeline's pod log).
        ready: What "ready" means: a URL that must answer 200, or a callable that returns
            True once the server serves (it should return False, not raise, while the
            server is still starting).
        name: How messages call the process (``"vLLM"``, ``"mlflow server"``).
        env: The process's whole environment (default: this process's).
        cwd: Its working directory.
        startup_timeout_s: How long :meth:`start` waits for ``ready``.
        poll_s: Seconds between two readiness probes.
        stop_grace_s: Seconds between SIGTERM and SIGKILL in :meth:`stop`.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: str | os.PathLike[str] | None,
        ready: str | Callable[[], bool],
        name: str = "process",
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 120.0,
        poll_s: float = 1.0,
        stop_grace_s: float = 10.0,
    ):
        self.argv = [str(c) for c in command]
        self.log_path = Path(log_path) if log_path is not None else None
        self.ready = ready
        self.name = name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.startup_timeout_s = startup_timeout_s
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process and block until it is ready (stopping it if it never is)."""
        if self.proc is not None:
            raise ProcessError(f"{self.name} is already started (pid {self.proc.pid})")
        self.proc = self._spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.log_path is None:
            return subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                    start_new_session=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the handle
            return subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.cwd, start_new_session=True)

    def wait_ready(self) -> None:
        """Poll the readiness probe every ``poll_s`` until it passes.

        Raises:
            ProcessError: the process exited first, or ``startup_timeout_s`` ran out
                (the message holds the tail of the log).
        """
        probe = self.ready if callable(self.ready) else _url_probe(self.ready)

        def attempt() -> bool:
            code = self.returncode
            if code is not None:
                raise ProcessError(f"{self.name} exited with code {code} before it was ready; "
                                   f"{self._log_note()}")
            return probe()

        def timed_out(state: RetryCallState) -> bool:
            raise ProcessError(f"{self.name} did not become ready within "
                               f"{self.startup_timeout_s:.0f}s; {self._log_note()}")

        Retrying(retry=retry_if_result(lambda ok: not ok), wait=wait_fixed(self.poll_s),
                 stop=stop_after_delay(self.startup_timeout_s), retry_error_callback=timed_out,
                 reraise=True)(attempt)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s`` (default ``stop_grace_s``).

        A process that already exited is left alone (and forgotten, like a stopped one).
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        grace = self.stop_grace_s if grace_s is None else grace_s
        for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # the whole group is gone already: nothing to stop
                return
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
        raise ProcessError(f"{self.name} (pid {proc.pid}) survived SIGKILL")

    # -- state ----------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """The exit code, or None while it runs (or before it was started)."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        return log_tail(self.log_path, lines)

    def _log_note(self) -> str:
        return f"log {self.log_path}:\n{self.log_tail()}" if self.log_path else "output above"

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _url_probe(url: str) -> Callable[[], bool]:
    return lambda: url_answers(url)
