"""Rebuild the tracker's trial events from a study journal.

The journal (see :mod:`ecotune.journal`) is the source of truth; MLflow is a view of it.
When tracking failed (server down) the missing runs are re-created from these events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ecotune.tracking.report import running_best
from ecotune.trial import Trial, TrialResult


@dataclass(frozen=True)
class TrialEvent:
    """One finished trial with the study totals at that point (what ``on_trial_end`` gets)."""

    trial: Trial
    result: TrialResult
    cumulative_tokens: int
    best_score: float | None


def study_record(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The journal's ``{"type": "study"}`` record, if any."""
    return next((dict(r) for r in records if r.get("type") == "study"), None)


def trial_events(records: Iterable[Mapping[str, Any]], r_max: int | None = None
                 ) -> list[TrialEvent]:
    """Finished trials (an ``ask`` with its ``tell``) in tell order, with running totals.

    Tokens accumulate in tell order (the order they were spent); ``best_score`` follows
    :func:`ecotune.tracking.report.running_best` (the incumbent of :mod:`ecotune.best`).
    Tell records that carry ``cumulative_tokens``/``best_score`` win.
    """
    recs = list(records)
    asks = {int(r["trial"]["id"]): r["trial"] for r in recs if r.get("type") == "ask"}
    tells = [r for r in recs if r.get("type") == "tell" and int(r["trial_id"]) in asks]
    rows: list[dict[str, Any]] = []
    for t in tells:
        trial = asks[int(t["trial_id"])]
        res = TrialResult.from_dict(t["result"])
        rows.append({"id": trial["id"], "fidelity": trial["fidelity"], "status": str(res.status),
                     "score": res.score, "tokens": res.tokens, "n_evaluated": res.n_evaluated,
                     "instance_ids": res.instance_ids, "instance_scores": res.instance_scores,
                     "cumulative_tokens": t.get("cumulative_tokens"),
                     "best_score": t.get("best_score"), "_trial": trial, "_result": res})
    running_best(rows, r_max)
    return [TrialEvent(Trial.from_dict(r["_trial"]), r["_result"], int(r["cumulative_tokens"]),
                       r["best_score"]) for r in rows]
