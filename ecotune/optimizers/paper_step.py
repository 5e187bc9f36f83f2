"""The paper's acquisition step for :class:`~ecotune.optimizers.ecotune.EcoTuneOptimizer`
(``acquisition="paper"``): a multi-fidelity GP over (config, fidelity), the token-aware EI
of eq. 3 and the fidelity rule of eq. 4 with an absolute τ on EI per 1,000 tokens at r_max.
Kept beside the default ``lookahead`` step, which replaced it on the peer benchmark
(docs/benchmarks.md), so that the paper's method stays runnable and measured.
"""

from __future__ import annotations

from typing import Any

import gpytorch
import numpy as np
import torch

from ecotune.acquisition import TokenAwareExpectedImprovement, choose_fidelity
from ecotune.cost import BoTorchTokenCost
from ecotune.optimizers.base import Proposal
from ecotune.optimizers.state import StudyState
from ecotune.surrogate import (
    as_tensor,
    fidelity_to_unit,
    fit_multi_fidelity_gp,
    hyperparameters,
    posterior_mean_std,
)


class PaperStep:
    """Mixed into EcoTuneOptimizer: ``_paper_step`` uses its fitted hyperparameters,
    candidates, measured counts, pending penalty and final choice."""

    # what the step reads of the optimizer it is mixed into
    state: StudyState
    levels: np.ndarray
    tau: float
    _hyper: dict[str, Any] | None
    _fitted_n: int
    last_decision: dict[str, Any]

    def _paper_step(self, X: np.ndarray, n: np.ndarray, y: np.ndarray) -> Proposal | None:
        """The paper's eq. 3 and 4 over a multi-fidelity GP on every (config, r) observed."""
        s = fidelity_to_unit(n, self.r_min, self.r_max)
        refit = self._hyper is None or len(y) < 30 or len(y) >= 1.1 * self._fitted_n
        model = fit_multi_fidelity_gp(X, s, y, n, self._hyper, refit=refit)
        if refit:
            self._hyper, self._fitted_n = hyperparameters(model), len(y)

        def at_full(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return posterior_mean_std(model, np.column_stack([P, np.ones(len(P))]))

        mu_full, _ = at_full(X)
        f_star = float(mu_full.max())
        C = self._candidates(X, mu_full)
        levels, L = self.levels, len(self.levels)
        Z = np.column_stack([np.repeat(C, L, axis=0),
                             np.tile(fidelity_to_unit(levels, self.r_min, self.r_max), len(C))])
        cost_model = BoTorchTokenCost(self.state.cost_model, self.space, self.state.max_completion,
                                    self.r_min, self.r_max, self.fixed)
        with torch.no_grad():
            cost = cost_model(as_tensor(Z)).squeeze(-1).numpy()
        xi = self.state.budget.eta * float(np.std(y) if len(y) > 1 else 0.0)
        acqf = TokenAwareExpectedImprovement(model, best_f=f_star, cost=cost_model, xi=xi)
        with torch.no_grad(), gpytorch.settings.fast_pred_var():
            log_eipt = acqf.log_ei_per_token(as_tensor(Z).unsqueeze(-2)).numpy()
        penalty = self._pending_penalty(Z, model, fidelity=True)
        # a (config, r) pair whose config already ran (or runs) at >= r re-measures nothing
        done = self._measured_counts(C)[:, None] >= levels[None, :]
        if done.all():
            return None
        penalty = np.where(done.reshape(-1), -np.inf, penalty)
        eipt_k = np.exp(log_eipt + penalty).reshape(len(C), L) * 1000.0  # per 1,000 tokens
        budget = self.state.budget
        cool = max(budget.remain, 0) / budget.budget_tokens
        utility = (log_eipt + penalty + (1.0 - cool) * np.log(cost)).reshape(len(C), L)
        c, li, promoted = choose_fidelity(eipt_k, self.tau, utility=utility)
        final = self._final_choice(model, X, n, f_star, at_full,
                                   float(cost.reshape(len(C), L)[c, li]))
        if final is not None:
            return final
        self.last_decision = {"phase": "promote" if promoted else "explore", "f_star": f_star,
                              "t_hat": budget.t_hat(float(cost.reshape(len(C), L)[c, -1])),
                              "eipt_full_per_1k": float(eipt_k[:, -1].max()),
                              "eipt_best_per_1k": float(eipt_k.max()), "eta": budget.eta,
                              "fidelity": int(levels[li])}
        return self.space.decode(C[c]), int(levels[li]), dict(self.last_decision)
