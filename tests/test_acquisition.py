import numpy as np
import pytest
import torch

from ecotune.acquisition import (
    TokenAwareExpectedImprovement,
    choose_fidelity,
    expected_improvement,
    fidelity_levels,
)
from ecotune.surrogate import fit_multi_fidelity_gp, posterior_mean_std


def _model(seed=0, n=12, d=2):
    rng = np.random.default_rng(seed)
    X, s = rng.random((n, d)), rng.random(n)
    y = np.sin(3 * X[:, 0]) * 0.3 + 0.5 + 0.05 * s
    return fit_multi_fidelity_gp(X, s, y, np.full(n, 20))


def test_ei_closed_form_known_values():
    # at mean == best, EI = sigma * phi(0)
    assert expected_improvement(np.array([0.5]), np.array([0.2]), 0.5)[0] == pytest.approx(
        0.2 / np.sqrt(2 * np.pi))
    # far above the incumbent, EI ~ mean - best
    assert expected_improvement(np.array([2.0]), np.array([1e-3]), 0.5)[0] == pytest.approx(1.5)
    # exploration margin shifts the incumbent
    assert expected_improvement(np.array([0.6]), np.array([0.1]), 0.5, xi=0.1)[0] == \
        pytest.approx(expected_improvement(np.array([0.6]), np.array([0.1]), 0.6)[0])


def test_token_aware_ei_equals_closed_form_over_cost():
    model = _model()
    rng = np.random.default_rng(3)
    Z = rng.random((50, 3))
    cost = torch.as_tensor(rng.uniform(100, 5000, 50))
    best_f, xi = 0.6, 0.01
    acqf = TokenAwareExpectedImprovement(model, best_f=best_f, cost=lambda X: cost, xi=xi)
    with torch.no_grad():
        got = acqf(torch.as_tensor(Z).unsqueeze(-2)).numpy()
    mean, std = posterior_mean_std(model, Z)
    want = expected_improvement(mean, std, best_f, xi) / cost.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)


def test_non_positive_cost_is_an_error():
    model = _model()
    acqf = TokenAwareExpectedImprovement(model, best_f=0.5, cost=lambda X: torch.zeros(len(X)))
    with pytest.raises(ValueError, match="positive"):
        acqf(torch.rand(4, 1, 3))


def test_fidelity_promotes_when_full_fidelity_ei_per_token_exceeds_tau():
    eipt = np.array([[0.9, 0.2, 0.10],
                     [0.5, 0.3, 0.25]])
    assert choose_fidelity(eipt, tau=0.2) == (1, 2, True)  # best at r_max: row 1 (0.25 > 0.2)


def test_fidelity_argmax_over_all_pairs_without_promotion():
    eipt = np.array([[0.9, 0.2, 0.10],
                     [0.5, 0.3, 0.25]])
    assert choose_fidelity(eipt, tau=0.3) == (0, 0, False)
    assert choose_fidelity(eipt, tau=0.25) == (0, 0, False)  # strictly greater than tau


def test_fidelity_levels_are_geometric_and_include_ends():
    lv = fidelity_levels(5, 80, 5)
    assert lv[0] == 5 and lv[-1] == 80 and list(lv) == sorted(set(lv))
    assert list(fidelity_levels(7, 7)) == [7]


def test_cost_cooled_utility_ranks_but_tau_tests_raw_ei_per_token():
    eipt = np.array([[0.9, 0.2, 0.10],
                     [0.5, 0.3, 0.25]])
    utility = np.array([[0.1, 0.2, 0.3],
                        [0.1, 0.8, 0.2]])
    assert choose_fidelity(eipt, tau=0.3, utility=utility) == (1, 1, False)
    # promotion: only candidates whose raw EI per token at r_max beats tau are eligible
    assert choose_fidelity(eipt, tau=0.2, utility=utility) == (1, 2, True)


