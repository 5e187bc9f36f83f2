"""A real HTTP server on 127.0.0.1 that plays back scripted behaviours of an
OpenAI-compatible endpoint (429, 503, malformed JSON, dropped connections, slow answers),
for the engine tests (test_engine_unit)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "m"


class Script:
    """Scripted server state: queued actions, recorded requests, in-flight counter."""

    def __init__(self) -> None:
        self.actions: list[tuple[Any, ...]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self.tokenize = True

    def next_action(self) -> tuple[Any, ...]:
        with self.lock:
            return self.actions.pop(0) if self.actions else ("ok",)


def _completion_body(path: str, req: dict[str, Any]) -> dict[str, Any]:
    n = int(req.get("n", 1))
    chat = path.endswith("chat/completions")
    prompt = " ".join(m["content"] for m in req["messages"]) if chat else req["prompt"]
    choices = [
        {"index": i, "finish_reason": "length",
         **({"message": {"role": "assistant", "content": f"a{i}"}} if chat else {"text": f"a{i}"})}
        for i in range(n)
    ]  # fmt: skip
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 2 * n}
    return {"id": "x", "object": "text_completion", "choices": choices[::-1], "usage": usage}


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                self._send(200, json.dumps({"data": [{"id": MODEL}]}).encode())
            else:
                self._send(404, b'{"detail": "Not Found"}')

        def do_POST(self) -> None:  # noqa: N802
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append((self.path, req))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                self._serve(req)
            finally:
                with script.lock:
                    script.in_flight -= 1

        def _serve(self, req: dict[str, Any]) -> None:
            if self.path == "/tokenize":
                if not script.tokenize:
                    self._send(404, b'{"detail": "Not Found"}')
                    return
                text = req.get("prompt") or " ".join(m["content"] for m in req["messages"])
                self._send(200, json.dumps({"count": len(text.split()), "tokens": []}).encode())
                return
            action = script.next_action()
            kind = action[0]
            if script.delay_s:
                time.sleep(script.delay_s)
            if kind == "ok":
                self._send(200, json.dumps(_completion_body(self.path, req)).encode())
            elif kind == "status":
                self._send(action[1], action[2].encode(), action[3] if len(action) > 3 else None)
            elif kind == "malformed":
                self._send(200, b'{"choices": [ {"text": "trunc')
            elif kind == "nousage":
                self._send(200, b'{"choices": [{"index": 0, "text": "x"}]}')
            elif kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif kind == "sleep":
                time.sleep(action[1])
                self._send(200, json.dumps(_completion_body(self.path, req)).encode())
            else:  # pragma: no cover
                raise AssertionError(kind)

    return Handler


@contextmanager
def serve() -> Iterator[tuple[str, Script]]:
    """A scripted server on a free port: its base URL and its script, shut down after."""
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
