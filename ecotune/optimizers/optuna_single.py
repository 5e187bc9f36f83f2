"""Single-fidelity peers through Optuna's own samplers: ``gp`` (``GPSampler``) and ``tpe``
(``TPESampler``). Every trial runs at r_max; Optuna proposes, is told the score, and
conditional settings are suggested only where active (Optuna's define-by-run)."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.space import CategoricalParam, FloatParam, SearchSpace
from ecotune.trial import Trial, TrialResult, TrialStatus


def suggest_config(ot: optuna.trial.Trial, space: SearchSpace) -> dict[str, Any]:
    """A config from an Optuna trial, define-by-run: inactive settings are not suggested."""
    config: dict[str, Any] = {}
    for name, p in space.params.items():
        if not space.is_active(name, config):
            continue
        if isinstance(p, CategoricalParam):
            config[name] = ot.suggest_categorical(name, p.choices)
        elif isinstance(p, FloatParam):
            config[name] = ot.suggest_float(name, p.low, p.high, log=p.log)
        else:
            config[name] = ot.suggest_int(name, p.low, p.high, log=p.log)
    return config


class OptunaOptimizer(Optimizer):
    """An Optuna sampler behind ask/tell, at full fidelity."""

    name = "tpe"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        optuna.logging.set_verbosity(logging.WARNING)  # its per-trial INFO lines
        self.study = optuna.create_study(direction="maximize", sampler=self._sampler())
        self._ot: dict[int, optuna.trial.Trial] = {}
        self._live: optuna.trial.Trial | None = None  # the trial just proposed

    def _sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=self.seed, multivariate=True, group=True)

    def _suggest(self, ot: optuna.trial.Trial) -> dict[str, Any]:
        return suggest_config(ot, self.space)

    def _propose(self) -> Proposal:
        self._live = ot = self.study.ask()
        return self._suggest(ot), self.r_max, {"number": ot.number}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        ot, self._live = self._live, None
        if ot is None:  # replay: the recorded config, enqueued
            self.study.enqueue_trial({k: v for k, v in trial.config.items()
                                      if k in self.space.params}, skip_if_exists=False)
            ot = self.study.ask()
            self._suggest(ot)
        self._ot[trial.id] = ot

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        ot = self._ot.pop(trial.id)
        if result.score is None or result.status == TrialStatus.FAILED:
            self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(ot, float(result.score))


class OptunaGPOptimizer(OptunaOptimizer):
    """Optuna's Gaussian-process sampler (``GPSampler``)."""

    name = "gp"

    def _sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=self.seed)
