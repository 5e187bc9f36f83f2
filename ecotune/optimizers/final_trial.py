"""The final full trial of :class:`~ecotune.optimizers.ecotune.EcoTuneOptimizer` (eq. 8), and
the rung before it (``final_trial="rung"``, or ``"auto"`` where trials tell instance scores):
the final chosen on more than r_min evidence.

Eq. 8 sends the last full trial to the best predicted config once T̂ = ⌊B_remain / E[T]⌋ ≤ 1.
With budgets of one or two full evaluations that moment comes right after the initial
design, and the pick is made from r_min-instance screens, where the luckiest screen looks
best (docs/benchmarks.md, "Where the 49-config arithmetic surrogate is lost"). Successive
halving instead finishes a config that came up through a rung. The final rung does that
once: at the same moment, the ``RUNG_SIZE`` best configs by the GP's mean (not yet at
r_max) are promoted to the highest fidelity level the budget allows while the final's
expected tokens stay in hand (``rung_reserve`` times them, :data:`RESERVE` by default),
each paying only its new instances, and then the one with the best refitted mean is
finished at r_max. Where no level fits, the final goes out at once, as under eq. 8.

The plan is journalled with each rung ask (``meta``), so a resumed study goes on with it.
Run in parallel, the final is picked from what the rung has told when its last config has
been asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ecotune.optimizers.base import Proposal, encoded_key, told_without_instance_scores
from ecotune.optimizers.state import StudyState
from ecotune.prompt_tokens import increment_prompt_tokens

#: configs promoted by the rung (Hyperband's reduction factor η = 3), 2 where 3 do not fit.
RUNG_SIZE = 3
#: the final's expected tokens kept in hand while the rung spends, times this margin
#: (the default of ``rung_reserve``): 1, once; 1.25 until 2026-12-08, when 1 passed a
#: pre-registered two-stage comparison on the peer benchmark by a margin within noise
#: (docs/benchmarks.md, "How much the rung keeps in hand").
RESERVE = 1.0

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class FinalTrial:
    """Mixed into EcoTuneOptimizer: asks the final full trial, and the rung before it."""

    # what this reads of the optimizer it is mixed into
    state: StudyState
    levels: np.ndarray
    last_decision: dict[str, Any]
    _final_done: bool
    _rung: dict[str, Any] | None
    final_trial: str
    rung_reserve: float

    def _final_choice(self, model, X: np.ndarray, n: np.ndarray, f_star: float,
                      predict, step_cost: float) -> Proposal | None:
        """Eq. 8: when the budget affords at most one more full trial (``final_trial``), it goes
        to the observed config not yet at r_max in this study (a warm start's prior champion
        too: the answer counts this study's trials only) with the best predicted full score;
        with a rung first (:meth:`_rung_first`), its asks come before, and the final goes to
        the best of the rung's configs. ``step_cost``: the expected tokens of the step
        chosen otherwise."""
        if self._final_done:
            return None
        if self._rung is not None:
            return self._rung_step(predict, f_star)
        here = self._measured_counts(X)
        fresh = [i for i, k in enumerate(n) if k < self.r_max or here[i] < self.r_max]
        pool = X[fresh] if fresh else X
        mu_p, _ = predict(pool)
        final_x = pool[int(np.argmax(mu_p))]
        max_tok = self.state.max_completion(self.space.decode(final_x) | self.fixed)
        expected = float(self.state.cost_model.predict(final_x[None], [max_tok], self.r_max)[0])
        worst = self.r_max * self.state.cost_model.worst_case_per_instance(max_tok)
        t_hat, budget = self.state.budget.t_hat(expected), self.state.budget
        if (budget.remain - step_cost < expected if self.final_trial == "last"
                else t_hat <= 1 or budget.available < 2 * worst):
            rung = self._plan_rung(pool, mu_p, f_star) if self._rung_first() else None
            if rung is not None:
                return rung
            self._final_done = True
            self.last_decision = {"phase": "final", "f_star": f_star, "t_hat": t_hat,
                                  "eta": budget.eta, "fidelity": self.r_max,
                                  "expected": expected, "step_tokens": step_cost}
            return self.space.decode(final_x), self.r_max, dict(self.last_decision)
        return None

    def _rung_first(self) -> bool:
        """Whether the final full trial comes after a rung (see ``final_trial``)."""
        if self.final_trial == "auto":
            return not told_without_instance_scores(self.state)
        return self.final_trial == "rung"

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
        mean ``mu``, to the highest level below r_max whose tokens leave ``rung_reserve``
        times the most expected tokens of finishing one of them; None if no level fits."""
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
                if spend + self.rung_reserve * finish <= available:
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
