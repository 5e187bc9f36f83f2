"""The sandbox contains what HumanEval completions might do, layer by layer."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from ecotune.sandbox import run_program, sandbox_python

ROOT_ISOLATION = os.geteuid() == 0 and sandbox_python()[1]


def test_correct_program_passes():
    res = run_program("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n")
    assert res.passed and res.status == "passed"


def test_failing_assert_fails():
    res = run_program("assert 1 == 2, 'nope'")
    assert not res.passed and res.status == "failed" and "nope" in res.stderr_tail


def test_infinite_loop_times_out():
    res = run_program("while True:\n    pass\n", timeout_s=1.5)
    assert not res.passed and res.status == "timeout"


def test_unbounded_allocation_fails():
    res = run_program("x = []\nwhile True:\n    x.append(' ' * 10**7)\n", memory_mb=256)
    assert not res.passed and res.status in ("memory", "failed")


@pytest.mark.parametrize("guard", [True, False] if ROOT_ISOLATION else [True])
def test_fork_bomb_fails_and_runner_survives(guard):
    res = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=5, guard=guard)
    assert not res.passed
    assert run_program("assert True").passed  # the runner is unharmed


@pytest.mark.parametrize("guard", [True, False] if ROOT_ISOLATION else [True])
def test_write_outside_workdir_is_blocked(guard):
    target = Path(f"/tmp/escape-{uuid.uuid4().hex}")
    res = run_program(f"open({str(target)!r}, 'w').write('x')\n", guard=guard)
    assert not target.exists()
    if guard:
        assert not res.passed


def test_write_inside_workdir_is_allowed():
    assert run_program("open('f.txt', 'w').write('x')\nassert open('f.txt').read() == 'x'").passed


@pytest.fixture()
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    threading.Thread(target=lambda: srv.accept(), daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.mark.parametrize("guard", [True, False] if ROOT_ISOLATION else [True])
def test_socket_to_localhost_fails(listener, guard):
    code = f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {listener}))\n"
    assert not run_program(code, guard=guard).passed


def test_parent_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    code = "import os\nassert 'AWS_SECRET_ACCESS_KEY' not in os.environ\nassert 'very-secret' not in str(os.environ)\n"
    assert run_program(code).passed
