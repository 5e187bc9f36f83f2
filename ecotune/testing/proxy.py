"""A TCP forwarder that can be taken down and brought back (for reliability tests): it
makes a real server (S3, MLflow) unreachable for a while without stopping it."""

from __future__ import annotations

import threading
from typing import Any


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> target that can be taken down and brought back
    (``down()`` closes every open connection and the listener, so new connections are
    refused; ``up()`` listens again on the same port), to
    make a real server (S3, MLflow) unreachable for a while without stopping it."""

    def __init__(self, target_host: str, target_port: int, port: int = 0):
        import socket

        self.target = (target_host, int(target_port))
        self._lsock = socket.create_server(("127.0.0.1", port))
        self.port = int(self._lsock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._up = threading.Event()
        self._up.set()
        self._closed = False
        self._conns: set[Any] = set()
        self._lock = threading.Lock()
        self.outages = 0
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        from urllib.parse import urlparse

        u = urlparse(url)
        return cls(u.hostname or "127.0.0.1", int(u.port or 80))

    def _accept(self) -> None:
        import socket

        while not self._closed:
            lsock = self._lsock
            try:
                c, _ = lsock.accept()
            except OSError:
                if self._closed:
                    return
                self._up.wait()  # down: the listener is closed until up()
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns |= {c, u}
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns -= {src, dst}

    def down(self) -> None:
        import socket

        self._up.clear()
        self.outages += 1
        try:  # connections are refused while down
            self._lsock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def up(self) -> None:
        import socket

        if self._up.is_set():
            return
        self._lsock = socket.create_server(("127.0.0.1", self.port))
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._up.set()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
