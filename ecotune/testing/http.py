"""A quiet JSON request handler for loopback API servers in tests (the KFP v2beta1 API the
submitter talks to, and the like): subclasses add ``do_GET``/``do_POST`` and answer with
:meth:`JsonHandler.reply`."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """``reply(obj, code)`` writes ``obj`` as JSON; requests are not logged."""

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def reply(self, obj: Any, code: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
