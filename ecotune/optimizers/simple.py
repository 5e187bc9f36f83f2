"""Model-free baselines: random search, quasi-random (Sobol) search, and the HELM default.

All run every trial at r_max: they are the single-fidelity references the paper compares to.
Each draw depends only on the seed and the trial number, so a resumed study continues the
same sequence.
"""

from __future__ import annotations

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.space import helm_default


class RandomSearch(Optimizer):
    """Uniform random configurations in the (encoded) space; over a finite ``candidates``
    set, a random order without repeats (done when every candidate ran)."""

    name = "random"
    candidate_aware = True

    def _propose(self) -> Proposal | None:
        if self.state.candidates is not None:
            order = self._rng(0, 7).permutation(len(self.state.candidates))
            if self.state.n_asked >= len(order):
                return None
            return dict(self.state.candidates[int(order[self.state.n_asked])]), self.r_max, {}
        u = self._rng(self.state.n_asked).random(self.space.dim)
        return self.space.decode(u), self.r_max, {}


class QMCSearch(Optimizer):
    """Scrambled Sobol sequence (scipy.stats.qmc): even coverage with few points."""

    name = "qmc"

    def _propose(self) -> Proposal:
        return self._sobol_config(), self.r_max, {}


class HelmDefault(Optimizer):
    """HELM's default decoding as a fixed reference: one trial at r_max, then done."""

    name = "helm"

    def _propose(self) -> Proposal | None:
        if self.state.n_asked >= 1:
            return None
        return helm_default(self.space, self.fixed.get("max_tokens")), self.r_max, {}
