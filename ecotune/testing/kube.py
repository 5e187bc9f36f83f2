"""A loopback Kubernetes API for tests of :mod:`ecotune.run_engine`: Deployments (apps/v1)
and Services (v1) in memory, over real HTTP, so the official ``kubernetes`` client runs its
own request and error paths.

It answers what the run engine calls (create → 201, or 409 when the name exists; read the
Deployment's status; delete → 200, or 404) and records every request. A Deployment reports
``readyReplicas: 1`` from its ``ready_after``-th status read on (0: never ready).

Example:
    >>> with KubeApi(ready_after=2) as api:                       # doctest: +SKIP
    ...     RunEngine(spec, api.client()).start(poll_s=0.01)
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ecotune.testing.http import JsonHandler

_PATH = re.compile(r"^/(?:api/v1|apis/apps/v1)/namespaces/(?P<ns>[^/]+)/"
                   r"(?P<kind>deployments|services)(?:/(?P<name>[^/]+))?(?P<status>/status)?$")


class KubeApi:
    """The fake API server; a context manager that serves on 127.0.0.1."""

    def __init__(self, ready_after: int = 1) -> None:
        self.ready_after = ready_after
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self._reads: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KubeApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server."""
        from kubernetes import client

        cfg = client.Configuration(host=self.url)
        return client.ApiClient(cfg)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig naming this server (for code that loads its own config)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": namespace}}]}))
        return path

    def _handle(self, method: str, path: str, body: dict[str, Any] | None
                ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, path, body))
            m = _PATH.match(path.split("?", 1)[0])
            if not m:
                return 404, _status(404, f"no route {path}")
            ns, kind, name = m["ns"], m["kind"], m["name"]
            if method == "POST" and not name:
                name = body["metadata"]["name"]
                if (ns, kind, name) in self.objects:
                    return 409, _status(409, f"{kind} {name} already exists", "AlreadyExists")
                self.objects[(ns, kind, name)] = body
                return 201, body
            obj = self.objects.get((ns, kind, name))
            if obj is None:
                return 404, _status(404, f"{kind} {name} not found", "NotFound")
            if method == "DELETE":
                del self.objects[(ns, kind, name)]
                return 200, _status(200, "deleted", "Success")
            if method == "GET" and m["status"]:
                n = self._reads[(ns, name)] = self._reads.get((ns, name), 0) + 1
                ready = 1 if self.ready_after and n >= self.ready_after else 0
                return 200, {**obj, "status": {"replicas": 1, "readyReplicas": ready}}
            if method == "GET":
                return 200, obj
            return 405, _status(405, f"{method} not served")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(JsonHandler):
            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                code, out = api._handle(self.command, self.path, body)
                self.reply(out, code)

            do_GET = do_POST = do_DELETE = _any

        return Handler


def _status(code: int, message: str, reason: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure" if code >= 400
            else "Success", "message": message, "reason": reason, "code": code}
