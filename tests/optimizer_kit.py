"""What the optimizer tests share: a synthetic landscape, its space, and how they build and
tell an optimizer (test_optimizers, test_ecotune_optimizer, test_peer_optimizers)."""

import numpy as np

from ecotune.bench.synthetic import SyntheticLandscape, synthetic_space
from ecotune.optimizers import make_optimizer
from ecotune.trial import TrialResult

LAND = SyntheticLandscape(120, seed=3)
SPACE = synthetic_space()

#: optimizers whose every ask is an inner optimisation (one-shot KG: seconds per ask on
#: two cores): the contract is checked on fewer trials
SLOW = {"mfkg": {"max_trials": 8}}


def tell(opt, trial, **fields):
    """Tell ``trial`` a result built from a score and token counts."""
    opt.tell(trial, TrialResult.for_trial(trial, **fields))


def make_opt(name, journal=None, budget=30_000, **kw):
    """``name`` over the synthetic space: r in [5, 40], seed 1, fewer trials if slow."""
    kw = {**SLOW.get(name, {}), **kw}
    return make_optimizer(name, space=SPACE, budget_tokens=budget, r_min=5, r_max=40, seed=1,
                          journal=journal, **kw)


def smooth_score(opt, trial):
    """A deterministic whole-evaluation score of the config (the same at every fidelity)."""
    u = opt.space.encode(trial.config)
    return float(0.2 + 0.6 * np.exp(-4.0 * np.sum((u - 0.3) ** 2)))
