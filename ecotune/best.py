"""The best configuration of a study: one definition, used by the optimizers, the journal
readers, tracking and promotion.

The *champion* is the highest-scoring successful trial among those that measured the most
instances, capped at r_max: once any trial has been scored on r_max instances, only such
trials count (a score on fewer instances is a noisier estimate); before that, those at the
highest count reached. Ties go to the earlier trial. A trial stopped early (partial,
pruned) counts with the instances it measured; a failed one never.

A trial measured on fewer instances still replaces the champion where the instances the
two share say it is better: instances run in one nested order, so the shorter trial's
instances are the first ones of the champion's, and the two are compared pair by pair on
them (SMAC's intensification compares configs on the instances they share). The test is
a one-sided sign test at level :data:`ALPHA` on the per-instance score differences
(exact, free of any distribution; on 3 shared instances it can never reject, so a lucky
screen does not win). Without it, a config cut short by the budget at 55 of 60 instances
scoring 0.29 lost to one scoring 0.10 on all 60. Of several such challengers the one with
the most instances wins, then the higher score, then the earlier trial. Trials told
without instance scores (function problems, old journals) are compared as champions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from scipy.stats import binomtest

FAILED = "failed"
#: level of the one-sided sign test by which a shorter trial replaces the champion
ALPHA = 0.05


class _Scored(NamedTuple):
    tid: int
    n: int
    score: float
    instances: dict[str, float]  # instance id (or position) -> score; empty when not told


def _getter(result: Any) -> Any:
    return result.get if isinstance(result, Mapping) else lambda k, d=None: getattr(result, k, d)


def instance_map(result: Any) -> dict[str, float]:
    """A TrialResult's (or its dict form's) instance scores by instance id, or by position
    where the ids are missing; empty when it was told without them."""
    get = _getter(result)
    scores = list(get("instance_scores") or [])
    ids = list(get("instance_ids") or [])
    keys = ids if len(ids) == len(scores) else [str(i) for i in range(len(scores))]
    return dict(zip(keys, map(float, scores), strict=True))


def _scored(tid: Any, result: Any) -> _Scored | None:
    """The fields of a TrialResult or its dict form, or None for a trial that counts not."""
    get = _getter(result)
    score, status, n = get("score"), str(get("status", "")), int(get("n_evaluated") or 0)
    if score is None or status == FAILED or n <= 0:
        return None
    return _Scored(int(tid), n, float(score), instance_map(result))


def beats_on_shared(challenger: Mapping[str, float], champion: Mapping[str, float],
                    alpha: float = ALPHA) -> bool:
    """True when ``challenger`` scores above ``champion`` on the instances both measured,
    by a one-sided sign test at level ``alpha`` (ties carry no evidence and are dropped)."""
    shared = challenger.keys() & champion.keys()
    wins = sum(challenger[k] > champion[k] for k in shared)
    losses = sum(challenger[k] < champion[k] for k in shared)
    if wins <= losses:
        return False
    return bool(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue < alpha)


def best_trial(results: Iterable[tuple[int, Any]], r_max: int) -> tuple[int, float] | None:
    """``(trial id, score)`` of the best of ``(trial id, result)`` pairs, or None."""
    scored = [s for tid, res in results if (s := _scored(tid, res)) is not None]
    if not scored:
        return None
    top = min(max(s.n for s in scored), r_max)
    champion = max((s for s in scored if s.n >= top), key=lambda s: (s.score, -s.tid))
    challengers = [s for s in scored
                   if s.n < champion.n and s.instances and champion.instances
                   and beats_on_shared(s.instances, champion.instances)]
    if challengers:
        champion = max(challengers, key=lambda s: (s.n, s.score, -s.tid))
    return champion.tid, champion.score


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
