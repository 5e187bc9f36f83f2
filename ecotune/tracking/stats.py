"""Paired significance tests that decide whether a challenger config beats the champion.

Both configs are scored on the *same* held-out instances, so the tests are paired and
one-sided (H1: the challenger is better). Pure numpy/scipy: no MLflow here, so the
promotion rule can be unit-tested against known values.

* :func:`mcnemar_exact` for 0/1 scores (exact McNemar: a binomial test on the discordant
  pairs, which is what matters when most instances agree);
* :func:`paired_bootstrap` for scores in ``[0, 1]`` (resample instance differences).

Example:
    >>> r = mcnemar_exact([1] * 10 + [0] * 2, [0] * 10 + [1] * 2)
    >>> round(r.p_value, 6)
    0.019287
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.stats import binomtest

TestName = Literal["mcnemar", "bootstrap"]


@dataclass(frozen=True)
class PairedTestResult:
    """Outcome of a one-sided paired test of challenger > champion.

    Attributes:
        test: ``"mcnemar"`` or ``"bootstrap"``.
        p_value: One-sided p-value in ``(0, 1]``.
        n: Number of paired instances.
        challenger_score: Mean challenger score.
        champion_score: Mean champion score.
        details: Test statistics (McNemar: discordant counts ``b``, ``c``; bootstrap:
            ``n_resamples`` and observed mean difference).
    """

    test: str
    p_value: float
    n: int
    challenger_score: float
    champion_score: float
    details: dict[str, float] = field(default_factory=dict)


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired scores need equal 1-D shapes, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("paired test needs at least one instance")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores must be finite")
    return x, y


def is_binary(scores: Sequence[float]) -> bool:
    """True when every score is exactly 0 or 1."""
    x = np.asarray(scores, dtype=float)
    return bool(np.isin(x, (0.0, 1.0)).all())


def mcnemar_exact(challenger: Sequence[float], champion: Sequence[float]) -> PairedTestResult:
    """Exact one-sided McNemar test for 0/1 scores.

    With ``b`` = instances only the challenger solved and ``c`` = only the champion solved,
    under H0 ``b ~ Binomial(b + c, 1/2)``; the p-value is ``P(X >= b)``. No discordant
    pairs means no evidence, p = 1.
    """
    x, y = _paired(challenger, champion)
    if not (is_binary(x) and is_binary(y)):
        raise ValueError("mcnemar needs 0/1 scores; use paired_bootstrap for continuous ones")
    b = int(((x == 1) & (y == 0)).sum())
    c = int(((x == 0) & (y == 1)).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    return PairedTestResult("mcnemar", p, int(x.size), float(x.mean()), float(y.mean()),
                            {"b": float(b), "c": float(c)})


def paired_bootstrap(
    challenger: Sequence[float],
    champion: Sequence[float],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedTestResult:
    """One-sided paired bootstrap test of mean(challenger - champion) > 0.

    Resamples the per-instance differences under the null (shifted to mean zero) and
    reports ``(1 + #{mean* >= observed}) / (1 + n_resamples)``, so p is never 0. A zero
    or negative observed difference gives p = 1. Like any bootstrap it is over-confident
    on a handful of instances; use a few dozen held-out instances at least.
    """
    x, y = _paired(challenger, champion)
    d = x - y
    observed = float(d.mean())
    if observed <= 0.0:
        p = 1.0
    else:
        rng = np.random.default_rng(seed)
        centred = d - observed
        idx = rng.integers(0, d.size, size=(n_resamples, d.size))
        means = centred[idx].mean(axis=1)
        # Small tolerance so floating-point noise in an all-equal centred vector is not
        # counted as an exceedance of a tiny observed difference.
        hits = int((means >= observed - 1e-12).sum())
        p = (1 + hits) / (1 + n_resamples)
    return PairedTestResult("bootstrap", float(p), int(x.size), float(x.mean()), float(y.mean()),
                            {"n_resamples": float(n_resamples), "mean_diff": observed})


def paired_test(
    challenger: Sequence[float],
    champion: Sequence[float],
    test: TestName = "mcnemar",
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedTestResult:
    """Run the named test. ``"mcnemar"`` on non-binary scores falls back to the bootstrap
    (McNemar is undefined there), and the result's ``test`` field says which ran."""
    if test not in ("mcnemar", "bootstrap"):
        raise ValueError(f"unknown test {test!r}; expected 'mcnemar' or 'bootstrap'")
    if test == "mcnemar" and is_binary(challenger) and is_binary(champion):
        return mcnemar_exact(challenger, champion)
    return paired_bootstrap(challenger, champion, n_resamples=n_resamples, seed=seed)
