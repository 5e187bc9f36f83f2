"""Token-aware expected improvement and the fidelity rules.

Two acquisitions, both EI per expected token in log space (``log EI − log E[T]``):

* **lookahead** (the default, :func:`log_lookahead_ei`). A score measured on the first r
  instances of a nested random order is an *unbiased*, noisier estimate of the full score
  (binomial variance ≈ p(1 − p)/r), not a biased lower fidelity. So the model is one GP over
  configs with that heteroscedastic noise, and the value of running Δ more instances of a
  config is the expected improvement of its posterior mean once they are seen: EI with the
  standard deviation of that update, ``σ̃ = σ² / sqrt(σ² + p(1 − p)/Δ)`` (a one-step
  lookahead; Frazier's knowledge gradient for an independent arm). An option
  (``screen_value="finish"``, :func:`log_finish_ei`) values a screen by what it adds to the
  answer, which only a config measured at r_max can be: ``E[1{μ' > f*}·(f − f*)+]``, the
  configs whose posterior mean μ' comes out above the incumbent being finished; it was
  measured against the default on the peer benchmark and did not beat it overall
  (docs/benchmarks.md). Its cost is the tokens
  of those Δ instances (nested subsets keep what was measured) plus, below r_max, what the
  screen commits to: finishing the config if it comes out above the incumbent
  (:func:`completion_cost`, on by default; measured in docs/benchmarks.md). The fidelity rule is
  scale-free (:func:`choose_fidelity_ratio`): the chosen config goes to r_max when EI per
  token there is at least τ times the best EI per token at a lower fidelity *for the same
  config*.
* **paper** (:class:`TokenAwareExpectedImprovement`, :func:`choose_fidelity`): the EcoTune
  paper's eq. 3 over a multi-fidelity GP, and eq. 4, r_max when the best EI per token there
  passes the absolute threshold τ, kept as an option.

Composed the BoTorch way: the improvement comes from BoTorch's analytic (log) expected
improvement; the cost from a separate cost model. Optimising over candidates is a separate
step (the choose functions, and the optimizer's candidate sets).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from botorch.acquisition.analytic import (
    AnalyticAcquisitionFunction,
    LogExpectedImprovement,
    _log_ei_helper,
)
from scipy.stats import norm
from torch import Tensor


class TokenAwareExpectedImprovement(AnalyticAcquisitionFunction):
    """``EI(θ, r) / E[T(θ, r)]`` with EI over the incumbent ``f*`` at r_max (eq. 3).

    Args:
        model: a fitted single-output model over (config, fidelity) inputs.
        best_f: the incumbent f* (score of the best configuration at r_max).
        cost: the cost model: a BoTorch ``DeterministicModel`` such as
            :class:`ecotune.cost.BoTorchTokenCost` (inputs (b, d+1) → tokens (b, 1)), or any
            callable to tokens of shape (b,); costs must be > 0.
        xi: exploration margin: improvement is counted over ``f* + xi``.

    Example:
        >>> acqf = TokenAwareExpectedImprovement(model, best_f=0.6, cost=token_cost_model)
        >>> log_eipt = acqf.log_ei_per_token(Z)  # Z: (b, 1, d+1)
    """

    def __init__(self, model, best_f: float, cost: Callable[[Tensor], Tensor], xi: float = 0.0):
        super().__init__(model=model)
        self.log_ei = LogExpectedImprovement(model=model, best_f=best_f + xi)
        self.cost = cost

    def log_ei_per_token(self, X: Tensor) -> Tensor:
        """log EI − log E[T], shape (b,). X: (b, 1, d+1)."""
        c = self.cost(X.squeeze(-2))
        if c.dim() == 2:  # a BoTorch model's (b, 1)
            c = c.squeeze(-1)
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


def lookahead_std(std: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """Standard deviation of the posterior mean's change after one observation with
    ``noise_var``: ``σ² / sqrt(σ² + noise_var)`` (elementwise)."""
    var = np.maximum(np.asarray(std, float) ** 2, 1e-18)
    return var / np.sqrt(var + np.maximum(noise_var, 0.0))


def log_lookahead_ei(mean: np.ndarray, std: np.ndarray, noise_var: np.ndarray,
                     best_f: float, xi: float = 0.0) -> np.ndarray:
    """log E[(μ' − f* − ξ)+] for the posterior mean μ' after an observation with
    ``noise_var`` (BoTorch's numerically safe log-EI helper on the lookahead std)."""
    s = np.maximum(lookahead_std(std, noise_var), 1e-12)
    u = (np.asarray(mean, float) - best_f - xi) / s
    with torch.no_grad():
        h = _log_ei_helper(torch.as_tensor(u, dtype=torch.float64)).numpy()
    return np.log(s) + h


def log_finish_ei(mean: np.ndarray, std: np.ndarray, noise_var: np.ndarray, best_f: float,
                  xi: float = 0.0, n_grid: int = 81) -> np.ndarray:
    """log E[1{μ' > f*} · (f − f*)+]: the improvement a screen buys by way of finishing.

    Only a config measured at r_max can be the answer, so a screen pays off through the
    configs it sends on: those whose posterior mean after the screen, μ', comes out above
    the incumbent are finished, and the incumbent then improves by ``(f − f*)+``. With
    ``f ~ N(μ, σ²)``, ``μ' = μ + σ̃·Z`` (σ̃ the lookahead std, :func:`lookahead_std`) and
    ``f | μ' ~ N(μ', σ² − σ̃²)``, the value is ``E_Z[1{μ' > f*}·EI(μ', sqrt(σ² − σ̃²))]``,
    integrated over (f* − μ)/σ̃ < Z < 8 on a grid (trapezoid in log space; BoTorch's log-EI
    helper inside). Unlike the lookahead EI of μ' alone (:func:`log_lookahead_ei`), it does
    not undervalue a noisy screen of a config that would win once finished; at r_max (σ̃ → σ)
    both are the same.
    """
    mean = np.asarray(mean, float).reshape(-1)
    var = np.maximum(np.asarray(std, float).reshape(-1) ** 2, 1e-18)
    s_t = np.maximum(lookahead_std(np.sqrt(var), np.asarray(noise_var, float).reshape(-1)), 1e-12)
    resid = np.sqrt(np.maximum(var - s_t ** 2, 1e-18))
    target = best_f + xi
    z0 = np.clip((target - mean) / s_t, -8.0, 30.0)
    span = np.maximum(8.0 - z0, 6.0)                  # up to z = 8, and 6 at least
    z = z0[:, None] + span[:, None] * np.linspace(0.0, 1.0, n_grid)[None, :]
    m_post = mean[:, None] + s_t[:, None] * z
    u = (m_post - target) / resid[:, None]
    with torch.no_grad():
        h = _log_ei_helper(torch.as_tensor(u, dtype=torch.float64)).numpy()
    log_terms = np.log(resid)[:, None] + h + norm.logpdf(z)
    log_w = np.log(span / (n_grid - 1))[:, None] + np.where(
        np.isin(np.arange(n_grid), [0, n_grid - 1]), np.log(0.5), 0.0)[None, :]
    a = log_terms + log_w
    top = a.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=1, keepdims=True))).reshape(-1)


