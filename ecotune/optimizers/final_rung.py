"""The final rung (``final_trial="rung"``) of :class:`~ecotune.optimizers.ecotune.EcoTuneOptimizer`:
eq. 8's final full trial chosen on more than r_min evidence.

Eq. 8 sends the last full trial to the best predicted config once T̂ = ⌊B_remain / E[T]⌋ ≤ 1.
With budgets of one or two full evaluations that moment comes right after the initial
design, and the pick is made from r_min-instance screens, where the luckiest screen looks
best (docs/benchmarks.md, "Where the 49-config arithmetic surrogate is lost"). Successive
halving instead finishes a config that came up through a rung. The final rung does that
once: at the same moment, the ``RUNG_SIZE`` best configs by the GP's mean (not yet at
r_max) are promoted to the highest fidelity level the budget allows while the final's
expected tokens stay in hand (``RESERVE`` times them), each paying only its new instances,
and then the one with the best refitted mean is finished at r_max. Where no level fits, the
final goes out at once, as under eq. 8.

The plan is journalled with each rung ask (``meta``), so a resumed study goes on with it.
Run in parallel, the final is picked from what the rung has told when its last config has
been asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ecotune.optimizers.base import Proposal, encoded_key
from ecotune.optimizers.state import StudyState
from ecotune.prompt_tokens import increment_prompt_tokens

#: configs promoted by the rung (Hyperband's reduction factor η = 3), 2 where 3 do not fit.
RUNG_SIZE = 3
#: the final's expected tokens kept in hand while the rung spends, times this margin.
RESERVE = 1.25

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class FinalRung:
    """Mixed into EcoTuneOptimizer: plans and runs the rung before the final full trial."""

    # what the rung reads of the optimizer it is mixed into
    state: StudyState
    levels: np.ndarray
    last_decision: dict[str, Any]
    _final_done: bool
    _rung: dict[str, Any] | None

    def _increment_tokens(self, x: np.ndarray, done: float, r: int) -> float:
        """Expected tokens of raising config ``x`` from ``done`` instances to ``r``."""
        if r <= done:
            return 0.0
        cfg = self.space.decode(x) | self.fixed
        prompts = increment_prompt_tokens(self.state.prompt_tokens, [cfg], np.array([done]),
                                          np.array([r]))
        return float(self.state.cost_model.predict(
            x[None], [self.state.max_completion(cfg)], r - done, prompt_tokens=prompts)[0])

    def _plan_rung(self, pool: np.ndarray, mu: np.ndarray, f_star: float) -> Proposal | None:
        """The rung's first ask: the best ``RUNG_SIZE`` (else 2) configs of ``pool`` by the
        mean ``mu``, to the highest level below r_max whose tokens leave ``RESERVE`` times
        the most expected tokens of finishing one of them; None if no level fits."""
        order = np.argsort(-mu, kind="stable")
        done = self._measured_counts(pool)
        available = self.state.budget.available
        for k in (RUNG_SIZE, 2):
            if len(order) < k:
                continue
            top = order[:k]
            for level in sorted(self.levels[:-1], reverse=True):
                if all(done[i] >= level for i in top):
                    continue
                spend = sum(self._increment_tokens(pool[i], done[i], int(level)) for i in top)
                finish = max(self._increment_tokens(pool[i], max(done[i], level), self.r_max)
                             for i in top)
                if spend + RESERVE * finish <= available:
                    self._rung = {"x": [pool[i].tolist() for i in top], "level": int(level),
                                  "asked": set()}
                    return self._rung_step(None, f_star)
        return None

    def _rung_step(self, predict: Predict | None, f_star: float) -> Proposal:
        """The next rung config at the rung's level, or, once all were asked, the final
        full trial for the rung config with the best mean under ``predict``."""
        rung = self._rung
        assert rung is not None
        X = np.array(rung["x"], float)
        done = self._measured_counts(X)
        todo = [i for i, x in enumerate(X)
                if encoded_key(x) not in rung["asked"] and done[i] < rung["level"]]
        budget = self.state.budget
        if todo:
            i = todo[0]
            self.last_decision = {"phase": "rung", "f_star": f_star, "eta": budget.eta,
                                  "fidelity": rung["level"], "already": int(done[i]),
                                  "rung": rung["x"], "level": rung["level"]}
            return self.space.decode(X[i]), rung["level"], dict(self.last_decision)
        assert predict is not None
        mu, _ = predict(X)
        self._final_done, self._rung = True, None
        self.last_decision = {"phase": "final", "f_star": f_star, "eta": budget.eta,
                              "fidelity": self.r_max, "after_rung": True,
                              "rung_means": [float(m) for m in mu]}
        return self.space.decode(X[int(np.argmax(mu))]), self.r_max, dict(self.last_decision)

    def _replay_rung(self, trial, meta: dict[str, Any]) -> None:
        """Keep the rung's plan and progress (and the final's) from a journalled ask."""
        phase = meta.get("phase")
        if phase == "rung":
            if self._rung is None or self._rung["x"] != meta["rung"]:
                self._rung = {"x": meta["rung"], "level": int(meta["level"]), "asked": set()}
            self._rung["asked"].add(encoded_key(self.space.encode(trial.config)))
        elif phase == "final":
            self._final_done, self._rung = True, None
