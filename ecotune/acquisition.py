"""Token-aware expected improvement and the fidelity rule (the paper's equations 3 and 4).

Composed the BoTorch way: the improvement comes from BoTorch's analytic (log) expected
improvement on any fitted model; the cost from a separate cost model; the acquisition is
their ratio, in log space ``log EI − log E[T]`` for numerical safety. Optimising it over
candidates is a separate step (:func:`choose_fidelity`, and the optimizer's candidate sets).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from botorch.acquisition.analytic import AnalyticAcquisitionFunction, LogExpectedImprovement
from scipy.stats import norm
from torch import Tensor


class TokenAwareExpectedImprovement(AnalyticAcquisitionFunction):
    """``EI(θ, r) / E[T(θ, r)]`` with EI over the incumbent ``f*`` at r_max (eq. 3).

    Args:
        model: a fitted single-output model over (config, fidelity) inputs.
        best_f: the incumbent f* (score of the best configuration at r_max).
        cost: maps inputs of shape (b, d+1) to expected tokens, shape (b,); must be > 0.
        xi: exploration margin: improvement is counted over ``f* + xi``.

    Example:
        >>> acqf = TokenAwareExpectedImprovement(model, best_f=0.6, cost=cost_fn)
        >>> log_eipt = acqf.log_ei_per_token(Z)  # Z: (b, 1, d+1)
    """

    def __init__(self, model, best_f: float, cost: Callable[[Tensor], Tensor], xi: float = 0.0):
        super().__init__(model=model)
        self.log_ei = LogExpectedImprovement(model=model, best_f=best_f + xi)
        self.cost = cost

    def log_ei_per_token(self, X: Tensor) -> Tensor:
        """log EI − log E[T], shape (b,). X: (b, 1, d+1)."""
        c = self.cost(X.squeeze(-2))
        if torch.any(c <= 0):
            raise ValueError("token costs must be positive")
        return self.log_ei(X) - torch.log(c)

    def forward(self, X: Tensor) -> Tensor:
        """EI per token, shape (b,). X: (b, 1, d+1)."""
        return self.log_ei_per_token(X).exp()


def expected_improvement(mean: np.ndarray, std: np.ndarray, best_f: float,
                         xi: float = 0.0) -> np.ndarray:
    """Closed-form EI ``E[(f − f* − ξ)+]`` for Gaussian f (the reference for tests)."""
    std = np.maximum(std, 1e-12)
    u = (mean - best_f - xi) / std
    return std * (u * norm.cdf(u) + norm.pdf(u))


def choose_fidelity(eipt: np.ndarray, tau: float, utility: np.ndarray | None = None
                    ) -> tuple[int, int, bool]:
    """The fidelity rule (eq. 4).

    Args:
        eipt: EI per token, shape (C, R): C candidate configs × R fidelity levels in
            increasing order; the last column is r_max.
        tau: promotion threshold τ on EI per token at r_max.
        utility: what the argmax ranks (same shape; default ``eipt``), e.g. a cost-cooled
            variant; the threshold test always uses ``eipt``.

    Returns:
        (candidate index, fidelity index, promoted): r_max with its best candidate when
        that candidate's EI per token at r_max exceeds τ, else the argmax over all
        (candidate, fidelity) pairs.
    """
    if eipt.ndim != 2 or eipt.size == 0:
        raise ValueError("eipt must be a non-empty (candidates × fidelities) array")
    u = eipt if utility is None else utility
    full = eipt[:, -1]
    if full.max() > tau:
        promotable = np.where(full > tau, u[:, -1], -np.inf)
        return int(np.argmax(promotable)), eipt.shape[1] - 1, True
    c, r = np.unravel_index(int(np.argmax(u)), u.shape)
    return int(c), int(r), False


def fidelity_levels(r_min: int, r_max: int, n_levels: int = 5) -> np.ndarray:
    """Geometrically spaced integer fidelities from r_min to r_max (both included)."""
    if r_min == r_max:
        return np.array([r_max])
    levels = np.unique(np.round(np.geomspace(r_min, r_max, n_levels)).astype(int))
    levels[0], levels[-1] = r_min, r_max
    return np.unique(levels)
