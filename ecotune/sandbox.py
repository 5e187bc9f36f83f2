"""Run untrusted generated code (HumanEval check programs) in a locked-down child process.

Layers, each independent of the others:

* a fresh process in its own session, killed as a whole process group on wall-clock timeout;
* resource limits: CPU seconds (``RLIMIT_CPU``), address space (``RLIMIT_AS``), file size
  (``RLIMIT_FSIZE``), open files, no core dumps;
* when run as root: a new, empty network namespace (``unshare(CLONE_NEWNET)``: no interface
  is up, so even 127.0.0.1 is unreachable); a switch to a throwaway unprivileged uid with
  ``RLIMIT_NPROC=1`` so the child cannot fork (root ignores ``RLIMIT_NPROC``) nor write any
  file it does not own; and a private mount namespace whose ``/tmp``, ``/var/tmp`` and
  ``/dev/shm`` (the places any uid may write) are fresh tmpfs mounts that vanish with it;
* inside the child, a Python audit hook (installed before the untrusted code runs, and
  irremovable) that refuses sockets, forks, ``exec``/``spawn``/``system``, ``ctypes`` and any
  file write or delete outside the working directory;
* a throwaway temp working directory, an environment without the parent's variables
  (no secrets), ``python -I -B`` (isolated mode, no bytecode writes).

This is defence in depth for benchmark code, not a security boundary for hostile users:
run evaluation pods with their own container limits as well.
"""

from __future__ import annotations

import ctypes
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory", "error"]

_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 16384, 1 << 18
_SCRATCH_DIRS = (b"/tmp", b"/var/tmp", b"/dev/shm")  # world-writable: hidden behind tmpfs
_EXIT_MEMORY = 3
_EXIT_BLOCKED = 4

# Runs in the child before the untrusted program. Kept tiny and dependency-free.
_GUARD = r"""
import os, sys
_root = os.path.realpath(os.getcwd())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENY = ("socket.", "os.fork", "os.forkpty", "os.exec", "os.spawn", "os.posix_spawn",
         "os.system", "os.kill", "os.killpg", "subprocess.", "ctypes.", "pty.", "os.setuid")
_FS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
       "os.truncate", "os.chmod", "os.chown", "shutil.rmtree", "os.utime")

def _inside(path):
    try:
        p = os.fsdecode(path) if not isinstance(path, int) else None
    except Exception:
        return False
    if p is None:
        return True
    return os.path.realpath(os.path.join(_root, p)).startswith(_root + os.sep)

def _hook(event, args):
    if event.startswith(_DENY):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE)
        if writing and path is not None and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} is not allowed")
    elif event in _FS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError(f"sandbox: {event} outside the working dir")

sys.addaudithook(_hook)
with open("program.py", encoding="utf-8") as _f:
    _src = _f.read()
try:
    exec(compile(_src, "program.py", "exec"), {"__name__": "__main__"})
except MemoryError:
    os._exit(EXIT_MEMORY)
except PermissionError as e:
    if str(e).startswith("sandbox:"):
        print(e, file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_BLOCKED)
    raise
""".replace("EXIT_MEMORY", str(_EXIT_MEMORY)).replace("EXIT_BLOCKED", str(_EXIT_BLOCKED))


_PLAIN = "exec(compile(open('program.py', encoding='utf-8').read(), 'program.py', 'exec'))"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program: ``passed`` iff it exited 0 within its limits."""

    passed: bool
    status: Status
    stderr_tail: str = ""
    returncode: int | None = None


def _world_runnable(path: str) -> bool:
    """Whether a user other than root can execute ``path`` (every folder on it searchable)."""
    p = os.path.realpath(path)
    try:
        if not os.stat(p).st_mode & 0o001:
            return False
        d = os.path.dirname(p)
        while True:
            if not os.stat(d).st_mode & 0o001:
                return False
            if d == "/":
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def sandbox_python() -> tuple[str, bool]:
    """The interpreter for sandboxed programs and whether it can run as an unprivileged uid.

    ``$ECOTUNE_SANDBOX_PYTHON`` wins; else this interpreter if any user may run it; else the
    system ``/usr/bin/python3`` (a pyenv/uv interpreter under ``/root`` is unreachable for
    other uids); else this interpreter, without the uid switch.
    """
    env = os.environ.get("ECOTUNE_SANDBOX_PYTHON")
    if env:
        return env, _world_runnable(env)
    for cand in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        if _world_runnable(cand):
            return cand, True
    return sys.executable, False


def _limits(timeout_s: float, memory_mb: int, isolate: bool, drop_uid: bool):
    cpu = max(1, int(timeout_s + 0.999))
    mem = memory_mb * 1024 * 1024
    uid = random.randrange(200_000, 900_000)  # a fresh uid: its RLIMIT_NPROC count is ours alone
    is_root = os.geteuid() == 0
    drop = isolate and is_root and drop_uid

    def preexec() -> None:  # runs in the child between fork and exec
        if isolate and is_root:  # best effort: each step fails quietly without privileges
            libc = ctypes.CDLL(None, use_errno=True)
            libc.unshare(_CLONE_NEWNET)
            if libc.unshare(_CLONE_NEWNS) == 0 and drop:
                libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
                for d in _SCRATCH_DIRS:  # cwd (already entered) stays reachable beneath
                    libc.mount(b"tmpfs", d, b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=16m,mode=1777")
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        if drop:
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return preexec, (uid if drop else None)


def run_program(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    *,
    isolate: bool = True,
    guard: bool = True,
) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and report how it ended.

    Args:
        code: A complete program; it passes by exiting normally (status 0).
        timeout_s: Wall-clock limit; the CPU limit is the same number of seconds.
        memory_mb: Address-space limit of the child.
        isolate: Use the namespace/uid layer when running as root (tests turn it off to
            check the other layers alone).
        guard: Install the in-process audit hook (tests turn it off likewise).

    Returns:
        A :class:`SandboxResult`; ``status`` is ``passed``, ``failed`` (non-zero exit or a
        blocked operation), ``timeout``, ``memory`` or ``error`` (the sandbox itself failed).
    """
    workdir = tempfile.mkdtemp(prefix="ecotune-sandbox-")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(code)
        python, drop_uid = sandbox_python()
        preexec, uid = _limits(timeout_s, memory_mb, isolate, drop_uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(os.path.join(workdir, "program.py"), uid, uid)
        os.chmod(workdir, 0o700)
        env = {"LANG": "C.UTF-8", "HOME": workdir, "PATH": "/usr/bin:/bin"}
        if guard:
            argv = [python, "-I", "-B", "-c", _GUARD]
        else:
            argv = [python, "-I", "-B", "-c", _PLAIN]
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=preexec, close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            return SandboxResult(False, "error", f"sandbox could not start: {e}")
        try:
            _, err = proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            _, err = proc.communicate()
            timed_out = True
        _kill_group(proc.pid)  # stragglers that escaped to the group
        tail = err.decode("utf-8", "replace")[-2000:]
        return SandboxResult(proc.returncode == 0 and not timed_out,
                             _status(proc.returncode, timed_out, tail), tail, proc.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _status(rc: int | None, timed_out: bool, tail: str) -> Status:
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if rc == 0:
        return "passed"
    if rc == _EXIT_MEMORY or "MemoryError" in tail:
        return "memory"
    return "failed"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already (or was never ours): nothing left to kill
