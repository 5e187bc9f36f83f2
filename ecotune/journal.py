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

A journal URI may end in ``#run=<key>``: one pipeline run's view of a study journal that
several runs continue (:class:`RunJournal`; see :mod:`ecotune.continuation`). ``#after=<key>``
names the previous run of a study and changes nothing here.
"""

from __future__ import annotations

import json
import os
import re
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

    def first(self) -> dict[str, Any] | None:
        """The first record written (a study's header), reading as little as possible."""
        ...


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

    def first(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with self.path.open("rb") as f:
            line = f.readline()
        if not line.endswith(b"\n"):
            return None  # empty, or a torn first record
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise JournalError(f"{self.path}: corrupt first record: {e}") from e


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

    def first(self) -> dict[str, Any] | None:
        # object names start with the writer's time_ns: the first name is the first record,
        # unless writers' clocks disagree; a header not found there is looked for in all
        keys = [k for k in self.store.list(self.prefix) if k.endswith(".json")]
        if not keys:
            return None
        try:
            rec = json.loads(self.store.read_bytes(keys[0]))
        except json.JSONDecodeError as e:
            raise JournalError(f"{self.uri}: corrupt record {keys[0]}: {e}") from e
        if rec.get("type") == "study":
            return rec
        recs = self.records()
        return next((r for r in recs if r.get("type") == "study"), recs[0] if recs else None)


#: record types that belong to one pipeline run of a study, not to the study: the run's
#: rounds, its ``stop`` and its ``final`` summary
RUN_SCOPED = frozenset({"round", "stop", "final"})


class RunJournal:
    """One pipeline run's view of a study journal that several runs continue.

    The study's records (header, asks, holds, instances, tells) are shared: every run
    replays them all, so a continuation run is the same study. The run-scoped records
    (:data:`RUN_SCOPED`) are this run's own: they are stored under ``<key>@<run>`` and
    read back under their plain key, and other runs' are not shown, so a continuation's
    round 0 is not the first run's round 0.

    Args:
        inner: the study journal.
        run: this run's key (its KFP run id).
        uri: the URI it was opened with (``<study journal>#run=<run>``).
    """

    def __init__(self, inner: Journal, run: str, uri: str):
        self.inner, self.run, self.uri = inner, run, uri

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("type") in RUN_SCOPED:
            stored = self.inner.append({**record, "key": f"{record['key']}@{self.run}",
                                        "run": self.run})
            return {**stored, "key": record["key"]}
        return self.inner.append(record)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for r in self.inner.records():
            if r.get("type") in RUN_SCOPED:
                if r.get("run") != self.run:
                    continue
                r = {**r, "key": str(r["key"]).removesuffix(f"@{self.run}")}
            out.append(r)
        return out

    def first(self) -> dict[str, Any] | None:
        return self.inner.first()


_FRAGMENT = re.compile(r"^(?:(?:run|after)=[A-Za-z0-9._:-]+)(?:&(?:run|after)=[A-Za-z0-9._:-]+)*$")


def split_uri(uri: str) -> tuple[str, dict[str, str]]:
    """``(journal location, {run, after})`` of a journal URI. A ``#`` that is not followed
    by ``run=``/``after=`` parameters is part of the location (a local path may hold one)."""
    head, sep, frag = str(uri).rpartition("#")
    if not sep or not _FRAGMENT.match(frag):
        return str(uri), {}
    return head, dict(p.split("=", 1) for p in frag.split("&"))


def with_params(location: str, **params: str | None) -> str:
    """A journal URI: ``location`` with the given ``run``/``after`` parameters (None: none)."""
    frag = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v)
    uri = f"{location}#{frag}" if frag else location
    if frag and split_uri(uri) != (location, {k: v for k, v in params.items() if v}):
        raise ValueError(f"cannot carry {params} in a journal URI (letters, digits, ._:-)")
    return uri


def open_journal(uri: str | os.PathLike[str]) -> Journal:
    """Open (or create on first append) the journal at a local path or ``s3://`` prefix;
    with ``#run=<key>``, that run's :class:`RunJournal` view of it."""
    location, params = split_uri(str(uri))
    inner: Journal = (StoreJournal(open_store(location)) if is_s3(location)
                      else LocalJournal(location))
    return RunJournal(inner, params["run"], str(uri)) if "run" in params else inner


def journal_header(uri: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``study`` header of the journal at ``uri``, or None when it has none (yet)."""
    first = open_journal(uri).first()
    return first if first is not None and first.get("type") == "study" else None


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
