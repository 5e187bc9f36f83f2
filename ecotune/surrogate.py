"""Gaussian-process surrogates of score over (config, fidelity), fitted by marginal likelihood.

Inputs are configs encoded in ``[0, 1]^d`` (see :mod:`ecotune.space`) with the fidelity
appended as its last column, normalised to ``s = (r − r_min)/(r_max − r_min)``. A score
measured on r instances is a mean of per-instance scores, so its noise variance is known
up to the score's spread: ``Var ≈ p(1 − p)/r``; it is passed as fixed observation noise,
and the GP learns only the latent landscape. A score that comes without per-instance scores
(a whole evaluation, e.g. a deterministic function at a fidelity) has no known spread:
:func:`fit_scaled_noise_gp` then scales that variance by κ chosen by marginal likelihood
(EcoTune), or ``infer_noise`` leaves it to BoTorch's own homoskedastic likelihood, as its
tutorials do (the BoTorch peers).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood

log = logging.getLogger(__name__)
#: every tensor here is float64 (GP fits in float32 are unstable); set per tensor, never
#: as torch's global default, so importing this module changes nothing for anyone else
DTYPE = torch.float64


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A float64 tensor of ``a`` (what every model and acquisition here takes)."""
    return torch.as_tensor(np.asarray(a, float), dtype=DTYPE)


def fidelity_to_unit(r: np.ndarray | float, r_min: int, r_max: int) -> np.ndarray:
    r = np.asarray(r, float)
    return np.zeros_like(r) if r_max == r_min else (r - r_min) / (r_max - r_min)


def score_noise(y: np.ndarray, n: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Observation noise of a mean over ``n`` instance scores in [0, 1]."""
    p = np.clip(y, 0.05, 0.95)
    return np.maximum(p * (1 - p) / np.maximum(n, 1), floor)


def fit_multi_fidelity_gp(X: np.ndarray, s: np.ndarray, y: np.ndarray, n: np.ndarray,
                          state_dict: dict | None = None, refit: bool = True,
                          infer_noise: bool = False) -> SingleTaskMultiFidelityGP:
    """Fit a multi-fidelity GP (BoTorch's linear-truncated fidelity kernel).

    Args:
        X: encoded configs, shape (N, d).
        s: normalised fidelities, shape (N,).
        y: scores, shape (N,).
        n: instances each score was measured on, shape (N,).
        state_dict: hyperparameters of a previous fit to warm-start from.
        refit: optimise the hyperparameters; False reuses ``state_dict`` as is (the
            posterior still conditions on all data), which keeps asks fast between refits.
        infer_noise: fit one noise level by marginal likelihood (BoTorch's default
            likelihood) instead of the binomial ``p(1 − p)/n``.
    """
    train_X = as_tensor(np.column_stack([X, s]))
    train_Y = as_tensor(y).reshape(-1, 1)
    train_Yvar = None if infer_noise else as_tensor(score_noise(y, n)).reshape(-1, 1)
    model = SingleTaskMultiFidelityGP(
        train_X, train_Y, train_Yvar=train_Yvar, data_fidelities=[X.shape[1]],
        outcome_transform=Standardize(m=1))
    _fit(model, state_dict, refit)
    return model


def fit_single_fidelity_gp(X: np.ndarray, y: np.ndarray, n: np.ndarray,
                           state_dict: dict | None = None, refit: bool = True,
                           noise_scale: float = 1.0, infer_noise: bool = False
                           ) -> SingleTaskGP:
    """Fit a GP over configs whose observations are prefix means with binomial noise
    ``p(1 − p)/n`` (the BoTorch baseline, and EcoTune's default surrogate), times
    ``noise_scale``; ``refit=False`` reuses ``state_dict`` as is; ``infer_noise`` fits one
    noise level by marginal likelihood instead (BoTorch's default likelihood)."""
    train_Yvar = (None if infer_noise
                  else as_tensor(noise_scale * score_noise(y, n)).reshape(-1, 1))
    model = SingleTaskGP(as_tensor(X), as_tensor(y).reshape(-1, 1),
                         train_Yvar=train_Yvar, outcome_transform=Standardize(m=1))
    _fit(model, state_dict, refit)
    return model


#: the noise scales κ :func:`fit_scaled_noise_gp` chooses among (decades: the marginal
#: likelihood is flat within one, and each is a full fit)
NOISE_SCALES = (1.0, 0.1, 0.01, 0.001)


def fit_scaled_noise_gp(X: np.ndarray, y: np.ndarray, n: np.ndarray,
                        state_dict: dict | None = None) -> tuple[SingleTaskGP, float]:
    """:func:`fit_single_fidelity_gp` with noise ``κ·p(1 − p)/n``, for scores measured
    without per-instance scores, whose spread is unknown.

    ``p(1 − p)/n`` is the variance of a mean of n scores in [0, 1] at its largest, so it
    stays the ceiling (κ ≤ 1); a deterministic score can be far below it, unless its low
    fidelities are biased (a config told at two fidelities shows that as noise). κ is
    chosen among :data:`NOISE_SCALES` by the fitted exact marginal log likelihood,
    comparable across κ (the same data and outcome transform). Returns the model and κ.
    """
    best: tuple[float, SingleTaskGP, float] | None = None
    for kappa in NOISE_SCALES:
        model = fit_single_fidelity_gp(X, y, n, state_dict, noise_scale=kappa)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        model.train()
        with torch.no_grad():
            value = float(mll(model(*model.train_inputs), model.train_targets))
        model.eval()
        if best is None or value > best[0]:
            best = (value, model, kappa)
    assert best is not None
    return best[1], best[2]


def _fit(model, state_dict: dict | None, refit: bool = True) -> None:
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=False)
        except RuntimeError as e:  # shapes changed (the space's dims, not the data count)
            log.debug("warm start ignored, refitting: %s", e)
            refit = True
    if not refit and state_dict is not None:
        model.eval()
        return
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 75}})
        except Exception as e:  # noqa: BLE001 - fall back to the prior hyperparameters
            log.warning("GP hyperparameter fit failed (%s: %s); using the prior ones",
                        type(e).__name__, e)
    model.eval()


def hyperparameters(model) -> dict:
    """The fitted hyperparameters, without training data, for warm starts."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if "train" not in k and "outcome_transform" not in k}


def hyperparameters_to_json(hyper: dict | None) -> dict | None:
    """:func:`hyperparameters` as JSON, ``{name: [shape, dtype, values]}`` (exact: a float64
    goes through JSON unchanged), so a journal can carry where the next fit starts."""
    if hyper is None:
        return None
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch."), v.reshape(-1).tolist()]
            for k, v in hyper.items()}


def hyperparameters_from_json(data: dict | None) -> dict | None:
    """The inverse of :func:`hyperparameters_to_json`."""
    if data is None:
        return None
    return {k: torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)
            for k, (shape, dtype, values) in data.items()}


def posterior_mean_std(model, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of the latent score at inputs Z, shape (M,)."""
    with torch.no_grad():
        post = model.posterior(as_tensor(Z))
        mean = post.mean.reshape(-1).numpy()
        std = post.variance.clamp_min(1e-12).sqrt().reshape(-1).numpy()
    return mean, std
