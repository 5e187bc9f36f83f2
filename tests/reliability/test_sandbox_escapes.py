"""Hostile programs in the sandbox: each is stopped, scored as failed, the runner unharmed."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from ecotune.sandbox import run_program

ESCAPES = {
    "infinite_loop": ("while True:\n    pass\n", {"timeout_s": 1.5}),
    "unbounded_allocation": ("x = []\nwhile True:\n    x.append(' ' * 10**7)\n",
                             {"memory_mb": 256, "timeout_s": 5}),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", {"timeout_s": 3}),
    "socket": (None, {"timeout_s": 3}),
    "write_outside": (None, {"timeout_s": 3}),
}


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_escape_is_stopped_and_scored_failed(kind: str, counts) -> None:
    code, kw = ESCAPES[kind]
    target = Path(f"/tmp/ecotune-escape-{uuid.uuid4().hex}")
    srv = None
    if kind == "write_outside":
        code = f"open({str(target)!r}, 'w').write('x')\n"
    if kind == "socket":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(0.2)
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', "
                f"{srv.getsockname()[1]}), timeout=1)\ns.sendall(b'leak')\n")
    try:
        res = run_program(code, **kw)
        assert not res.passed and res.status != "passed", res
        if kind == "write_outside":
            assert not target.exists()
        if srv is not None:  # nothing got through
            try:
                conn, _ = srv.accept()
                conn.settimeout(0.2)
                assert conn.recv(16) == b"", "the sandboxed program sent data"
            except TimeoutError:
                pass
    finally:
        if srv is not None:
            srv.close()
        target.unlink(missing_ok=True)
    # the runner is unharmed: a correct program still passes at once
    assert run_program("assert sum(range(4)) == 6\n").passed
    counts["sandbox_escapes_stopped"] += 1
