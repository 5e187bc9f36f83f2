"""``tpe_hyperband``: Optuna's multivariate TPE with its Hyperband pruner.

This is *not* BOHB (Optuna's TPE does not model the budget; Optuna's own tracker says so):
for BOHB itself see :mod:`ecotune.optimizers.synetune`. Optuna's ``TPESampler`` proposes
configurations and its ``HyperbandPruner`` runs the brackets of successive halving over
fidelity rungs ``r_min·η^k`` (capped at r_max). One Optuna trial is one configuration; each
rung it reaches is one EcoTune trial on the first ``r`` instances. A configuration the
pruner keeps is promoted to the next rung.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.optimizers.optuna_single import suggest_config
from ecotune.trial import Trial, TrialResult, TrialStatus


class TPEHyperbandOptimizer(Optimizer):
    """Multi-fidelity TPE + Hyperband (Optuna).

    Args:
        reduction_factor: η of successive halving (and the rung spacing).
    """

    name = "tpe_hyperband"
    single_fidelity = False

    def __init__(self, *args: Any, reduction_factor: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        optuna.logging.set_verbosity(logging.WARNING)  # its per-trial INFO lines
        self._rf = int(reduction_factor)
        rungs, r = [], self.r_min
        while r < self.r_max:
            rungs.append(r)
            r *= self._rf
        self.rungs = rungs + [self.r_max]
        self.study = optuna.create_study(
            study_name=f"ecotune-tpe-hyperband-{self.seed}", direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.seed, multivariate=True,
                                               group=True, constant_liar=True),
            pruner=optuna.pruners.HyperbandPruner(min_resource=self.r_min,
                                                  max_resource=self.r_max,
                                                  reduction_factor=self._rf))
        self._ot: dict[int, optuna.trial.Trial] = {}  # optuna number -> trial
        self._where: dict[int, tuple[int, int]] = {}  # ecotune trial id -> (number, rung)
        self._promote: list[tuple[int, int]] = []  # (optuna number, next rung)
        self._proposing: tuple[int, int] | None = None
        self._options.update(reduction_factor=self._rf)

    def _suggest(self, ot: optuna.trial.Trial) -> dict[str, Any]:
        return suggest_config(ot, self.space)

    def _propose(self) -> Proposal:
        if self._promote:
            number, rung = self._promote.pop(0)
            ot = self._ot[number]
            config = {n: ot.params[n] for n in ot.params}
        else:
            ot = self.study.ask()
            number, rung = ot.number, 0
            self._ot[number] = ot
            config = self._suggest(ot)
        self._proposing = (number, rung)
        return config, self.rungs[rung], {"number": number, "rung": rung, "params": config}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        number, rung = int(meta["number"]), int(meta["rung"])
        if self._proposing is None:  # replay: rebuild the Optuna trial with its params
            if rung == 0:
                self.study.enqueue_trial(meta["params"], skip_if_exists=False)
                ot = self.study.ask()
                self._ot[ot.number] = ot
                self._suggest(ot)
                number = ot.number
            else:
                self._promote = [p for p in self._promote if p != (number, rung)]
        self._proposing = None
        self._where[trial.id] = (number, rung)

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        number, rung = self._where.pop(trial.id)
        ot = self._ot[number]
        if result.score is None or result.status == TrialStatus.FAILED:
            self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
            return
        ot.report(float(result.score), step=self.rungs[rung])
        if rung == len(self.rungs) - 1:
            self.study.tell(ot, float(result.score))
        elif ot.should_prune():
            self.study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            self._promote.append((number, rung + 1))
