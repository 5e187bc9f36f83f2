"""Put a biased lower fidelity's scores on the r_max scale before the surrogate takes them.

A prefix mean of 0/1 instance scores is an unbiased estimate of the full score, so EcoTune's
surrogate takes it at face value with binomial noise. A score told *without* per-instance
scores (a whole evaluation, e.g. a multi-fidelity test function at a cheaper level) can be
biased: Borehole's cheapest level ranks configs almost exactly as the full one does
(Spearman 0.9999 on the suite's screens) but on another scale (best screen 1.03–1.04 where
the true best is 0.86–0.93; docs/benchmarks.md, "Where Borehole is lost"). Taken at face
value, the screens outrank every full evaluation and the search keeps finishing configs
whose screens flattered them.

The calibration is Kennedy and O'Hagan's autoregressive link between fidelities,
``f_r_max(x) ≈ a_r · f_r(x) + c_r``, one line per lower level ``r``, fitted the way
co-kriging does when the levels were measured at different configs: a GP of level ``r``'s
scores predicts ``f_r`` at every config measured at r_max, and least squares of the full
scores on those predictions gives ``(a_r, c_r)``. No config has to run at two fidelities.
The rest of the difference (the KOH discrepancy) is left to the surrogate's fitted noise
scale κ (:func:`ecotune.surrogate.fit_scaled_noise_gp`). A level is left as it is when it
has too few scores to fit a GP, when fewer than :data:`MIN_FULL` configs ran at r_max, or
when least squares gives it a slope that is not positive (a level that does not rank
configs the way r_max does is not worth rescaling).

Where the full configs lie away from the level's configs, the level GP's predictions there
are uncertain and so is the slope: on Borehole the spread of those predictions is only
0.4–0.6 of their posterior sd, and the calibration still pays (docs/benchmarks.md); on a
9-d landscape whose full scores span 0.1, a true slope of 2 came out 0.44. A gate on that
ratio (skip a level below 2) was tried and dropped: it switched Borehole's calibration off
too. Where the full configs cluster (a search's full evaluations crowd round its
incumbent), their scores span less than the discrepancy and least squares fits the
discrepancy: slopes of 6.3–8.4 on one Branin run. So the slope has a prior at 1 (the level
is on the right scale up to an offset): a ridge penalty ``w · s_r² · (a_r − 1)²``, with
s_r² the variance of level r's own scores, as though points on the identity line added
``w · s_r²`` to the full configs' spread (:data:`SLOPE_PRIOR`; w = 1 was fixed before it was
measured, and no other value was tried). Full configs spread like the level's own configs
let the data decide; a cluster keeps a_r near 1 and fits the offset c_r. The measured
effect of both, where they help and where they hurt, is in docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np

from ecotune.surrogate import fit_single_fidelity_gp, posterior_mean_std

#: configs measured at r_max needed before any level is calibrated (a line through fewer
#: points is exact, not fitted)
MIN_FULL = 3
#: the level GP's noise, a fraction of the binomial p(1 − p)/r (whole evaluations are
#: near-deterministic; a small nugget keeps the fit well-conditioned)
LEVEL_NOISE_SCALE = 0.01

#: weight w of the prior that a level's slope is 1, in units of the level's own score
#: variance (module docstring); 0 is plain least squares
SLOPE_PRIOR = 1.0

LevelMaps = dict[int, tuple[float, float]]


def fit_level_maps(X: np.ndarray, n: np.ndarray, y: np.ndarray, r_max: int,
                   slope_prior: float = SLOPE_PRIOR) -> LevelMaps:
    """``{r: (a_r, c_r)}`` for every lower level ``r`` that can be calibrated (module
    docstring), from every observation told: configs ``X`` (N, d), instances ``n`` (N,),
    scores ``y`` (N,); ``slope_prior``: the prior's weight w."""
    X, n, y = np.asarray(X, float), np.asarray(n, float), np.asarray(y, float)
    full = n >= r_max
    if full.sum() < MIN_FULL:
        return {}
    maps: LevelMaps = {}
    for r in np.unique(n[~full]):
        at = n == r
        if at.sum() < max(5, X.shape[1] + 2):
            continue
        level = fit_single_fidelity_gp(X[at], y[at], n[at], noise_scale=LEVEL_NOISE_SCALE)
        predicted, _ = posterior_mean_std(level, X[full])
        line = _line(predicted, y[full], slope_prior * np.var(y[at]))
        if line is not None:
            maps[int(r)] = line
    return maps


def apply_level_maps(maps: LevelMaps, n: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Scores ``y`` measured on ``n`` instances, each level's mapped onto the r_max scale."""
    out = np.array(y, float)
    n = np.asarray(n)
    for r, (a, c) in maps.items():
        at = n == r
        out[at] = a * out[at] + c
    return out


def _line(p: np.ndarray, y: np.ndarray, weight: float) -> tuple[float, float] | None:
    """Least squares ``y ≈ a·p + c`` with a ridge penalty ``weight·(a − 1)²`` on the slope;
    None where ``p`` does not vary or the data's own slope is not positive (the prior would
    turn a level that ranks backwards into a flat one, not into a useful one)."""
    dp, dy = p - p.mean(), y - y.mean()
    if np.std(p) < 1e-9 or dp @ dy <= 0:
        return None
    a = (dp @ dy + weight) / (dp @ dp + weight)
    return float(a), float(y.mean() - a * p.mean())
