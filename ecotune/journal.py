"""The study journal: an append-only record of every ask, instance and tell.

The journal is the single source of truth for a study. Optimizers, the trial runner and
the pipeline components only append to it, and any of them can be rebuilt from it after a
crash. Every record carries a ``key`` that names what it records (``ask:7``,
``inst:7:mmlu-12``, ``tell:7``); readers keep the first record of each key, so re-running
a step that already wrote its record changes nothing.

Two layouts, one interface:

* a local path: one JSON line per record, appended with a single ``write`` and fsynced;
  a torn last line (a crash mid-write) is ignored on read and repaired on next append;
* ``s3://bucket/prefix``: one object per record (object puts are atomic), named by a
  time-sortable id, so concurrent writers (a pipeline's parallel evaluators) never clash.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from ecotune.storage import Store, is_s3, open_store


class JournalError(RuntimeError):
    """The journal cannot be read or does not belong to this study."""


class Journal(Protocol):
    uri: str

    def append(self, record: dict[str, Any]) -> dict[str, Any]: ...

    def records(self) -> list[dict[str, Any]]: ...


def _stamp(record: dict[str, Any]) -> dict[str, Any]:
    if "key" not in record or "type" not in record:
        raise ValueError("journal records need a 'type' and a 'key'")
    out = dict(record)
    out.setdefault("ts", time.time())
    out.setdefault("uid", uuid.uuid4().hex)
    return out


def _dedup(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r["key"] in seen:
            continue
        seen.add(r["key"])
        out.append(r)
    return out


class LocalJournal:
    """A JSON-lines file on local disk."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.uri = str(self.path)

    def _read_raw(self) -> tuple[list[dict[str, Any]], int]:
        """Records and the byte length of the intact part of the file."""
        if not self.path.exists():
            return [], 0
        data = self.path.read_bytes()
        records, good = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn tail from a crash mid-write
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                if good + len(line) == len(data):
                    break
                raise JournalError(f"{self.path}: corrupt record at byte {good}: {e}") from e
            records.append(rec)
            good += len(line)
        return records, good

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        rec = _stamp(record)
        line = (json.dumps(rec, sort_keys=True, default=_json_default) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            good = _intact_length(fd)
            if os.fstat(fd).st_size != good:
                os.ftruncate(fd, good)  # drop a torn tail before appending
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return rec

    def records(self) -> list[dict[str, Any]]:
        return _dedup(self._read_raw()[0])


def _intact_length(fd: int, chunk: int = 1 << 16) -> int:
    """Bytes up to and including the last newline: a torn tail is whatever follows it.
    Reads only the end of the file, so an append costs the same at any journal size."""
    end = os.fstat(fd).st_size
    pos = end
    while pos > 0:
        start = max(0, pos - chunk)
        data = os.pread(fd, pos - start, start)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


class StoreJournal:
    """One object per record in a :class:`~ecotune.storage.Store` (used for S3)."""

    def __init__(self, store: Store, prefix: str = ""):
        self.store = store
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"{store.uri.rstrip('/')}/{self.prefix}"

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        rec = _stamp(record)
        name = f"{self.prefix}{time.time_ns():020d}-{rec['uid'][:12]}.json"
        self.store.write_bytes(name, json.dumps(rec, sort_keys=True, default=_json_default).encode())
        return rec

    def records(self) -> list[dict[str, Any]]:
        out = []
        for key in self.store.list(self.prefix):
            if not key.endswith(".json"):
                continue
            try:
                out.append(json.loads(self.store.read_bytes(key)))
            except json.JSONDecodeError as e:
                raise JournalError(f"{self.uri}: corrupt record {key}: {e}") from e
        out.sort(key=lambda r: (r.get("ts", 0.0), r.get("uid", "")))
        return _dedup(out)


def open_journal(uri: str | os.PathLike[str]) -> Journal:
    """Open (or create on first append) the journal at a local path or ``s3://`` prefix."""
    uri = str(uri)
    if is_s3(uri):
        return StoreJournal(open_store(uri))
    return LocalJournal(uri)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
