"""A fault-injecting OpenAI-compatible HTTP server on 127.0.0.1 (for reliability tests).

It serves ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and vLLM's
``/tokenize`` over real sockets (a threaded ``http.server``), answers with plausible
completions carrying ``usage`` (tokens = whitespace-split words, as :class:`FakeEngine`),
and injects faults from a configurable plan.

It **bills like a real server**: whatever it generates is billed, whether or not the client
ever sees the answer. Faults that strike after generation (billed):

* ``timeout``: generate, then answer only after the client's timeout,
* ``drop``: generate, then close the connection without an answer,
* ``500``: generate, then answer 500,
* ``malformed``: generate, then a 200 whose body is not JSON,
* ``nousage``: generate, then a 200 JSON completion without ``usage``,
* ``badchoice``: generate, then a 200 with ``usage`` but no usable choice;

faults that refuse before any work (billed nothing): ``429`` and ``503`` (optionally with
``Retry-After``); and ``ok``, a normal answer.

Faults apply to generation requests only (``/v1/completions`` and chat); ``/tokenize`` and
``/v1/models`` answer normally unless ``fault_all=True``. ``models`` sets the served list
(a wrong list makes ``engine.check()`` fail). Every request is counted, and every fault and
every billed token recorded (``stats["billed_tokens"]``, the server's true bill), so tests
can check the client's accounting against it.

Run standalone (for subprocess tests)::

    python -m ecotune.testing.faults --port 0 --plan 429,ok,500,ok --random 0.3 --seed 1

prints ``READY http://127.0.0.1:PORT`` on stdout when listening.

Example:
    >>> with FaultServer(plan=["429", "ok"]) as srv:           # doctest: +SKIP
    ...     eng = OpenAIEngine(srv.url, "fault-model", backoff_base_s=0.01)
    ...     eng.generate(["1 + 1 ="], SamplingParams(max_tokens=2))
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "503", "timeout", "drop", "malformed", "nousage", "badchoice")
#: Faults that strike after the completion was generated: the server bills them.
BILLED_FAULTS = frozenset({"500", "timeout", "drop", "malformed", "nousage", "badchoice"})
MODEL = "fault-model"
_NUM = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*$")


def _answer(prompt: str, max_tokens: int) -> str:
    """A plausible answer: the result of a trailing ``a op b =`` if there is one."""
    m = _NUM.search(prompt.strip()) or _NUM.search(prompt.strip().splitlines()[-1]
                                                   if prompt.strip() else "")
    if m:
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        text = str(a + b if op == "+" else a - b if op == "-" else a * b)
    else:
        text = "42 is the answer"
    return " ".join(text.split()[:max(1, max_tokens)])


def _words(text: str) -> int:
    return len(text.split())


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients killed mid-request (the point of these tests) are not errors


class FaultServer:
    """Threaded fault-injecting server; use as a context manager or ``start()``/``stop()``.

    Args:
        plan: Faults for the first generation requests, in order (``"ok"`` for none);
            after the plan runs out, ``random_rate`` applies.
        random_rate: Probability of a random fault (from ``random_faults``) per request.
        random_faults: Faults drawn at random.
        seed: Seed of the random draws.
        models: Served model ids (``/v1/models``).
        timeout_sleep_s: How long a ``timeout`` fault sleeps (longer than the client's).
        retry_after: ``Retry-After`` header value sent with 429/503 (None: none).
        latency_s: Delay before every generation answer (lets tests kill mid-request).
        fault_all: Apply faults to ``/tokenize`` and ``/v1/models`` too.
        port: 0 picks a free port.

    Attributes:
        stats: ``Counter`` of ``requests``, ``completions_ok``, each fault name, and
            ``billed_tokens`` (prompt + completion tokens of every generated completion,
            answered or not: the true bill).
        auth_headers: Every ``Authorization`` header seen (to check a key was sent).
    """

    def __init__(self, plan: Iterable[str] = (), *, random_rate: float = 0.0,
                 random_faults: Iterable[str] = FAULTS, seed: int = 0,
                 models: Iterable[str] = (MODEL,), timeout_sleep_s: float = 1.5,
                 retry_after: str | None = None, fault_all: bool = False, port: int = 0,
                 latency_s: float = 0.0):
        self.plan = [str(p) for p in plan]
        for p in self.plan:
            if p != "ok" and p not in FAULTS:
                raise ValueError(f"unknown fault {p!r}; known: ok, {', '.join(FAULTS)}")
        self.random_rate = float(random_rate)
        self.random_faults = [str(f) for f in random_faults]
        self.rng = random.Random(seed)
        self.models = list(models)
        self.timeout_sleep_s = timeout_sleep_s
        self.retry_after = retry_after
        self.fault_all = fault_all
        self.latency_s = float(latency_s)
        self.stats: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fault-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def faults_injected(self) -> int:
        return sum(self.stats[f] for f in FAULTS)

    def next_fault(self) -> str:
        with self._lock:
            if self.plan:
                return self.plan.pop(0)
            if self.random_rate > 0 and self.rng.random() < self.random_rate:
                return self.rng.choice(self.random_faults)
            return "ok"

    # -- request handling ------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                self._send(code, json.dumps(obj).encode(), headers=headers)

            def _refuse(self, fault: str) -> bool:
                """Apply a fault that refuses before any work; True when it did."""
                if fault not in ("429", "503"):
                    return False
                with srv._lock:
                    srv.stats[fault] += 1
                hdr = {"Retry-After": srv.retry_after} if srv.retry_after else None
                self._json(int(fault), {"error": {"message": f"injected {fault}"}}, hdr)
                return True

            def _deliver(self, fault: str, out: dict[str, Any]) -> None:
                """Answer a generated (and billed) completion the way ``fault`` says."""
                if fault != "ok":
                    with srv._lock:
                        srv.stats[fault] += 1
                if fault == "timeout":
                    time.sleep(srv.timeout_sleep_s)
                    self.close_connection = True
                    self._json(200, out)
                elif fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                elif fault == "500":
                    self._json(500, {"error": {"message": "injected 500 after generation"}})
                elif fault == "malformed":
                    self._send(200, b'{"choices": [ {"text": "unterminated')
                elif fault == "nousage":
                    self._json(200, {k: v for k, v in out.items() if k != "usage"})
                elif fault == "badchoice":
                    self._json(200, {**out, "choices": [{"index": 0}]})
                else:
                    with srv._lock:
                        srv.stats["completions_ok"] += 1
                    self._json(200, out)

            def _answer_plain(self, out: dict[str, Any]) -> None:
                """A request that bills nothing; faulted only with ``fault_all``."""
                fault = srv.next_fault() if srv.fault_all else "ok"
                if fault == "ok":
                    self._json(200, out)
                elif not self._refuse(fault):
                    self._deliver(fault, out)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b"{}"
                try:
                    data = json.loads(raw)
                    return data if isinstance(data, dict) else {}
                except ValueError:
                    return {}

            def do_GET(self) -> None:  # noqa: N802
                with srv._lock:
                    srv.stats["requests"] += 1
                    srv.auth_headers.append(self.headers.get("Authorization", ""))
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._answer_plain({"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "faults"} for m in srv.models]})
                elif self.path.rstrip("/") == "/health":
                    self._send(200, b"", "text/plain")
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                with srv._lock:
                    srv.stats["requests"] += 1
                    srv.auth_headers.append(self.headers.get("Authorization", ""))
                path = self.path.rstrip("/")
                chat = path == "/v1/chat/completions"
                if path == "/tokenize":
                    text = (body.get("prompt") if "prompt" in body else
                            "\n".join(str(m.get("content", "")) for m in body.get("messages", [])))
                    self._answer_plain({"count": _words(str(text)), "max_model_len": 2048})
                    return
                if path not in ("/v1/completions", "/v1/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if body.get("model") not in srv.models:
                    self._json(404, {"error": {"message": f"model {body.get('model')!r} "
                                                          "does not exist"}})
                    return
                fault = srv.next_fault()
                if self._refuse(fault):
                    return
                if srv.latency_s:
                    time.sleep(srv.latency_s)
                prompt = (str(body.get("prompt", "")) if not chat else
                          "\n".join(str(m.get("content", "")) for m in body.get("messages", [])))
                max_tokens = int(body.get("max_tokens") or 16)
                n = int(body.get("n") or 1)
                texts = [_answer(prompt, max_tokens) for _ in range(n)]
                pt, ct = _words(prompt), sum(_words(t) for t in texts)
                with srv._lock:  # generated: billed, whatever happens to the answer
                    srv.stats["billed_tokens"] += pt + ct
                choices = [({"index": i, "message": {"role": "assistant", "content": t},
                             "finish_reason": "stop"} if chat else
                            {"index": i, "text": t, "finish_reason": "stop"})
                           for i, t in enumerate(texts)]
                self._deliver(fault, {
                    "id": "cmpl-fault", "object": "text_completion", "model": body.get("model"),
                    "choices": choices,
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                              "total_tokens": pt + ct}})

        return Handler


@contextmanager
def fault_server(**kwargs: Any) -> Iterator[FaultServer]:
    """``with fault_server(plan=[...]) as srv: ...``"""
    srv = FaultServer(**kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ecotune.testing.faults")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--plan", default="", help="comma-separated faults for the first requests")
    ap.add_argument("--random", type=float, default=0.0, help="random fault rate afterwards")
    ap.add_argument("--faults", default=",".join(FAULTS), help="faults drawn at random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=MODEL)
    ap.add_argument("--timeout-sleep", type=float, default=1.5)
    ap.add_argument("--latency", type=float, default=0.0)
    a = ap.parse_args(argv)
    srv = FaultServer([p for p in a.plan.split(",") if p], random_rate=a.random,
                      random_faults=[f for f in a.faults.split(",") if f], seed=a.seed,
                      models=a.models.split(","), timeout_sleep_s=a.timeout_sleep, port=a.port,
                      latency_s=a.latency)
    print(f"READY {srv.url}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps(dict(srv.stats)), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
