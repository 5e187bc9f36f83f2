"""Cost-aware peers from BoTorch's own toolbox: EI per unit cost and multi-fidelity KG.

* ``eipu``: expected improvement per unit cost (Snoek et al. 2012; BoTorch's cost-aware
  tutorial): a GP on the score at full fidelity, the study's token cost model as a BoTorch
  model (:class:`ecotune.cost.BoTorchTokenCost`), and ``log EI(θ) − log E[T(θ)]``
  maximised over a candidate set. Every trial runs at ``r_max``.
* ``mfkg``: BoTorch's :class:`~botorch.acquisition.knowledge_gradient.qMultiFidelityKnowledgeGradient`
  on a :class:`~botorch.models.SingleTaskMultiFidelityGP` with the fidelity ``s = r / r_max``
  as its last input, an :class:`~botorch.models.cost.AffineFidelityCostModel` (α·r + β,
  with α and β from the study's cost model) inside an
  :class:`~botorch.acquisition.cost_aware.InverseCostWeightedUtility`, projecting to
  ``s = 1`` — the setup of BoTorch's multi-fidelity KG tutorial, optimised by one-shot KG.

Both are peers, not EcoTune: they use BoTorch's classes as shipped, with small, fixed
optimisation settings so a benchmark of many seeds runs on CPUs. When one-shot KG breaks
down numerically (fantasy models that are not positive definite, NaN acquisition values: seen
on Branin, a noise-free function, from ask 75 with the noise level fitted as BoTorch does, and
from ask 162 when it was the binomial p(1 − p)/r), ``mfkg`` proposes the next config of its
Sobol design instead, logs why and counts it (``fallbacks``; ``phase: fallback`` in the
journal), rather than end the study.

Their GP's noise follows ``noise`` (:class:`~ecotune.optimizers.gp.BoTorchOptimizer`):
binomial for prefix means of instance scores, fitted (BoTorch's default likelihood, as in
its tutorials) for scores told without them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.optim import optimize_acqf_discrete
from linear_operator.utils.errors import NotPSDError

from ecotune.candidates import candidate_set
from ecotune.cost import BoTorchTokenCost
from ecotune.optimizers.base import Proposal, encoded_key
from ecotune.optimizers.gp import BoTorchOptimizer
from ecotune.surrogate import (
    as_tensor,
    fit_multi_fidelity_gp,
    fit_single_fidelity_gp,
    hyperparameters,
    posterior_mean_std,
)
from ecotune.trial import Trial

log = logging.getLogger(__name__)


class _Peer(BoTorchOptimizer):
    """The BoTorch baseline's initial design (``n_init`` Sobol configs) and candidate sets;
    subclasses change the acquisition."""

    def _init(self, fidelity: int) -> Proposal:
        cfg = self._sobol_config()
        return (cfg if self.state.candidates is None else self._unseen_candidate(cfg),
                fidelity, {"phase": "init"})

    def _choices(self, centres: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """Candidate configs and those to avoid (pending; on a finite set, done ones)."""
        if self.state.candidates is None:
            C = candidate_set(self.space, self._rng(self.state.n_asked, 1), centres=centres,
                              n_global=self.n_candidates)
            return C, [self.space.encode(t.config) for t in self.state.pending.values()]
        C = self.state.candidate_X
        full = {encoded_key(self.space.encode(t.config)) for i, t in self.state.trials.items()
                if i in self.state.pending or (i in self.state.results
                                               and self.state.results[i].n_evaluated >= self.r_max)}
        left = np.array([c for c in C if encoded_key(c) not in full])
        return (left, []) if len(left) else None


class EIPerCostOptimizer(_Peer):
    """``eipu``: log EI − log predicted tokens, at full fidelity."""

    name = "eipu"
    candidate_aware = True

    def _propose(self) -> Proposal | None:
        X, n, y = self.state.observations()
        if len(y) + len(self.state.pending) < self.n_init or len(y) < 2:
            return self._init(self.r_max)
        model = fit_single_fidelity_gp(X, y, n, self._hyper, infer_noise=self._infer_noise())
        self._hyper = hyperparameters(model)
        mu, _ = posterior_mean_std(model, X)
        got = self._choices(X[np.argsort(-mu)[:3]])
        if got is None:
            return None
        C, taken = got
        ei = LogExpectedImprovement(model, best_f=float(mu.max()))
        cost = BoTorchTokenCost(self.state.cost_model, self.space, self.state.max_completion,
                              self.r_min, self.r_max, self.fixed, fidelity=False)

        def log_eipu(Xq: torch.Tensor) -> torch.Tensor:
            return ei(Xq) - torch.log(cost(Xq).squeeze(-1).squeeze(-1))

        log_eipu.model = model  # type: ignore[attr-defined]  # optimize_acqf_discrete reads it
        avoid = as_tensor(np.array(taken)) if taken else None
        best, _ = optimize_acqf_discrete(log_eipu, q=1, choices=as_tensor(C), X_avoid=avoid)
        return self.space.decode(best[0].numpy()), self.r_max, {"phase": "bo"}


class MFKGOptimizer(_Peer):
    """``mfkg``: one-shot qMultiFidelityKnowledgeGradient with an affine token cost."""

    name = "mfkg"
    candidate_aware = True

    def __init__(self, *args: Any, num_fantasies: int = 8, num_restarts: int = 2,
                 raw_samples: int = 32, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_fantasies, self.num_restarts, self.raw_samples = (
            num_fantasies, num_restarts, raw_samples)
        self._options.update(num_fantasies=num_fantasies)
        self.fallbacks = 0  # asks answered by the Sobol design because KG broke down

    def _propose(self) -> Proposal | None:
        """One-shot KG draws its fantasies and restarts from torch's global RNG: each ask
        runs on a fork of it seeded by (seed, ask number), so a run does not depend on what
        ran before it in the process (it did: one seed, two runs) and a resume asks alike."""
        with torch.random.fork_rng():
            torch.manual_seed(int(self.seed) * 1_000_003 + self.state.n_asked)
            try:
                return self._propose_seeded()
            except (NotPSDError, RuntimeError) as e:  # see the module docstring
                if not _numerical(e):
                    raise
                log.warning("mfkg, ask %d: the knowledge gradient failed (%s); the next "
                            "Sobol config instead", self.state.n_asked, e)
                cfg, r, _ = self._init(self.r_min if self.state.n_asked % 2 else self.r_max)
                return cfg, r, {"phase": "fallback", "error": f"{type(e).__name__}: {e}"[:200]}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        super()._on_ask(trial, meta)
        self.fallbacks += meta.get("phase") == "fallback"

    def _propose_seeded(self) -> Proposal | None:
        from botorch.acquisition import PosteriorMean
        from botorch.acquisition.cost_aware import InverseCostWeightedUtility
        from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
        from botorch.acquisition.knowledge_gradient import qMultiFidelityKnowledgeGradient
        from botorch.acquisition.utils import project_to_target_fidelity
        from botorch.models.cost import AffineFidelityCostModel
        from botorch.optim import optimize_acqf

        X, n, y = self.state.observations()
        if len(y) + len(self.state.pending) < self.n_init or len(y) < 2:
            return self._init(self.r_min if len(y) % 2 else self.r_max)
        d = self.space.dim
        s = n / self.r_max
        model = fit_multi_fidelity_gp(X, s, y, n, self._hyper, infer_noise=self._infer_noise())
        self._hyper = hyperparameters(model)
        alpha = float(np.mean(self.state.cost_model.alpha(
            X, [self.state.max_completion(self.space.decode(x) | self.fixed) for x in X])))
        cost = AffineFidelityCostModel(fidelity_weights={d: alpha * self.r_max},
                                       fixed_cost=max(self.state.cost_model.beta(), 1.0))
        target = {d: 1.0}

        def project(Z: torch.Tensor) -> torch.Tensor:
            return project_to_target_fidelity(X=Z, target_fidelities=target, d=d + 1)

        bounds = torch.zeros(2, d + 1, dtype=torch.float64)
        bounds[1] = 1.0
        bounds[0, d] = self.r_min / self.r_max
        cur = FixedFeatureAcquisitionFunction(PosteriorMean(model), d=d + 1, columns=[d],
                                              values=[1.0])
        _, cur_val = optimize_acqf(cur, bounds=bounds[:, :d], q=1, num_restarts=2,
                                   raw_samples=32, retry_on_optimization_warning=False)
        kg = qMultiFidelityKnowledgeGradient(
            model=model, num_fantasies=self.num_fantasies, current_value=cur_val,
            cost_aware_utility=InverseCostWeightedUtility(cost_model=cost), project=project)
        cand, _ = optimize_acqf(kg, bounds=bounds, q=1, num_restarts=self.num_restarts,
                                raw_samples=self.raw_samples, retry_on_optimization_warning=False,
                                options={"batch_limit": 2, "maxiter": 20})
        z = cand[0].detach().numpy()
        if not np.isfinite(z).all():
            raise RuntimeError(f"one-shot KG returned a NaN candidate {z}")
        r = int(round(float(np.clip(z[d], 0, 1)) * self.r_max))
        r = max(self.r_min, min(r, self.r_max))
        cfg = self.space.decode(z[:d])
        if self.state.candidates is not None:  # the nearest candidate not yet measured at r
            C = self.state.candidate_X
            done = self._measured(C)
            left = done < r
            if not left.any():
                r, left = self.r_max, done < self.r_max
                if not left.any():
                    return None
            dist = np.where(left, ((C - z[:d]) ** 2).sum(axis=1), np.inf)
            cfg = self.space.decode(C[int(np.argmin(dist))])
        return cfg, r, {"phase": "bo"}

    def _measured(self, C: np.ndarray) -> np.ndarray:
        """Instances measured (or being measured) of each candidate so far."""
        most: dict[tuple[float, ...], int] = {}
        for i, t in self.state.trials.items():
            res = self.state.results.get(i)
            n = t.fidelity if res is None else res.n_evaluated
            k = encoded_key(self.space.encode(t.config))
            most[k] = max(most.get(k, 0), n)
        return np.array([most.get(encoded_key(c), 0) for c in C])


def _numerical(e: Exception) -> bool:
    """A numerical breakdown of the GP or its acquisition, not a bug in how it is called."""
    return isinstance(e, NotPSDError) or re.search(
        r"positive definite|probability tensor contains|\bnan\b", str(e), re.IGNORECASE) is not None
