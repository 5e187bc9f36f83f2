"""Candidate sets on which acquisition functions are optimised.

Configs mix floats, integers and categoricals, and fidelities are integers, so the
acquisition is maximised over a discrete set: a scrambled Sobol design over the whole
cube (global coverage) plus Gaussian perturbations around the most promising points so far
(local refinement, as in trust-region BO). Every point is snapped to a valid config.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from ecotune.space import SearchSpace


def candidate_set(space: SearchSpace, rng: np.random.Generator, centres: np.ndarray | None = None,
                  n_global: int = 512, n_local: int = 64,
                  scales: tuple[float, ...] = (0.03, 0.12)) -> np.ndarray:
    """Encoded candidate configs, shape (M, d), deduplicated after snapping.

    Args:
        centres: encoded points (k, d) to refine around.
        n_global: Sobol points (rounded up to a power of 2).
        n_local: perturbations per centre and scale.
    """
    seed = int(rng.integers(2**31))
    m = int(np.ceil(np.log2(max(n_global, 2))))
    parts = [qmc.Sobol(d=space.dim, scramble=True, seed=seed).random_base2(m)]
    if centres is not None and len(centres):
        for c in np.atleast_2d(centres):
            for s in scales:
                parts.append(np.clip(c + s * rng.standard_normal((n_local, space.dim)), 0, 1))
    U = np.vstack(parts)
    return snap(space, U)


def snap(space: SearchSpace, U: np.ndarray) -> np.ndarray:
    """Map points to the encodings of the configs they decode to (ints, categories)."""
    Z = np.array([space.encode(space.decode(u)) for u in U])
    _, idx = np.unique(np.round(Z, 9), axis=0, return_index=True)
    return Z[np.sort(idx)]