# -- the lookahead acquisition and the scale-free fidelity rule ---------------------------
def test_lookahead_std_and_log_ei_match_closed_forms():
    from ecotune.acquisition import expected_improvement, log_lookahead_ei, lookahead_std

    rng = np.random.default_rng(0)
    mean, std = rng.uniform(0.2, 0.8, 50), rng.uniform(0.01, 0.3, 50)
    noise = rng.uniform(0.001, 0.05, 50)
    s = lookahead_std(std, noise)
    assert np.allclose(s, std**2 / np.sqrt(std**2 + noise))
    assert (s < std).all()  # an observation with noise reveals less than the latent spread
    assert np.allclose(lookahead_std(std, np.zeros(50)), std)  # noiseless: all of it
    got = np.exp(log_lookahead_ei(mean, std, noise, best_f=0.5))
    assert np.allclose(got, expected_improvement(mean, s, 0.5), rtol=1e-6, atol=1e-12)
    # more instances, less noise, more to learn: EI grows with the increment
    more = np.exp(log_lookahead_ei(mean, std, noise / 4, best_f=0.5))
    assert (more >= got - 1e-15).all()
    # finite far in the tail, where EI itself underflows
    assert np.isfinite(log_lookahead_ei(np.array([0.0]), np.array([1e-3]), np.array([1e-4]),
                                        best_f=0.9)).all()


def test_ratio_rule_is_scale_free():
    from ecotune.acquisition import choose_fidelity_ratio

    v = np.log(np.array([4.0, 3.0, 1.0]))  # EI per token at r1 < r2 < r_max
    assert choose_fidelity_ratio(v, tau=0.5) == 0  # 1 < 0.5 * 4: screen at r1
    assert choose_fidelity_ratio(v, tau=0.25) == 2  # 1 >= 0.25 * 4: finish
    # the same decisions whatever the units of score and tokens
    for scale in (1e-6, 1.0, 1e6):
        assert choose_fidelity_ratio(v + np.log(scale), 0.5) == 0
        assert choose_fidelity_ratio(v + np.log(scale), 0.25) == 2
    assert choose_fidelity_ratio(np.array([-np.inf, np.log(2.0), -np.inf]), 0.5) == 1
    assert choose_fidelity_ratio(np.array([-np.inf, -np.inf, 0.0]), 0.5) == 2
    assert choose_fidelity_ratio(v, tau=0.0) == 2
    with pytest.raises(ValueError):
        choose_fidelity_ratio(np.array([-np.inf, -np.inf]), 0.5)


def test_cost_model_composes_with_the_acquisition_off_any_grid():
    """The token cost model as a BoTorch model: same predictions as the cost model at any
    point of the cube, and EI per token divides by exactly those."""
    from ecotune.cost import BoTorchTokenCost, TokenCostModel
    from ecotune.space import SearchSpace

    space = SearchSpace.from_dict({"temperature": {"type": "float", "low": 0, "high": 1},
                                   "max_tokens": {"type": "int", "low": 1, "high": 64}})
    cm = TokenCostModel(prompt_tokens_hint=50)
    rng = np.random.default_rng(1)
    for _ in range(12):
        x = rng.random(2)
        mt = space.decode(x)["max_tokens"]
        cm.observe(x, 10, 500, int(10 * mt * 0.4), mt)
    cost = BoTorchTokenCost(cm, space, lambda c: int(c["max_tokens"]), r_min=2, r_max=42)
    Z = rng.random((30, 3))  # arbitrary points, fidelity in the last column
    got = cost(torch.as_tensor(Z)).squeeze(-1).numpy()
    r = 2 + Z[:, 2] * 40
    mts = [space.decode(z[:2])["max_tokens"] for z in Z]
    np.testing.assert_allclose(got, cm.predict(Z[:, :2], mts, r), rtol=1e-9)
    assert len(set(np.round(got, 6))) > 20  # depends on the point, not a fixed grid
    model = _model()
    acqf = TokenAwareExpectedImprovement(model, best_f=0.6, cost=cost)
    with torch.no_grad():
        eipt = acqf(torch.as_tensor(Z).unsqueeze(-2)).numpy()
    mean, std = posterior_mean_std(model, Z)
    np.testing.assert_allclose(eipt, expected_improvement(mean, std, 0.6) / got, rtol=1e-4,
                               atol=1e-12)


def test_completion_cost_adds_what_a_promising_screen_commits_to():
    from ecotune.acquisition import completion_cost

    cost = np.array([[100.0, 400.0, 1000.0], [100.0, 400.0, 1000.0]])
    mean = np.array([0.5, 0.5, 0.5, 0.0, 0.0, 0.0])       # at the target; far below it
    sd = np.full(6, 0.05)
    eff = completion_cost(cost, mean, sd, target=0.5)
    # at the target a screen finishes with probability 1/2: half the rest is added
    np.testing.assert_allclose(eff[0], [100 + 0.5 * 900, 400 + 0.5 * 600, 1000.0])
    # ten standard deviations below it, a screen commits to nothing
    np.testing.assert_allclose(eff[1], cost[1], rtol=1e-12)
    # r_max is never charged more than itself, and nothing is ever cheaper than its tokens
    assert (eff >= cost).all() and (eff[:, -1] == cost[:, -1]).all()


