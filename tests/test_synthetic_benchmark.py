"""On the synthetic multi-fidelity landscape with token costs, EcoTune reaches the optimum
region with clearly fewer tokens than random search (same seeds, same budget)."""

import numpy as np

from ecotune.bench.synthetic import SyntheticEvaluator, SyntheticLandscape, synthetic_space
from ecotune.optimizers import make_optimizer
from ecotune.study_loop import run_study

BUDGET = 100_000
SEEDS = (0, 1, 2)


class _Watch:
    """Records the tokens spent when the incumbent's true score first reaches the target."""

    def __init__(self, land: SyntheticLandscape, target: float):
        self.land, self.target, self.hit = land, target, None

    def on_trial_end(self, opt, trial, result):
        cfg, _ = opt.best()
        if self.hit is None and cfg is not None and self.land.true_score(cfg) >= self.target:
            self.hit = opt.tokens_used


def _tokens_to_target(name: str, land: SyntheticLandscape, target: float) -> list[float]:
    space = synthetic_space()
    out = []
    for seed in SEEDS:
        opt = make_optimizer(name, space=space, budget_tokens=BUDGET, r_min=5, r_max=60,
                             seed=seed)
        watch = _Watch(land, target)
        run_study(opt, SyntheticEvaluator(land), [watch])
        assert opt.tokens_used <= BUDGET
        out.append(float(watch.hit if watch.hit is not None else BUDGET))  # never: whole budget
    return out


def test_ecotune_reaches_optimum_region_with_fewer_tokens_than_random():
    land = SyntheticLandscape(200, seed=1)
    target = land.optimum(synthetic_space(), 5000) - 0.1
    eco = _tokens_to_target("ecotune", land, target)
    rnd = _tokens_to_target("random", land, target)
    ratio = np.sum(eco) / np.sum(rnd)
    print(f"tokens to target: ecotune {eco}, random {rnd}, ratio {ratio:.2f}")
    assert ratio < 0.6, (eco, rnd)
