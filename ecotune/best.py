"""The best configuration of a study: one definition, used by the optimizers, the journal
readers, tracking and promotion.

The best trial is the highest-scoring successful trial among those that measured the most
instances, capped at r_max: once any trial has been scored on r_max instances, only such
trials count (a score on fewer instances is a noisier estimate); before that, those at the
highest count reached. Ties go to the earlier trial. A trial stopped early (partial,
pruned) counts with the instances it measured; a failed one never.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FAILED = "failed"


def _fields(result: Any) -> tuple[float | None, str, int]:
    """(score, status, n_evaluated) of a TrialResult or its dict form."""
    if isinstance(result, Mapping):
        return result.get("score"), str(result.get("status", "")), int(result["n_evaluated"])
    return result.score, str(result.status), int(result.n_evaluated)


def best_trial(results: Iterable[tuple[int, Any]], r_max: int) -> tuple[int, float] | None:
    """``(trial id, score)`` of the best of ``(trial id, result)`` pairs, or None."""
    scored = []
    for tid, res in results:
        score, status, n = _fields(res)
        if score is not None and status != FAILED and n > 0:
            scored.append((int(tid), n, float(score)))
    if not scored:
        return None
    top = min(max(n for _, n, _ in scored), r_max)
    tid, _, score = max((s for s in scored if s[1] >= top), key=lambda s: (s[2], -s[0]))
    return tid, score


def best_in_journal(records: list[dict[str, Any]], r_max: int
                    ) -> tuple[dict[str, Any] | None, float | None]:
    """(config, score) of the best told trial of a study journal."""
    asks = {int(r["trial"]["id"]): r["trial"] for r in records if r.get("type") == "ask"}
    told = [(int(r["trial_id"]), r["result"]) for r in records
            if r.get("type") == "tell" and int(r["trial_id"]) in asks]
    best = best_trial(told, r_max)
    if best is None:
        return None, None
    return dict(asks[best[0]]["config"]), best[1]
