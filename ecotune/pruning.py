"""Stop a losing trial early (the pruning idea of EcoOptiGen), on a bound that cannot lie.

A trial scores its instances in order. Task scores lie in [0, 1], so after ``n``
instances with score sum ``k`` the Clopper–Pearson interval bounds the config's true mean
score (for Bernoulli scores exactly; for scores in [0, 1] conservatively, since a Bernoulli
has the widest tails of any [0, 1] variable with that mean). Once the upper bound at level
``1 − alpha`` is below the incumbent's *lower* bound at r_max, the trial cannot be the
better config at that confidence: it stops and is told with what it evaluated
(status ``pruned``), and the tokens of the instances it did not run are saved. Scores
outside [0, 1] (a benchmark function's) have no such bound: nothing is pruned then.

Example:
    >>> lo, hi = clopper_pearson(3, 20, alpha=0.05)
    >>> should_prune([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], prune_below=0.7)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import beta

#: default one-sided error of each bound
ALPHA = 0.05


def clopper_pearson(k: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """One-sided ``1 − alpha`` lower and upper bounds of a mean from ``k`` successes in ``n``.

    ``lower`` is the largest p with P(X ≥ k | p) ≤ alpha, ``upper`` the smallest p with
    P(X ≤ k | p) ≤ alpha (X ~ Binomial(n, p)); ``k`` may be fractional (scores in [0, 1]).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    lower = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def in_unit_interval(scores: Sequence[float]) -> bool:
    """Whether every score lies in [0, 1], where the bounds hold (task scores do; a
    benchmark function's normalised value need not)."""
    return all(0.0 <= float(s) <= 1.0 for s in scores)


def incumbent_floor(scores: Sequence[float], alpha: float = ALPHA) -> float | None:
    """The incumbent's lower bound: what a challenger must be able to reach; None when a
    score lies outside [0, 1] (no bound holds there, so nothing is pruned)."""
    if not in_unit_interval(scores):
        return None
    return clopper_pearson(float(sum(scores)), len(scores), alpha)[0]


def should_prune(scores: Sequence[float], prune_below: float | None,
                 alpha: float = ALPHA) -> bool:
    """True once the upper bound of the mean of ``scores`` is below ``prune_below``;
    never for scores outside [0, 1]."""
    if prune_below is None or not scores or not in_unit_interval(scores):
        return False
    return clopper_pearson(float(sum(scores)), len(scores), alpha)[1] < prune_below
