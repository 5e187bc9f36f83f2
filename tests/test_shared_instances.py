"""κ measured from the instances configs share (ecotune.shared_instances), each config's
two-way level, and the optimizer's ``noise="shared"`` and ``noise="adjusted"``."""

from __future__ import annotations

import numpy as np
import pytest
from optimizer_kit import LAND, make_opt

from ecotune.bench.synthetic import SyntheticEvaluator
from ecotune.shared_instances import (
    KAPPA_FLOOR,
    config_instance_scores,
    shared_instance_kappa,
    two_way_levels,
)
from ecotune.trial import TrialResult, TrialStatus


def _configs(S: np.ndarray, n: list[int]) -> list[dict[str, float]]:
    """Config c scored on its first n[c] instances of the score matrix S (configs × instances)."""
    return [{str(i): float(S[c, i]) for i in range(k)} for c, k in enumerate(n)]


def test_independent_coin_flips_keep_the_binomial_variance():
    """No instance effect, no config effect: every deviation is the config's own, κ ≈ 1."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.8, 300)
    S = (rng.random((300, 200)) < p[:, None]).astype(float)
    kappa = shared_instance_kappa(_configs(S, list(rng.integers(5, 201, 300))))
    assert 0.9 <= kappa <= 1.0


@pytest.mark.parametrize("seed", range(3))
def test_shared_difficulty_is_not_a_configs_own_noise(seed):
    """Common random numbers and instance difficulties (the noisy-prefix problems, and an
    LLM table's easy and hard questions): most of the binomial variance is the instances',
    so κ is well below 1; with nothing but instance effects (identical configs) it is the
    floor."""
    rng = np.random.default_rng(seed)
    g, d, u = rng.normal(0, 0.5, 200), rng.normal(0, 1.5, 200), rng.random(200)
    S = (u[None, :] < 1 / (1 + np.exp(-(g[:, None] - d[None, :])))).astype(float)
    n = list(rng.integers(5, 201, 200))
    assert shared_instance_kappa(_configs(S, n)) < 0.5
    same = np.repeat(S[:1], 200, axis=0)
    assert shared_instance_kappa(_configs(same, n)) == KAPPA_FLOOR


@pytest.mark.parametrize("seed", range(3))
def test_the_residual_variance_is_the_two_way_least_squares_one(seed):
    """Against an independent fit: ordinary least squares on config and instance dummy
    variables (numpy's lstsq), residual sum of squares over its degrees of freedom."""
    rng = np.random.default_rng(seed)
    C, n_max = 25, 40
    n = list(rng.integers(3, n_max + 1, C))
    S = (rng.random((C, n_max)) < rng.uniform(0.2, 0.8, (C, 1))).astype(float)
    configs = _configs(S, n)
    rows = [(c, i) for c, k in enumerate(n) for i in range(k)]
    A = np.zeros((len(rows), C + n_max))
    for r, (c, i) in enumerate(rows):
        A[r, c], A[r, C + i] = 1.0, 1.0
    A = A[:, np.abs(A).sum(axis=0) > 0]  # instances nobody measured
    y = np.array([S[c, i] for c, i in rows])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    rank = np.linalg.matrix_rank(A)
    sigma2 = float(((y - A @ coef) ** 2).sum()) / (len(y) - rank)
    p = np.clip(S.sum(axis=1, where=np.arange(n_max)[None, :] < np.array(n)[:, None])
                / np.array(n), 0.5 / np.array(n), 1 - 0.5 / np.array(n))
    counts = np.bincount([i for _, i in rows])
    pq = np.mean([p[c] * (1 - p[c]) for c, i in rows if counts[i] > 1])
    assert shared_instance_kappa(configs) == pytest.approx(min(1.0, sigma2 / pq), rel=1e-6)


def test_nothing_shared_gives_none_and_bare_scores_count_not():
    assert shared_instance_kappa([{"0": 1.0}, {"1": 0.0}]) is None
    assert shared_instance_kappa([{"0": 1.0, "1": 0.0}, {"0": 0.0, "1": 1.0}]) is not None
    assert shared_instance_kappa([]) is None
    done = TrialResult(score=0.5, prompt_tokens=1, completion_tokens=1, n_evaluated=2,
                       status=TrialStatus.COMPLETE, instance_ids=["a", "b"],
                       instance_scores=[1.0, 0.0])
    longer = TrialResult(score=2 / 3, prompt_tokens=1, completion_tokens=1, n_evaluated=3,
                         status=TrialStatus.COMPLETE, instance_ids=["a", "b", "c"],
                         instance_scores=[1.0, 0.0, 1.0])
    bare = TrialResult(score=0.7, prompt_tokens=1, completion_tokens=1, n_evaluated=5,
                       status=TrialStatus.COMPLETE)
    got = config_instance_scores([("x", done), ("x", longer), ("y", bare), ("x", done)])
    assert got == {"x": {"a": 1.0, "b": 0.0, "c": 1.0}}  # each config's longest trial only


def test_the_optimizer_takes_the_measured_kappa(monkeypatch):
    """``noise="shared"``: on trials with instance scores κ is the moment estimate, not the
    marginal likelihood's (never called); ``auto`` keeps the binomial noise (κ = 1)."""
    import ecotune.optimizers.ecotune as eco

    seen: list[float | None] = []

    def spy(configs):
        seen.append(shared_instance_kappa(configs))
        return seen[-1]

    def no_search(*args, **kwargs):
        raise AssertionError("κ searched by marginal likelihood")

    monkeypatch.setattr(eco, "shared_instance_kappa", spy)
    monkeypatch.setattr(eco, "fit_scaled_noise_gp", no_search)
    opt = make_opt("ecotune", budget=20_000, noise="shared")
    ev = SyntheticEvaluator(LAND)
    while (t := opt.ask()) is not None:
        opt.tell(t, ev.evaluate(t))
    assert opt._searching and opt._options["noise"] == "shared" and seen
    assert opt.noise_scale == seen[-1] and KAPPA_FLOOR <= seen[-1] < 1.0
    assert len(set(seen)) > 1  # re-measured at each refit


def test_levels_put_a_screen_on_easy_instances_on_the_full_prefixs_footing():
    """Without noise, ``s = f(c) + b(i)`` with easy first instances: a screen's prefix mean
    overstates its config, its level is f(c) + the mean ease of every instance measured."""
    rng = np.random.default_rng(0)
    f, b = rng.uniform(0.2, 0.6, 12), np.r_[np.full(5, 0.3), rng.uniform(-0.2, 0.1, 35)]
    n = [40, 40, 40] + [5] * 6 + [20] * 3
    configs = {f"c{c}": {str(i): f[c] + b[i] for i in range(k)} for c, k in enumerate(n)}
    levels = two_way_levels(configs)
    assert list(levels) == list(configs)
    for c, k in enumerate(n):
        assert levels[f"c{c}"] == pytest.approx(f[c] + b.mean(), abs=1e-8)
        assert np.mean(list(configs[f"c{c}"].values())) > levels[f"c{c}"] or k == 40


@pytest.mark.parametrize("seed", range(3))
def test_levels_are_the_least_squares_fit_on_the_longest_prefix(seed):
    """Against numpy's lstsq on the dummy design: f̂(c) + mean b̂ (the one combination the
    design fixes), and it is the prefix mean minus (its instances' ease − every instance's)."""
    rng = np.random.default_rng(seed)
    C, n_max = 20, 30
    n = [n_max] + list(rng.integers(3, n_max + 1, C - 1))
    S = (rng.random((C, n_max)) < rng.uniform(0.2, 0.8, (C, 1))).astype(float)
    configs = {c: {str(i): float(S[c, i]) for i in range(k)} for c, k in enumerate(n)}
    rows = [(c, i) for c, k in enumerate(n) for i in range(k)]
    A = np.zeros((len(rows), C + n_max))
    for r, (c, i) in enumerate(rows):
        A[r, c], A[r, C + i] = 1.0, 1.0
    coef, *_ = np.linalg.lstsq(A, np.array([S[c, i] for c, i in rows]), rcond=None)
    ease = coef[C:]
    levels = two_way_levels(configs)
    for c, k in enumerate(n):
        assert levels[c] == pytest.approx(coef[c] + ease.mean(), abs=1e-8)
        assert levels[c] == pytest.approx(S[c, :k].mean() - (ease[:k].mean() - ease.mean()),
                                          abs=1e-8)
    assert two_way_levels({"a": {"0": 1.0}, "b": {"1": 0.0}}) == {}


def test_the_optimizer_models_the_levels(monkeypatch):
    """``noise="adjusted"``: the surrogate is fitted on the two-way levels of the configs
    with instance scores (not their prefix means), with the measured κ; ``shared`` fits the
    prefix means and never asks for levels."""
    import ecotune.optimizers.ecotune as eco

    real_fit, real_levels = eco.fit_single_fidelity_gp, eco.two_way_levels
    fits: list[list[float]] = []
    asked: list[tuple[dict, dict]] = []  # (configs' instance scores, their levels)

    def spy_fit(X, y, n, *args, **kwargs):
        fits.append(np.asarray(y).tolist())
        return real_fit(X, y, n, *args, **kwargs)

    def spy_levels(configs):
        asked.append((configs, real_levels(configs)))
        return asked[-1][1]

    monkeypatch.setattr(eco, "fit_single_fidelity_gp", spy_fit)
    monkeypatch.setattr(eco, "two_way_levels", spy_levels)
    for noise in ("shared", "adjusted"):
        fits.clear()
        opt = make_opt("ecotune", budget=20_000, noise=noise)
        ev = SyntheticEvaluator(LAND)
        while (t := opt.ask()) is not None:
            opt.tell(t, ev.evaluate(t))
        assert fits and opt._options["noise"] == noise and opt._searching
        assert len(asked) == (len(fits) if noise == "adjusted" else 0)
    configs, levels = asked[-1]
    means = {k: float(np.mean(list(v.values()))) for k, v in configs.items()}
    assert set(levels) == set(means)
    assert any(abs(levels[k] - means[k]) > 1e-6 for k in levels)  # screens were moved
    assert set(levels.values()) <= set(fits[-1])  # the last fit took every level
