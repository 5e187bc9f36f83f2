"""The EcoTune optimizer: multi-fidelity GP + token-aware EI + budget control.

Each ask: fit the GP over (config, fidelity) by marginal likelihood, take the incumbent
f* at r_max, score a candidate set at every fidelity level by EI per expected token
(eq. 3), and pick the fidelity by the promotion rule with threshold τ (eq. 4). The budget
controller's η sets the exploration margin, and when T̂ (eq. 8) says at most one more
full-fidelity trial is affordable, the last one goes to the best predicted configuration
at r_max, so the study always ends with a configuration measured at r_max.
"""

from __future__ import annotations

from typing import Any

import gpytorch
import numpy as np
import torch

from ecotune.acquisition import TokenAwareExpectedImprovement, choose_fidelity, fidelity_levels
from ecotune.candidates import candidate_set
from ecotune.optimizers.base import Optimizer, Proposal, encoded_key
from ecotune.surrogate import (
    fidelity_to_unit,
    fit_multi_fidelity_gp,
    hyperparameters,
    posterior_mean_std,
)
from ecotune.trial import TrialStatus


class EcoTuneOptimizer(Optimizer):
    """Token-aware multi-fidelity Bayesian optimisation.

    Args:
        tau: promotion threshold τ on EI per 1,000 tokens at r_max.
        n_init: initial Sobol configurations (default: max(4, d // 2 + 2)).
        initial_configs: configs to run first, before the Sobol design (e.g. the serving
            default or the HELM default: a study then never ends worse than the default
            measured at r_max would be, if it is best). With ``candidates``, each is
            replaced by its nearest candidate.
        init_fidelity: fidelity of the initial design (default: the second fidelity level;
            r_min alone is often too noisy to rank anything).
        n_levels: fidelity levels considered between r_min and r_max.
        n_candidates: Sobol candidates per ask (plus local ones around the incumbents).
    """

    name = "ecotune"
    single_fidelity = False
    candidate_aware = True

    def __init__(self, *args: Any, tau: float = 0.002, n_init: int | None = None,
                 n_levels: int = 4, n_candidates: int = 512, init_fidelity: int | None = None,
                 initial_configs: list[dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if tau < 0:
            raise ValueError("tau must be >= 0")
        self.tau = float(tau)
        self.n_init = int(n_init if n_init is not None else max(4, self.space.dim // 2 + 2))
        self.levels = fidelity_levels(self.r_min, self.r_max, n_levels)
        self.n_candidates = n_candidates
        self.initial_configs = [self.space.validate_config(c) for c in (initial_configs or [])]
        self.init_fidelity = int(init_fidelity if init_fidelity is not None
                                 else self.levels[min(1, len(self.levels) - 1)])
        self._hyper: dict | None = None
        self._fitted_n = 0
        self._final_done = False
        self.last_decision: dict[str, Any] = {}
        self._options.update(tau=tau, n_init=self.n_init, n_levels=n_levels,
                             initial_configs=self.initial_configs)

    # ------------------------------------------------------------------ proposal
    def _propose(self) -> Proposal | None:
        X, n, y = self.observations()
        if self._next_id < len(self.initial_configs):
            cfg = dict(self.initial_configs[self._next_id])
            if self.candidates is not None:  # e.g. a default that is not among the presets
                cfg = self._unseen_candidate(cfg)
            return cfg, self.init_fidelity, {"phase": "init"}
        if len(y) + len(self.pending) < self.n_init + len(self.initial_configs) or len(y) < 2:
            cfg = self._sobol_config()
            if self.candidates is not None:
                cfg = self._unseen_candidate(cfg)
            return cfg, self.init_fidelity, {"phase": "init"}
        return self._bo_step(X, n, y)

    def _bo_step(self, X: np.ndarray, n: np.ndarray, y: np.ndarray) -> Proposal | None:
        s = fidelity_to_unit(n, self.r_min, self.r_max)
        # refit hyperparameters while data is scarce, then whenever it grew by 10%
        refit = self._hyper is None or len(y) < 30 or len(y) >= 1.1 * self._fitted_n
        model = fit_multi_fidelity_gp(X, s, y, n, self._hyper, refit=refit)
        if refit:
            self._hyper, self._fitted_n = hyperparameters(model), len(y)
        mu_full, _ = posterior_mean_std(model, np.column_stack([X, np.ones(len(X))]))
        f_star = float(mu_full.max())
        if self.candidate_X is None:  # Sobol + local refinement around the 3 best predictions
            C = candidate_set(self.space, self._rng(self._next_id, 1),
                              centres=X[np.argsort(-mu_full)[:3]], n_global=self.n_candidates)
        else:
            C = self.candidate_X
        levels = self.levels
        L = len(levels)
        Z = np.column_stack([np.repeat(C, L, axis=0),
                             np.tile(fidelity_to_unit(levels, self.r_min, self.r_max), len(C))])
        max_tok = np.repeat([self._max_completion(self.space.decode(c) | self.fixed) for c in C], L)
        r = np.tile(levels, len(C))
        cost = self.cost_model.predict(Z[:, :-1], max_tok, r)

        def cost_fn(Zt: torch.Tensor) -> torch.Tensor:  # Zt is Z: costs precomputed per row
            return torch.as_tensor(cost)

        xi = self.budget.eta * float(np.std(y) if len(y) > 1 else 0.0)
        acqf = TokenAwareExpectedImprovement(model, best_f=f_star, cost=cost_fn, xi=xi)
        with torch.no_grad(), gpytorch.settings.fast_pred_var():
            log_eipt = acqf.log_ei_per_token(torch.as_tensor(Z).unsqueeze(-2)).numpy()
        penalty = self._pending_penalty(Z, model)
        # a (config, r) pair whose config already ran (or runs) at >= r would re-measure
        # the same nested instances: it can teach nothing, so it is never proposed
        done = self._measured(C, levels)
        if done.all():
            return None
        penalty = np.where(done.reshape(-1), -np.inf, penalty)
        eipt_k = np.exp(log_eipt + penalty).reshape(len(C), L) * 1000.0  # per 1,000 tokens
        # Cost cooling (EI-cool): the cost's weight shrinks as the budget is spent, so the
        # search is not drawn to configs that are cheap because they are useless (answers
        # cut off by a tiny max_tokens) while the improvement they promise is noise.
        cool = max(self.budget.remain, 0) / self.budget.budget_tokens
        utility = (log_eipt + penalty + (1.0 - cool) * np.log(cost)).reshape(len(C), L)
        c, li, promoted = choose_fidelity(eipt_k, self.tau, utility=utility)
        # eq. 8: if the budget affords at most one more full-fidelity trial, exploit.
        full_cost = float(cost.reshape(len(C), L)[c, -1])
        t_hat = self.budget.t_hat(full_cost)
        phase = "promote" if promoted else "explore"
        # the final candidate: the observed config (seen at a lower fidelity, or at r_max)
        # with the best predicted full-fidelity score, not an extrapolation
        full_seen = {encoded_key(x) for x, k in zip(X, n, strict=True) if k >= self.r_max}
        fresh = [i for i, x in enumerate(X) if encoded_key(x) not in full_seen]
        pool = X[fresh] if fresh else C
        mu_p, _ = posterior_mean_std(model, np.column_stack([pool, np.ones(len(pool))]))
        final_x = pool[int(np.argmax(mu_p))]
        worst_full = self.r_max * self.cost_model.worst_case_per_instance(
            self._max_completion(self.space.decode(final_x) | self.fixed))
        if (t_hat <= 1 or self.budget.available < 2 * worst_full) and not self._final_done:
            # the last full trial the budget surely affords goes to the best prediction
            self._final_done = True
            self.last_decision = {"phase": "final", "f_star": f_star, "t_hat": t_hat,
                                  "eta": self.budget.eta, "fidelity": self.r_max}
            return self.space.decode(final_x), self.r_max, dict(self.last_decision)
        self.last_decision = {"phase": phase, "f_star": f_star, "t_hat": t_hat,
                              "eipt_full_per_1k": float(eipt_k[:, -1].max()),
                              "eipt_best_per_1k": float(eipt_k.max()), "eta": self.budget.eta,
                              "fidelity": int(levels[li])}
        return self.space.decode(C[c]), int(levels[li]), dict(self.last_decision)

    def _measured(self, C: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """(len(C), len(levels)) mask: that config already ran or runs at >= that level."""
        most: dict[tuple[float, ...], int] = {}
        for tid, t in self.trials.items():
            res = self.results.get(tid)
            if res is not None and (res.status == TrialStatus.FAILED or res.n_evaluated == 0):
                continue  # a failed trial measured nothing
            k = encoded_key(self.space.encode(t.config))
            most[k] = max(most.get(k, 0), t.fidelity if res is None else res.n_evaluated)
        seen = np.array([most.get(encoded_key(c), 0) for c in C])
        return seen[:, None] >= np.asarray(levels)[None, :]

    def _pending_penalty(self, Z: np.ndarray, model) -> np.ndarray:
        """Local penalisation of running trials' points so parallel asks spread out."""
        if not self.pending:
            return np.zeros(len(Z))
        P = np.array([np.append(self.space.encode(t.config),
                                fidelity_to_unit(t.fidelity, self.r_min, self.r_max))
                      for t in self.pending.values()])
        try:
            ls = model.covar_module.base_kernel.lengthscale.detach().numpy().reshape(-1)
        except AttributeError:
            ls = np.full(Z.shape[1], 0.2)
        ls = np.resize(ls, Z.shape[1]) if ls.size != Z.shape[1] else ls
        d2 = (((Z[:, None, :] - P[None, :, :]) / ls) ** 2).sum(-1)
        return np.log(np.clip(1.0 - np.exp(-0.5 * d2), 1e-12, 1.0)).sum(-1)
