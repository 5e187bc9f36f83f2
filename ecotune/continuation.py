"""Which journal a scheduled pipeline run writes: the previous run's, when its study still
has budget, or a new one.

A pipeline run unrolls a fixed number of rounds (KFP v2 has no recursion); a study whose
budget outlasts them stops with reason ``max_rounds``. The next run of the study then
*continues* it on the same journal: the journal is the study's only state and every step
replays it, so continuing is replaying. Otherwise the run opens a journal of its own,
``<journal prefix>/<its run key>`` (its KFP run id).

The submitter (``pipelines.submit``) knows which run came before and hands the pipeline
``<journal prefix>#after=<previous run's key>`` (:func:`continuation_uri`). A KFP recurring
run's parameters are fixed when it is registered, so its runs get ``#after=latest``
(:data:`LATEST`) and find the run before them themselves: the study's run under the journal
prefix whose first record is the newest one older than their own (:func:`latest_run_key`).
The pipeline's
first step and its exit handler turn that into this run's journal with
:func:`run_journal`, which decides once and records the decision, so every step (and a
retried step) gets the same answer:

* a run that continues writes a pointer ``{"type": "continued", "journal": ...}`` at its
  own key and works on ``<previous journal>#run=<its key>``, a
  :class:`~ecotune.journal.RunJournal` that keeps its rounds, stop and summary apart from
  the earlier runs' (its round 0 is not the first run's round 0);
* a run that starts afresh writes its study header at its own key
  (``<prefix>/<key>#after=<previous key>``: the ``after`` lets a warm start find the
  previous study, :func:`previous_journal`).

A study is continued when the last round any run of it recorded stopped with
``max_rounds``: the budget controller gives that reason only when the budget still
affords a trial and nothing else stopped the study.

Example:
    >>> uri = continuation_uri("s3://b/p/llama/journal", "run-41")    # submit
    >>> run_journal(uri, "run-42")                                      # doctest: +SKIP
    's3://b/p/llama/journal/run-41#run=run-42'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ecotune.journal import open_journal, split_uri, with_params
from ecotune.storage import is_s3, open_store

log = logging.getLogger(__name__)

#: the stop reason of a study that ran out of compiled rounds, not of budget
MAX_ROUNDS = "max_rounds"
#: ``#after=latest``: the previous run is the study's latest earlier run under the prefix
LATEST = "latest"


def continuation_uri(prefix: str, previous_key: str | None) -> str:
    """The ``journal_uri`` the submitter hands a run: the study's journal prefix, and the
    key of the study's previous run when there was one."""
    return with_params(prefix.rstrip("/"), after=previous_key or None)


def run_journal(uri: str, run_key: str) -> str:
    """The journal this pipeline run uses (see the module docstring).

    Args:
        uri: the pipeline's ``journal_uri``: the study's journal prefix, optionally with
            ``#after=<previous run's key>``.
        run_key: this run's key (its KFP run id); empty: ``uri`` itself is the journal.

    Returns:
        ``<prefix>/<run_key>`` (a new study; ``#after=`` kept), or
        ``<previous journal>#run=<run_key>`` (the previous study continued).
    """
    prefix, params = split_uri(uri)
    prefix = prefix.rstrip("/")
    if not run_key:
        return prefix
    own, after = f"{prefix}/{run_key}", params.get("after")
    first = open_journal(own).first() if after else None
    if after == LATEST:
        after = latest_run_key(prefix, run_key, before=first.get("ts") if first else None)
    if not after or after == run_key:
        return own
    if first is not None and first.get("type") == "continued":
        return with_params(first["journal"], run=run_key)
    if first is None:  # undecided: this is the run's first step
        prev = previous_journal(with_params(own, after=after))
        if prev is not None and stopped_for_rounds(open_journal(prev).records()):
            open_journal(own).append({"type": "continued", "key": "continued",
                                      "journal": prev, "run": run_key})
            log.info("run %s continues the study of %s (it stopped with max_rounds)",
                     run_key, prev)
            return with_params(prev, run=run_key)
    return with_params(own, after=after)


def latest_run_key(prefix: str, run_key: str, before: float | None = None) -> str | None:
    """The key of the study's latest run under a journal prefix other than ``run_key``: the
    run journal whose first record (study header or ``continued`` pointer) is the newest,
    and older than ``before`` (this run's own first record, once written, so every step of
    a run finds the same one); None when there is none."""
    best: tuple[float, str] | None = None
    for key in run_keys(prefix):
        if key == run_key or key == LATEST:
            continue
        first = open_journal(f"{prefix}/{key}").first()
        if first is None or first.get("type") not in ("study", "continued"):
            continue
        ts = float(first.get("ts", 0.0))
        if (before is None or ts < before) and (best is None or (ts, key) > best):
            best = (ts, key)
    return best[1] if best else None


def run_keys(prefix: str) -> list[str]:
    """The run keys holding a journal under a study's journal prefix (local or S3)."""
    if is_s3(prefix):
        keys = open_store(prefix).list("")
        return sorted({k.split("/", 1)[0] for k in keys if "/" in k})
    folder = Path(prefix)
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def previous_journal(uri: str) -> str | None:
    """The journal the study's previous run used, for a run journal whose URI names it
    (``#after=<key>``, as :func:`run_journal` returns it); None when there is none: no
    previous run, or one that wrote nothing."""
    location, params = split_uri(uri)
    after = params.get("after")
    if not after:
        return None
    candidate = f"{location.rstrip('/').rsplit('/', 1)[0]}/{after}"
    first = open_journal(candidate).first()
    if first is None:
        return None
    if first.get("type") == "continued":
        return str(first["journal"])
    return candidate if first.get("type") == "study" else None


def stopped_for_rounds(records: list[dict[str, Any]]) -> bool:
    """True when the last round recorded in a study journal (by any run) stopped with
    ``max_rounds``: the study has budget and only ran out of compiled rounds."""
    rounds = [r for r in records if r.get("type") == "round"]
    if not rounds:
        return False
    last = max(rounds, key=lambda r: (r.get("ts", 0.0), r.get("uid", "")))
    return last.get("decision") == "stop" and last.get("stop_reason") == MAX_ROUNDS
