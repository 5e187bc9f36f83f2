"""Token cost model ``T(θ, r) = α(θ)·r + β(θ)``, learned online.

``α(θ)`` is the expected tokens of one instance (prompt + completion), ``β(θ)`` a fixed
per-trial overhead. Both are regressed on the encoded config over a sliding window of the
most recent trials, so the model follows drift (a server whose outputs get longer, say)
and predicts the cost of any (config, fidelity) before it runs. Until enough trials are
seen it falls back to a prior built from the sampling limits: prompt tokens from a hint,
completions at half of ``max_tokens``.

`BoTorchTokenCost` puts the same model in BoTorch's shape (a ``DeterministicModel``,
like BoTorch's ``AffineFidelityCostModel``) so acquisitions compose with it and it is
valid at any point of the cube, not only on a precomputed grid.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.models.deterministic import DeterministicModel


@dataclass(frozen=True)
class CostObservation:
    x: np.ndarray  # encoded config, shape (d,)
    n_evaluated: int
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int  # the config's max_tokens × samples: the completion ceiling


class TokenCostModel:
    """Ridge regressions of a trial's prompt and completion tokens on the config.

    Prompt tokens of a trial are fitted as ``α_p(θ)·r + β`` on trial totals, jointly, so a
    fixed per-trial overhead lands in β instead of being smeared over α; completions as a
    fraction of their ceiling per instance, ``α_c(θ) = frac(θ)·max_tokens``. Then
    ``α = α_p + α_c``.

    Args:
        prompt_tokens_hint: prior mean prompt tokens per instance (the trial runner can
            measure it exactly before the study starts).
        window: number of recent trials the fit uses.
        ridge: L2 penalty; keeps early fits close to the mean.
    """

    def __init__(self, prompt_tokens_hint: float = 200.0, window: int = 64, ridge: float = 1.0):
        self.prompt_hint = float(prompt_tokens_hint)
        self.window = window
        self.ridge = ridge
        self.obs: deque[CostObservation] = deque(maxlen=window)
        self._coef_p: np.ndarray | None = None
        self._coef_c: np.ndarray | None = None
        self._beta = 0.0
        self.max_prompt_per_instance = float(prompt_tokens_hint)

    def observe(self, x: np.ndarray, n_evaluated: int, prompt_tokens: int,
                completion_tokens: int, max_tokens: int) -> None:
        """Add a finished trial (failed ones too: their tokens were spent)."""
        if n_evaluated <= 0:
            return
        self.obs.append(CostObservation(np.asarray(x, float), n_evaluated, prompt_tokens,
                                        completion_tokens, max(int(max_tokens), 1)))
        self.max_prompt_per_instance = max(
            (o.prompt_tokens / o.n_evaluated for o in self.obs), default=self.prompt_hint)
        self._fit()

    def _design(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((X.shape[0], 1)), X])

    def _fit(self) -> None:
        X = np.stack([o.x for o in self.obs])
        n = np.array([o.n_evaluated for o in self.obs], float)
        p = np.array([o.prompt_tokens for o in self.obs], float) / n
        # completion tokens as a fraction of the ceiling, logit-free: clipped linear fit
        c = np.array([o.completion_tokens for o in self.obs], float) / n
        cap = np.array([o.max_tokens for o in self.obs], float)
        A = self._design(X)
        w = n / n.mean()  # trials on more instances give better per-instance averages
        self._coef_c = _ridge(A, c / cap, w, self.ridge, prior=0.5)
        # prompt totals = (A·coef)·r + β: slopes shrink to 0, the intercept to the hint, β to
        # 0 (it is only identified once trials ran at different r); the variance of a total
        # grows with r, hence weights 1/r
        D = np.hstack([A * n[:, None], np.ones((len(n), 1))])
        prior = np.zeros(D.shape[1])
        prior[0] = self.prompt_hint
        pen = np.full(D.shape[1], self.ridge)
        pen[0], pen[-1] = self.ridge * 1e-3, self.ridge * 1e-2
        coef = _ridge_prior(D, p * n, 1.0 / n, pen, prior)
        self._coef_p, self._beta = coef[:-1], max(float(coef[-1]), 0.0)

    def _alpha_raw(self, X: np.ndarray, cap: np.ndarray) -> np.ndarray:
        A = self._design(X)
        p = A @ self._coef_p if self._coef_p is not None else np.full(len(X), self.prompt_hint)
        frac = A @ self._coef_c if self._coef_c is not None else np.full(len(X), 0.5)
        return np.maximum(p, 1.0) + np.clip(frac, 0.0, 1.0) * cap

    def alpha(self, X: np.ndarray, max_tokens: np.ndarray) -> np.ndarray:
        """Expected tokens per instance, shape (n,)."""
        X = np.atleast_2d(X)
        return self._alpha_raw(X, np.asarray(max_tokens, float).reshape(-1))

    def beta(self) -> float:
        return self._beta

    def completion_alpha(self, X: np.ndarray, max_tokens: np.ndarray) -> np.ndarray:
        """Expected completion tokens per instance, shape (n,)."""
        X = np.atleast_2d(X)
        A = self._design(X)
        frac = A @ self._coef_c if self._coef_c is not None else np.full(len(X), 0.5)
        return np.clip(frac, 0.0, 1.0) * np.asarray(max_tokens, float).reshape(-1)

    def predict(self, X: np.ndarray, max_tokens: np.ndarray, r: np.ndarray | float,
                prompt_tokens: np.ndarray | None = None) -> np.ndarray:
        """Expected tokens E[T(θ, r)] = α(θ)·r + β, strictly positive.

        With ``prompt_tokens`` (the exact prompt tokens of those r instances, counted before
        the trial), only completions are predicted: ``prompt + α_c(θ)·r``.
        """
        if prompt_tokens is not None:
            comp = self.completion_alpha(X, max_tokens) * np.asarray(r, float)
            return np.maximum(np.asarray(prompt_tokens, float) + comp, 1.0)
        return np.maximum(self.alpha(X, max_tokens) * np.asarray(r, float) + self._beta, 1.0)

    def worst_case_per_instance(self, max_tokens: int) -> float:
        """A cautious ceiling on one instance: the largest prompt seen (or the hint) with a
        25% margin, plus the full completion ceiling."""
        return 1.25 * self.max_prompt_per_instance + float(max_tokens)

    @property
    def n_observations(self) -> int:
        return len(self.obs)


class BoTorchTokenCost(DeterministicModel):
    """Predicted tokens of a trial, ``E[T(θ, r)]``, as a BoTorch model.

    Input rows are encoded configs (``[0, 1]^d``), with the fidelity as a last column when
    ``fidelity`` is set, normalised as the surrogates do: ``s = (r − r_min)/(r_max − r_min)``
    (without it every row is at ``r_max``). Each row is decoded to its config, whose
    ``max_tokens`` (× samples, via ``max_completion``) bounds its completion; the
    :class:`TokenCostModel` predicts the tokens. Output shape: ``X.shape[:-1] + (1,)``.
    """

    def __init__(self, cost: TokenCostModel, space: Any, max_completion: Callable[[dict], int],
                 r_min: int, r_max: int, fixed: dict | None = None, fidelity: bool = True):
        super().__init__()
        self.cost, self.space, self.max_completion = cost, space, max_completion
        self.r_min, self.r_max, self.fixed = r_min, r_max, dict(fixed or {})
        self.fidelity = fidelity
        self._num_outputs = 1

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Z = X.detach().reshape(-1, X.shape[-1]).cpu().numpy()
        d = self.space.dim
        if self.fidelity:
            r = self.r_min + np.clip(Z[:, d], 0.0, 1.0) * (self.r_max - self.r_min)
        else:
            r = np.full(len(Z), float(self.r_max))
        max_tok = [self.max_completion(self.space.decode(z[:d]) | self.fixed) for z in Z]
        tokens = self.cost.predict(Z[:, :d], max_tok, np.maximum(r, 1.0))
        return torch.as_tensor(tokens, dtype=X.dtype).reshape(*X.shape[:-1], 1)


def _ridge_prior(D: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray,
                 prior: np.ndarray) -> np.ndarray:
    """Weighted ridge regression shrinking each coefficient to its ``prior`` with penalty
    ``pen`` (one per column)."""
    W = np.sqrt(w)[:, None]
    Dw = D * W
    target = (y - D @ prior) * W[:, 0]
    return prior + np.linalg.solve(Dw.T @ Dw + np.diag(pen), Dw.T @ target)


def _ridge(A: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float, prior: float) -> np.ndarray:
    """Weighted ridge regression shrinking slopes to 0 and the intercept to ``prior``."""
    W = np.sqrt(w)[:, None]
    reg = lam * np.eye(A.shape[1])
    reg[0, 0] = lam * 1e-3
    target = y - prior
    coef = np.linalg.solve((A * W).T @ (A * W) + reg, (A * W).T @ (target * W[:, 0]))
    coef[0] += prior
    return coef
