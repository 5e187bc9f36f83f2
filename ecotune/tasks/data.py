"""Reading task data from a local folder, an ``s3://`` prefix or the Hugging Face hub.

Every reader raises :class:`~ecotune.tasks.base.TaskDataError` naming the file (and row)
for missing, empty or malformed data, so a bad data set fails at load time with a message a
user can act on, not with a ``KeyError`` deep inside a trial.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ecotune.storage import Store, is_s3, open_store
from ecotune.tasks.base import TaskDataError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> str:
    """``$ECOTUNE_DATA_DIR``, else ``../shared/data`` next to the repo, else an error."""
    env = os.environ.get("ECOTUNE_DATA_DIR")
    if env:
        return env
    guess = _REPO_ROOT.parent / "shared" / "data"
    if guess.is_dir():
        return str(guess)
    raise TaskDataError(
        "no task data folder: set ECOTUNE_DATA_DIR or pass data_path "
        f"(looked for {guess})"
    )


def task_path(data_path: str | None, *default: str) -> str:
    """``data_path`` when a config gives one, else ``default`` under :func:`default_data_dir`."""
    return data_path or join(default_data_dir(), *default)


def join(base: str, *parts: str) -> str:
    """Join URI/path parts with '/' (works for local paths and ``s3://``)."""
    out = str(base).rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def _split(uri: str) -> tuple[Store, str]:
    uri = str(uri)
    if is_s3(uri):
        head, _, name = uri.rstrip("/").rpartition("/")
        if head in ("s3:/", "s3:"):
            raise TaskDataError(f"{uri}: expected s3://bucket/[prefix/]file")
        return open_store(head), name
    p = Path(uri.removeprefix("file://"))
    return open_store(p.parent), p.name


def read_text(uri: str) -> str:
    """Whole file as UTF-8 text; a clear error if it is missing or empty."""
    store, name = _split(uri)
    try:
        data = store.read_bytes(name)
    except (FileNotFoundError, KeyError) as e:
        raise TaskDataError(f"{uri}: data file not found") from e
    except IsADirectoryError as e:
        raise TaskDataError(f"{uri}: is a folder, expected a file") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TaskDataError(f"{uri}: not UTF-8 text ({e})") from e
    if not text.strip():
        raise TaskDataError(f"{uri}: file is empty")
    return text


def list_files(folder: str, suffix: str = "") -> list[str]:
    """Names (relative to ``folder``) of files in it ending with ``suffix``, sorted."""
    store = open_store(folder)
    return [k for k in store.list("") if k.endswith(suffix)]


def read_jsonl(uri: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (``.gz`` allowed locally); each must hold ``required``."""
    if uri.endswith(".gz"):
        import gzip

        store, name = _split(uri)
        try:
            text = gzip.decompress(store.read_bytes(name)).decode("utf-8")
        except FileNotFoundError as e:
            raise TaskDataError(f"{uri}: data file not found") from e
        if not text.strip():
            raise TaskDataError(f"{uri}: file is empty")
    else:
        text = read_text(uri)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{uri}, row {n}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise TaskDataError(f"{uri}, row {n}: expected a JSON object")
        rows.append(_require(row, required, f"{uri}, row {n}"))
    if not rows:
        raise TaskDataError(f"{uri}: no rows")
    return rows


def _require(row: dict[str, Any], required: tuple[str, ...], where: str) -> dict[str, Any]:
    """``row``, once it holds every ``required`` field (else the error names ``where``)."""
    missing = [f for f in required if f not in row]
    if missing:
        raise TaskDataError(f"{where}: missing field(s) {', '.join(missing)}")
    return row


def read_csv(uri: str, n_cols: int) -> list[list[str]]:
    """Rows of a header-less CSV, each with exactly ``n_cols`` fields."""
    text = read_text(uri)
    rows = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row:
            continue
        if len(row) != n_cols:
            raise TaskDataError(f"{uri}, row {n}: expected {n_cols} fields, got {len(row)}")
        rows.append(row)
    if not rows:
        raise TaskDataError(f"{uri}: no rows")
    return rows


def read_hf(uri: str, split: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a hub dataset ``hf://<name>[/<config>]`` (needs the optional ``datasets``)."""
    spec = uri.removeprefix("hf://").removeprefix("datasets/")
    parts = spec.split("/")
    name = "/".join(parts[:2]) if len(parts) >= 2 else parts[0]
    config = parts[2] if len(parts) >= 3 else None
    try:
        import datasets  # optional, production only
    except ImportError as e:
        raise TaskDataError(f"{uri}: reading hub datasets needs `pip install datasets`") from e
    ds = datasets.load_dataset(name, config, split=split)
    rows = [_require(dict(r), required, f"{uri} [{split}], row {n}")
            for n, r in enumerate(ds, start=1)]
    if not rows:
        raise TaskDataError(f"{uri} [{split}]: no rows")
    return rows


def read_rows(uri: str, split: str = "test", required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON-lines rows from a file/S3 object, or hub rows for ``hf://`` URIs."""
    if str(uri).startswith("hf://"):
        return read_hf(str(uri), split, required)
    return read_jsonl(str(uri), required)
