"""CMA-ES baseline, driven through the ``cmaes`` library's ask/tell interface.

CMA-ES works in generations: it is told the scores of a whole population at once. Trials
are told one by one here, so results are buffered until a population is complete. The
library's own random stream is advanced on replay by asking again, so a resumed study
rebuilds exactly the same strategy state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cmaes import CMA

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.trial import Trial, TrialResult


class CMAESOptimizer(Optimizer):
    """CMA-ES over the unit cube at r_max (maximising score).

    Args:
        population_size: CMA-ES λ (default: the library's 4 + 3 ln d).
        sigma0: initial step size in the unit cube.
    """

    name = "cmaes"

    def __init__(self, *args: Any, population_size: int | None = None, sigma0: float = 0.3,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        d = self.space.dim
        self._cma = CMA(mean=np.full(d, 0.5), sigma=sigma0, bounds=np.tile([0.0, 1.0], (d, 1)),
                        seed=self.seed, population_size=population_size)
        self._x: dict[int, np.ndarray] = {}
        self._told: list[tuple[np.ndarray, float]] = []
        self._proposing = False
        self._options.update(population_size=population_size, sigma0=sigma0)

    def _propose(self) -> Proposal:
        self._proposing = True
        x = self._cma.ask()
        return self.space.decode(x), self.r_max, {"x": [float(v) for v in x]}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        if not self._proposing:  # replay: advance the library's random stream
            self._cma.ask()
        self._proposing = False
        self._x[trial.id] = np.asarray(meta["x"], float)

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        score = result.score if result.score is not None else 0.0
        self._told.append((self._x.pop(trial.id), -float(score)))
        if len(self._told) >= self._cma.population_size:
            batch = self._told[: self._cma.population_size]
            self._told = self._told[self._cma.population_size:]
            self._cma.tell(batch)
