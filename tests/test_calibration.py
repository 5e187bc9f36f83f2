"""Calibrating a biased lower fidelity onto the r_max scale (ecotune.calibration), and
EcoTune's use of it: only for scores told without per-instance scores."""

import numpy as np
import pytest
from optimizer_kit import LAND, make_opt, smooth_score, tell

from ecotune.bench.synthetic import SyntheticEvaluator
from ecotune.calibration import MIN_FULL, apply_level_maps, fit_level_maps


def _f(X):
    return 0.2 + 0.6 * np.exp(-3.0 * np.sum((X - 0.4) ** 2, axis=1))


def _levels(n_low=40, n_full=8, seed=0, a=0.5, c=0.4):
    """Level 5 scores ``a·f + c`` at ``n_low`` configs, level 40 ``f`` at ``n_full`` others
    (no config at both: the case co-kriging's regression handles)."""
    rng = np.random.default_rng(seed)
    X_low, X_full = rng.random((n_low, 3)), rng.random((n_full, 3))
    X = np.vstack([X_low, X_full])
    n = np.array([5.0] * n_low + [40.0] * n_full)
    y = np.concatenate([a * _f(X_low) + c, _f(X_full)])
    return X, n, y


def test_an_affine_biased_level_is_mapped_back_onto_the_full_scale():
    X, n, y = _levels()
    maps = fit_level_maps(X, n, y, r_max=40)
    (a, c), = maps.values()
    assert list(maps) == [5]
    # the level GP's mean is smoother than the level, so the slope comes out a little steep
    assert a == pytest.approx(2.0, rel=0.2) and c == pytest.approx(-0.8, abs=0.2)
    mapped = apply_level_maps(maps, n, y)
    low = n == 5
    assert np.abs(y[low] - _f(X[low])).max() > 0.2  # off the full scale by up to 0.3
    assert np.abs(mapped[low] - _f(X[low])).max() < 0.05  # on it now
    np.testing.assert_array_equal(mapped[~low], y[~low])  # r_max scores untouched


def test_a_slope_the_full_scores_cannot_determine_is_pulled_towards_one():
    """Full evaluations clustered near the optimum (as a search's are) span less than
    their own noise, so least squares through them fits the noise: slopes of 0.6–3 for a
    level that is the full score itself. The prior on the line keeps such a slope near 1
    and leaves a well-determined one (the test above) near the data's."""
    ols, shrunk = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        X_low, X_full = rng.random((40, 3)), 0.4 + 0.05 * rng.standard_normal((6, 3))
        X, n = np.vstack([X_low, X_full]), np.array([5.0] * 40 + [40.0] * 6)
        y = np.concatenate([_f(X_low), _f(X_full) + 0.01 * rng.standard_normal(6)])
        ols += [a for a, _ in fit_level_maps(X, n, y, r_max=40, slope_prior=0.0).values()]
        shrunk += [a for a, _ in fit_level_maps(X, n, y, r_max=40).values()]
    assert len(ols) == len(shrunk) == 5
    assert max(abs(a - 1) for a in ols) > 0.4
    assert max(abs(a - 1) for a in shrunk) < 0.02


def test_no_map_without_enough_full_scores_or_from_a_level_that_ranks_backwards():
    X, n, y = _levels(n_full=MIN_FULL - 1)
    assert fit_level_maps(X, n, y, r_max=40) == {}
    X, n, y = _levels(a=-0.5, c=0.9)  # a level that ranks configs the wrong way round
    assert fit_level_maps(X, n, y, r_max=40) == {}
    X, n, y = _levels(n_low=3)  # too few scores at the level to fit its GP
    assert fit_level_maps(X, n, y, r_max=40) == {}
    np.testing.assert_array_equal(apply_level_maps({}, n, y), y)


def test_ecotune_calibrates_only_scores_told_without_instance_scores():
    """Bare scores whose lower levels read ``0.5·f + 0.4`` get a level map (how close it
    comes to the inverse depends on how well the level's GP predicts the full configs:
    ecotune.calibration); trials with per-instance scores (the LLM case: unbiased prefix
    means) never do; the option is on by default."""
    bare = make_opt("ecotune", budget=20_000)
    while (t := bare.ask()) is not None:
        f = smooth_score(bare, t)
        tell(bare, t, score=f if t.fidelity >= bare.r_max else 0.5 * f + 0.4,
             tokens=30 * t.fidelity)
    assert bare._options["calibrate"] and list(bare.level_maps) == [bare.r_min]
    assert all(a > 0 for a, _ in bare.level_maps.values())
    with_inst = make_opt("ecotune", budget=20_000)
    ev = SyntheticEvaluator(LAND)
    while (t := with_inst.ask()) is not None:
        with_inst.tell(t, ev.evaluate(t))
    assert with_inst._searching and with_inst.level_maps == {}
    assert make_opt("ecotune")._options["calibrate"] is True
    assert make_opt("ecotune", calibrate=False)._options["calibrate"] is False
    assert make_opt("ecotune")._options["slope_prior"] == 1.0
    with pytest.raises(ValueError, match="slope_prior"):
        make_opt("ecotune", slope_prior=-1.0)
