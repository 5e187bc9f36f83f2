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
