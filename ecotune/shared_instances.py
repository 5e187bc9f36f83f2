"""How much of a score's noise is a config's own, when every config answers the same instances.

Every trial of a study scores its config on a prefix of one nested instance order, so the
configs share their instances, and an instance that is easy (or hard) is easy for every
config. The binomial variance p(1 − p)/r of one config's prefix mean then overstates how
far two configs' scores differ by chance, and so how far a screen lies from its own
config's full score: a surrogate that takes it at face value shrinks the best screens to
the middle (docs/benchmarks.md, "Shared instances").

The config's own part is measured from the instance scores themselves, with the additive
(two-way) model ``s(c, i) = f(c) + b(i) + e(c, i)`` fitted by least squares over every
(config, instance) score: ``f(c)`` the config's level, ``b(i)`` the instance's ease, which
also absorbs how a prefix's instances differ from a longer one's. The residual variance
(``Σ e² / (cells − configs − instances + 1)``) is the configs' own per-instance variance;
``κ`` is that over the binomial variance ``p(1 − p)`` of the same cells, in
``[KAPPA_FLOOR, 1]`` (a score in [0, 1] varies at most binomially): the scale of the
surrogate's noise, a moment estimate where ``noise: scaled`` chooses ``κ`` by marginal
likelihood (:func:`ecotune.surrogate.fit_scaled_noise_gp`).

The same fit also says how easy a config's instances were: a screen on the first r
instances is an unbiased estimate of the full score over random orders, but a study has one
order, and its first instances may be easier than the rest for every config.
:func:`two_way_levels` puts each config on the longest prefix's footing (``noise:
adjusted``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import lsqr

from ecotune.best import instance_map
from ecotune.surrogate import NOISE_SCALES

#: the smallest κ (the smallest scale the marginal-likelihood search tries)
KAPPA_FLOOR = NOISE_SCALES[-1]


def config_instance_scores(results: Iterable[tuple[Hashable, Any]]
                           ) -> dict[Hashable, dict[str, float]]:
    """``{config key: {instance id: score}}`` of each config's trial with the most instance
    scores, from ``(config key, TrialResult)`` pairs; trials without instance scores give none."""
    most: dict[Hashable, dict[str, float]] = {}
    for key, res in results:
        scores = instance_map(res) if res.score is not None else {}
        if len(scores) > len(most.get(key, {})):
            most[key] = scores
    return {k: v for k, v in most.items() if v}


def _two_way_fit(configs: Sequence[Mapping[str, float]]):
    """Least squares of ``s(c, i) = f(c) + b(i) + e`` by SciPy's LSQR on the sparse design
    of config and instance indicators: (config index, instance index, score, fitted
    coefficients [f..., b...], residual degrees of freedom) per cell. Nested prefixes share
    their first instance, so the design is connected and its rank is configs + instances − 1
    (f and b are fixed up to one constant, which neither κ nor a level depends on)."""
    ids = {k: j for j, k in enumerate(dict.fromkeys(k for c in configs for k in c))}
    cfg = np.array([n for n, c in enumerate(configs) for _ in c], dtype=int)
    inst = np.array([ids[k] for c in configs for k in c], dtype=int)
    s = np.array([v for c in configs for v in c.values()], float)
    dof = len(s) - len(configs) - len(ids) + 1
    if not configs or dof <= 0:
        return cfg, inst, s, None, dof
    rows = np.arange(len(s))
    design = sparse.csr_array((np.ones(2 * len(s)), (np.r_[rows, rows],
                                                     np.r_[cfg, len(configs) + inst])))
    coef = lsqr(design, s, atol=1e-12, btol=1e-12, iter_lim=10 * design.shape[1])[0]
    return cfg, inst, s, coef, dof


def shared_instance_kappa(configs: Sequence[Mapping[str, float]]) -> float | None:
    """``κ`` = the configs' own per-instance variance over the binomial ``p(1 − p)``, from
    each config's ``{instance id: score}``; None while the model has no residual degree of
    freedom (no instance measured by two configs)."""
    configs = [c for c in configs if c]
    cfg, inst, s, coef, dof = _two_way_fit(configs)
    if coef is None:
        return None
    resid = s - coef[cfg] - coef[len(configs) + inst]
    n_cfg, n_inst = np.bincount(cfg), np.bincount(inst)
    half = 0.5 / n_cfg  # p kept off 0 and 1, as a prior of half an instance each way
    p = np.clip(np.bincount(cfg, s) / n_cfg, half, 1.0 - half)
    shared = n_inst[inst] > 1  # an instance of one config fits exactly: no information
    pq = float((p * (1.0 - p))[cfg][shared].mean())
    return float(np.clip(float((resid ** 2).sum()) / dof / pq, KAPPA_FLOOR, 1.0))


def two_way_levels(configs: Mapping[Hashable, Mapping[str, float]]) -> dict[Hashable, float]:
    """Each config's fitted score on every instance the study measured, ``f(c)`` + the mean
    of ``b(i)`` over them (the longest prefix): its prefix mean corrected for how easy its
    own instances are. Least squares makes a config's residuals sum to zero, so this is its
    prefix mean minus (its instances' mean ease − the longest prefix's). Empty while the
    model has no residual degree of freedom."""
    keys = [k for k, c in configs.items() if c]
    cfg, inst, s, coef, dof = _two_way_fit([configs[k] for k in keys])
    if coef is None:
        return {}
    ease = float(coef[len(keys):].mean())
    return {k: float(coef[j]) + ease for j, k in enumerate(keys)}
