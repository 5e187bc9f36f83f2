"""Single-fidelity BoTorch baseline: a GP over configs and log-EI, every trial at r_max."""

from __future__ import annotations

from typing import Any

import numpy as np
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.optim import optimize_acqf_discrete

from ecotune.candidates import candidate_set
from ecotune.optimizers.base import (
    Optimizer,
    Proposal,
    encoded_key,
    told_without_instance_scores,
)
from ecotune.surrogate import (
    as_tensor,
    fit_single_fidelity_gp,
    hyperparameters,
    hyperparameters_from_json,
    hyperparameters_to_json,
    posterior_mean_std,
)

#: ``noise`` settings of the BoTorch peers
NOISES = ("auto", "binomial", "inferred")


class BoTorchOptimizer(Optimizer):
    """GP-EI at full fidelity (BoTorch ``SingleTaskGP`` + ``LogExpectedImprovement``).

    Args:
        n_init: initial Sobol configurations (default: max(4, d // 2 + 2)).
        noise: a score's observation noise: ``binomial``, p(1 − p)/r (exact for a mean of
            r scores in {0, 1}: LLM trials); ``inferred``, one level fitted by marginal
            likelihood, BoTorch's default likelihood as in its tutorials; ``auto``
            (default): binomial while every trial told its per-instance scores, else
            inferred (a whole-evaluation score, e.g. a deterministic function at a
            fidelity, whose spread p(1 − p)/r does not describe).
    """

    name = "botorch"
    candidate_aware = True

    def __init__(self, *args: Any, n_init: int | None = None, n_candidates: int = 512,
                 noise: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.n_init = int(n_init if n_init is not None else max(4, self.space.dim // 2 + 2))
        self.n_candidates = n_candidates
        self.noise = noise
        self._hyper: dict | None = None
        self._options.update(n_init=self.n_init, noise=noise)

    def _model_state(self) -> dict[str, Any] | None:
        """The GP's warm-start hyperparameters (None before the first fit)."""
        return None if self._hyper is None else {"hyper": hyperparameters_to_json(self._hyper)}

    def _restore_model_state(self, state: dict[str, Any]) -> None:
        self._hyper = hyperparameters_from_json(state["hyper"])

    def _infer_noise(self) -> bool:
        """Whether the GP fits its noise level (see ``noise``) rather than take p(1 − p)/r."""
        if self.noise != "auto":
            return self.noise == "inferred"
        return told_without_instance_scores(self.state)

    def _propose(self) -> Proposal | None:
        X, n, y = self.state.observations()
        if len(y) + len(self.state.pending) < self.n_init or len(y) < 2:
            cfg = self._sobol_config()
            return (cfg if self.state.candidates is None else self._unseen_candidate(cfg),
                    self.r_max, {"phase": "init"})
        model = fit_single_fidelity_gp(X, y, n, self._hyper, infer_noise=self._infer_noise())
        self._hyper = hyperparameters(model)
        mu, _ = posterior_mean_std(model, X)
        if self.state.candidates is None:
            C = candidate_set(self.space, self._rng(self.state.n_asked, 1),
                              centres=X[np.argsort(-mu)[:3]], n_global=self.n_candidates)
            taken = [self.space.encode(t.config) for t in self.state.pending.values()]
        else:  # a finite set: every trial runs at r_max, so a candidate that ran is done
            C = self.state.candidate_X
            taken = [self.space.encode(t.config) for t in self.state.trials.values()]
            seen = {encoded_key(x) for x in taken}
            if all(encoded_key(c) in seen for c in C):
                return None
        avoid = as_tensor(np.array(taken)) if taken else None
        acqf = LogExpectedImprovement(model, best_f=float(mu.max()))
        best, _ = optimize_acqf_discrete(acqf, q=1, choices=as_tensor(C), X_avoid=avoid)
        return self.space.decode(best[0].numpy()), self.r_max, {"phase": "bo"}