def test_completion_cost_reaches_the_optimizer_and_its_journal_options():
    from ecotune.optimizers import make_optimizer
    from ecotune.space import SearchSpace

    space = SearchSpace.from_dict({"temperature": {"type": "float", "low": 0.0, "high": 1.0}})
    opt = make_optimizer("ecotune", space=space, budget_tokens=10_000, r_min=2, r_max=16,
                         completion_cost=True)
    assert opt.completion_cost and opt._options["completion_cost"] is True
    paper = make_optimizer("ecotune", space=space, budget_tokens=10_000, r_min=2, r_max=16,
                           acquisition="paper", completion_cost=True)
    assert not paper.completion_cost  # the paper's eq. 3 prices a trial by its own tokens


def test_finish_value_matches_monte_carlo_and_bounds():
    """E[1{μ' > f*}·(f − f*)+] (a screen's worth through the configs it sends on to r_max)
    against a Monte Carlo of the same Gaussian model; it is at least the lookahead EI of μ'
    alone and equals plain EI when the screen is exact."""
    from ecotune.acquisition import log_finish_ei, log_lookahead_ei

    rng = np.random.default_rng(0)
    mu = np.array([0.5, 0.6, 0.4, 0.7, 0.3])
    sd = np.array([0.1, 0.05, 0.2, 0.01, 0.15])
    noise = np.array([0.05, 0.01, 1e-6, 0.02, 0.2])
    best = 0.55
    got = np.exp(log_finish_ei(mu, sd, noise, best))
    for i in range(len(mu)):
        f = mu[i] + sd[i] * rng.standard_normal(1_000_000)
        obs = f + np.sqrt(noise[i]) * rng.standard_normal(f.size)
        post = mu[i] + sd[i] ** 2 / (sd[i] ** 2 + noise[i]) * (obs - mu[i])
        mc = np.mean((post > best) * np.maximum(f - best, 0.0))
        assert got[i] == pytest.approx(mc, rel=0.03, abs=1e-5)
    assert (got >= np.exp(log_lookahead_ei(mu, sd, noise, best)) * (1 - 5e-3)).all()  # grid
    exact = np.exp(log_finish_ei(mu, sd, np.full(5, 1e-12), best))
    np.testing.assert_allclose(exact, expected_improvement(mu, sd, best), rtol=5e-3)  # grid
    far = log_finish_ei(np.array([0.0]), np.array([0.01]), np.array([0.01]), 0.9)
    assert np.isfinite(far).all() and far[0] < -100  # hopeless, but still ranked


def test_screen_value_option_reaches_the_optimizer_and_is_checked():
    from ecotune.optimizers import make_optimizer
    from ecotune.space import SearchSpace

    space = SearchSpace.from_dict({"temperature": {"type": "float", "low": 0.0, "high": 1.0}})
    opt = make_optimizer("ecotune", space=space, budget_tokens=10_000, r_min=2, r_max=16)
    assert opt.screen_value == "lookahead" and opt._options["screen_value"] == "lookahead"
    with pytest.raises(ValueError, match="screen_value"):
        make_optimizer("ecotune", space=space, budget_tokens=10_000, r_min=2, r_max=16,
                       screen_value="nope")


@pytest.mark.parametrize("seed", [0, 1])
def test_scaled_noise_follows_the_data(seed):
    """κ by marginal likelihood: tiny for a deterministic smooth score, at least a tenth of
    the binomial bound for scores that are binomial means; the returned model is fitted
    with that κ."""
    from ecotune.surrogate import NOISE_SCALES, fit_scaled_noise_gp, score_noise

    rng = np.random.default_rng(seed)
    X = rng.random((40, 3))
    p = np.sin(3 * X[:, 0]) * 0.4 + 0.5
    n = rng.integers(5, 50, 40).astype(float)
    model, kappa = fit_scaled_noise_gp(X, p, n)
    assert kappa <= 0.01
    noisy = rng.binomial(n.astype(int), p) / n
    model, kappa = fit_scaled_noise_gp(X, noisy, n)
    assert kappa >= 0.1 and kappa in NOISE_SCALES
    # the likelihood's fixed noise (in the standardised outcome space) is κ·p(1−p)/n
    std = float(np.std(noisy, ddof=1))
    got = model.likelihood.noise.detach().numpy().reshape(-1) * std**2
    assert np.allclose(got, kappa * score_noise(noisy, n), rtol=1e-6)
