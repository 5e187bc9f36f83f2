"""Byte stores addressed by URI: a local folder or an ``s3://bucket/prefix``.

The core only knows :class:`Store`; the S3 implementation lives at the edge in
:mod:`ecotune.s3` and is imported only when an ``s3://`` URI is opened, so the
optimizer core never loads boto3.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    """A flat key -> bytes store. Writes of one key are atomic (all or nothing)."""

    uri: str

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...


class LocalStore:
    """A folder on disk; each write goes to a temp file renamed into place."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents and p != self.root.resolve():
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return p

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(k for k in keys if k.startswith(prefix))


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def open_store(uri: str | os.PathLike[str]) -> Store:
    """Open a store: ``s3://bucket/prefix`` (needs boto3) or a local folder."""
    uri = str(uri)
    if is_s3(uri):
        from ecotune.s3 import S3Store  # edge import: boto3 only when asked for

        return S3Store.from_uri(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return LocalStore(uri)