def completion_cost(cost: np.ndarray, mean: np.ndarray, lookahead_sd: np.ndarray,
                    target: float) -> np.ndarray:
    """Tokens of a screen plus the tokens it commits to in expectation.

    Only a config measured at r_max can be the study's answer, so a screen at r < r_max
    pays off only through finishing that config when the screen comes out above the
    incumbent. Its effective cost is ``T(r) + P(μ' > f*) · (T(r_max) − T(r))``, where μ'
    is the posterior mean after the screen (std ``lookahead_sd``) and ``P`` its normal
    tail; at r_max nothing is left to buy. A myopic value per token of the screen alone
    (value ∝ sqrt(Δ), cost ∝ Δ) favours the cheapest screens of promising configs over and
    over; counting what they commit to removes that bias and leaves unpromising screens
    cheap.

    Args:
        cost: tokens of each (config, level), shape (C, L); the last level is r_max.
        mean, lookahead_sd: posterior mean and lookahead std, shape (C * L,) (row-major).
        target: the incumbent f* plus the exploration margin.

    Returns:
        The effective tokens, shape (C, L).
    """
    cost = np.asarray(cost, float)
    s = np.maximum(np.asarray(lookahead_sd, float), 1e-12).reshape(cost.shape)
    p_up = norm.cdf((np.asarray(mean, float).reshape(cost.shape) - target) / s)
    rest = np.maximum(cost[:, -1:] - cost, 0.0)
    return cost + p_up * rest


def choose_fidelity_ratio(log_eipt: np.ndarray, tau: float) -> int:
    """The scale-free fidelity rule for one chosen config.

    Args:
        log_eipt: log EI per token of that config at each fidelity level (increasing; the
            last is r_max), ``-inf`` where a level is not available.
        tau: r_max is chosen when its EI per token is at least ``tau`` × the best EI per
            token at a lower level (``tau`` < 1 favours finishing a config, > 1 screening;
            0 always finishes).

    Returns:
        The index of the level to run. (Eq. 4 of the paper compares the best candidate's
        EI per token at r_max with an absolute τ; this compares the same config's options,
        so it does not depend on the score's or the tokens' scale.)
    """
    v = np.asarray(log_eipt, float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).any():
        raise ValueError("log_eipt needs at least one finite level")
    if tau < 0:
        raise ValueError("tau must be >= 0")
    full, lower = v[-1], v[:-1]
    if np.isfinite(full) and (tau == 0 or not np.isfinite(lower).any()
                              or full >= np.log(tau) + lower.max()):
        return len(v) - 1
    return int(np.nanargmax(np.where(np.isfinite(lower), lower, -np.inf)))


def log_local_penalty(Z: np.ndarray, P: np.ndarray, model) -> np.ndarray:
    """Log of the local penalty of inputs Z (M, D) around running trials' points P (K, D):
    Σ_k log(1 − exp(−½‖(z − p_k)/ℓ‖²)) with the model kernel's lengthscales ℓ (0.2 when
    it has none), so parallel asks spread out."""
    try:
        kernel = getattr(model.covar_module, "base_kernel", model.covar_module)
        ls = kernel.lengthscale.detach().numpy().reshape(-1)
    except AttributeError:
        ls = np.full(Z.shape[1], 0.2)
    ls = np.resize(ls, Z.shape[1]) if ls.size != Z.shape[1] else ls
    d2 = (((Z[:, None, :] - P[None, :, :]) / ls) ** 2).sum(-1)
    return np.log(np.clip(1.0 - np.exp(-0.5 * d2), 1e-12, 1.0)).sum(-1)
