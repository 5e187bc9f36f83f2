"""The best trial of a study (ecotune.best): the champion at the most instances, replaced
by a shorter trial only where the instances both measured say so (a one-sided sign test)."""

from __future__ import annotations

import csv
import io
from math import comb

import pytest

from ecotune.best import ALPHA, beats_on_shared, best_in_journal, best_trial
from ecotune.tracking import report
from ecotune.tracking.replay import trial_events
from ecotune.trial import Trial, TrialResult, TrialStatus


def result(scores: list[float], status: TrialStatus = TrialStatus.COMPLETE,
           ids: list[str] | None = None) -> TrialResult:
    """A trial told with its per-instance scores (ids: the nested order's first ones)."""
    ids = ids if ids is not None else [f"i{k}" for k in range(len(scores))]
    return TrialResult(sum(scores) / len(scores), 10 * len(scores), 5 * len(scores),
                       len(scores), status, instance_ids=ids, instance_scores=scores)


def upper_tail(wins: int, n: int) -> float:
    """P(X >= wins) for X ~ Binomial(n, 1/2), summed exactly."""
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2 ** n


@pytest.mark.parametrize("wins,losses,ties", [
    (3, 0, 0), (5, 0, 0), (5, 0, 9), (8, 1, 4), (9, 2, 0), (12, 4, 30), (7, 7, 3), (2, 5, 1)])
def test_sign_test_matches_the_exact_binomial_tail(wins: int, losses: int, ties: int) -> None:
    keys = [f"i{k}" for k in range(wins + losses + ties)]
    challenger = dict.fromkeys(keys, 0.5)
    champion = dict.fromkeys(keys, 0.5)
    for k in keys[:wins]:
        challenger[k] = 1.0
    for k in keys[wins:wins + losses]:
        champion[k] = 1.0
    expect = wins > losses and upper_tail(wins, wins + losses) < ALPHA
    assert beats_on_shared(challenger, champion) is expect


def test_a_budget_cut_trial_that_wins_on_shared_instances_is_the_best() -> None:
    champion = result([1.0] * 6 + [0.0] * 54)               # 0.10 on all 60
    cut = result([1.0] * 16 + [0.0] * 39, TrialStatus.PARTIAL)  # 0.29 on the first 55
    assert best_trial([(0, champion), (1, cut)], 60) == (1, pytest.approx(16 / 55))
    # the same scores with the champion ahead on the shared instances: it stays
    champion2 = result([1.0] * 16 + [0.0] * 44)
    assert best_trial([(0, champion2), (1, cut)], 60)[0] == 0


def test_a_lucky_screen_never_replaces_the_champion() -> None:
    """3 of 3 against 0 of 3 on the shared instances is p = 1/8: no evidence at 5%."""
    champion = result([0.0] * 3 + [1.0] * 27)
    lucky = result([1.0, 1.0, 1.0])
    assert best_trial([(0, champion), (1, lucky)], 30) == (0, pytest.approx(0.9))


def test_shared_instances_are_matched_by_id_not_by_position() -> None:
    champion = result([0.0] * 10 + [1.0] * 10, ids=[f"i{k}" for k in range(20)])
    # the challenger's instances listed in another order: every one a win by id
    ids = [f"i{k}" for k in reversed(range(10))]
    challenger = result([1.0] * 10, ids=ids)
    assert best_trial([(0, champion), (1, challenger)], 20)[0] == 1


def test_of_several_challengers_the_most_measured_wins() -> None:
    champion = result([0.0] * 40)
    a = result([1.0] * 10)        # beats the champion on 10 shared instances
    b = result([1.0] * 12)        # and so does b, on more
    assert best_trial([(0, champion), (1, a), (2, b)], 40)[0] == 2


def test_without_instance_scores_only_the_champion_counts() -> None:
    """Function problems and old journals: the rule before instance scores were kept."""
    short = TrialResult(0.9, 10, 5, 2)
    full = TrialResult(0.5, 10, 5, 10)
    assert best_trial([(0, short), (1, full)], 10) == (1, 0.5)
    failed = result([1.0] * 5, TrialStatus.FAILED)
    assert best_trial([(0, failed)], 5) is None


def _items(results: list[TrialResult]) -> list[dict]:
    return [{"trial": Trial(i, {"t": i}, r.n_evaluated, 10_000).to_dict(),
             "result": r.to_dict()} for i, r in enumerate(results)]


def test_tracking_rows_and_journal_readers_agree_with_the_optimizer() -> None:
    results = [result([1.0] * 6 + [0.0] * 54), result([1.0] * 16 + [0.0] * 39)]
    items = _items(results)
    assert best_trial(enumerate(results), 60)[0] == 1
    rows = report.trial_rows(items, 60)
    assert report.best_row(rows, 60)["id"] == 1
    assert rows[-1]["best_score"] == pytest.approx(16 / 55)
    table = list(csv.DictReader(io.StringIO(report.trials_csv(rows))))
    assert "instance_scores" not in table[0] and "instance_ids" not in table[0]
    records = []
    for it in items:
        records.append({"type": "ask", "trial": it["trial"]})
        records.append({"type": "tell", "trial_id": it["trial"]["id"], "result": it["result"]})
    assert best_in_journal(records, 60) == ({"t": 1}, pytest.approx(16 / 55))
    assert trial_events(records, 60)[-1].best_score == pytest.approx(16 / 55)
