"""BOHB and ASHA through Syne Tune's own schedulers, on instance-count fidelity.

Syne Tune's ``BOHB`` (its KDE searcher over asynchronous successive halving) and ``ASHA``
are used through their front door (``suggest`` / ``on_trial_add`` / ``on_trial_result``),
with the instance count as the resource: rungs ``r_min·η^k`` below ``r_max``, then r_max.
One Syne Tune trial is one configuration; each rung it reaches is one EcoTune trial at that
fidelity, and since nested subsets keep what a configuration measured, a promotion pays
only for the new instances (for these peers as for EcoTune). Syne Tune's space has no
conditions: it sees every setting; what EcoTune sends is the canonical config.

Replays rebuild the scheduler by asking it again in the same order (its RNG is seeded) and
telling it the recorded results, so a resumed study continues the same run. Syne Tune 0.16
draws from NumPy's *global* RNG where its ``random_seed`` does not reach (the bracket draw
of ``ASHA.on_trial_add``; ``Domain.sample()`` called without a ``random_state``): two runs
with one seed differed (Branin, ASHA: 58 vs 61 trials), and a replay could diverge. Every
call into the scheduler therefore runs on a global RNG of its own, seeded by the study's
seed, and the caller's global RNG is put back after it (:func:`own_global_rng`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.space import CategoricalParam, FloatParam, SearchSpace
from ecotune.trial import Trial, TrialResult, TrialStatus

METRIC, RESOURCE = "score", "instances"


def syne_tune_space(space: SearchSpace) -> dict[str, Any]:
    """The same ranges as Syne Tune domains."""
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    out: dict[str, Any] = {}
    for name, p in space.params.items():
        if isinstance(p, CategoricalParam):
            out[name] = choice(list(p.choices))
        elif isinstance(p, FloatParam):
            out[name] = (loguniform if p.log else uniform)(p.low, p.high)
        else:
            out[name] = (lograndint if p.log else randint)(p.low, p.high)
    return out


@contextmanager
def own_global_rng(state: dict[str, Any]) -> Iterator[None]:
    """Run the body on NumPy's global RNG set to ``state["rng"]``; afterwards keep where it
    got to in ``state`` and give the caller's global RNG back."""
    saved = np.random.get_state()
    np.random.set_state(state["rng"])
    try:
        yield
    finally:
        state["rng"] = np.random.get_state()
        np.random.set_state(saved)


class SyneTuneOptimizer(Optimizer):
    """A Syne Tune multi-fidelity scheduler (``bohb`` or ``asha``) behind ask/tell.

    Args:
        reduction_factor: η of successive halving.
    """

    name = "bohb"
    single_fidelity = False
    scheduler_name = "BOHB"

    def __init__(self, *args: Any, reduction_factor: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        try:
            from syne_tune.optimizer import baselines
        except ImportError as e:  # an optional extra
            raise ImportError(f"optimizer {self.name!r} needs Syne Tune: "
                              "pip install 'ecotune[bench]'") from e
        self._rf = int(reduction_factor)
        cls = getattr(baselines, self.scheduler_name)
        self._rng = {"rng": np.random.RandomState(self.seed).get_state()}
        with own_global_rng(self._rng):
            self.scheduler = cls(syne_tune_space(self.space), metric=METRIC, do_minimize=False,
                                 time_attr=RESOURCE, max_t=self.r_max, grace_period=self.r_min,
                                 reduction_factor=self._rf, random_seed=self.seed)
        rungs = [m for m, _ in self.scheduler.brackets[0].rungs if m < self.r_max]
        self.rungs = sorted(int(round(m)) for m in rungs) + [self.r_max]
        self._st: dict[int, Any] = {}            # syne trial id -> syne Trial
        self._next: list[tuple[int, int]] = []   # (syne trial id, rung index) to run next
        self._where: dict[int, tuple[int, int]] = {}
        self._live = False
        self._options.update(reduction_factor=self._rf)

    def _new_trial(self) -> tuple[int, dict[str, Any]] | None:
        from syne_tune.backend.trial_status import Trial as StTrial

        with own_global_rng(self._rng):
            sug = self.scheduler.suggest()
        if sug is None or sug.config is None:
            return None
        sid = len(self._st)
        self._st[sid] = StTrial(trial_id=sid, config=dict(sug.config),
                                creation_time=dt.datetime(2000, 1, 1))
        with own_global_rng(self._rng):
            self.scheduler.on_trial_add(self._st[sid])
        return sid, dict(sug.config)

    def _propose(self) -> Proposal | None:
        self._live = True
        if self._next:
            sid, rung = self._next.pop(0)
            config = dict(self._st[sid].config)
        else:
            new = self._new_trial()
            if new is None:
                return None
            (sid, config), rung = new, 0
        return config, self.rungs[rung], {"syne_trial": sid, "rung": rung}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        sid, rung = int(meta["syne_trial"]), int(meta["rung"])
        if not self._live:  # replay: ask the scheduler again, in the same order
            if rung == 0:
                new = self._new_trial()
                if new is None or new[0] != sid:
                    raise RuntimeError("Syne Tune replay diverged from the journal")
            else:
                self._next = [p for p in self._next if p != (sid, rung)]
        self._live = False
        # the scheduler learns what actually ran (a snapped candidate, say), all settings set
        neutral = {n: p.neutral() for n, p in self.space.params.items()}
        self._st[sid].config = {**neutral, **self._st[sid].config,
                                **{k: v for k, v in trial.config.items() if k in neutral}}
        self._where[trial.id] = (sid, rung)

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        from syne_tune.optimizer.scheduler import SchedulerDecision

        sid, rung = self._where.pop(trial.id)
        st = self._st[sid]
        if result.score is None or result.status == TrialStatus.FAILED:
            with own_global_rng(self._rng):
                self.scheduler.on_trial_error(st)
            return
        with own_global_rng(self._rng):
            decision = self.scheduler.on_trial_result(
                st, {METRIC: float(result.score), RESOURCE: self.rungs[rung]})
        if rung + 1 < len(self.rungs) and decision == SchedulerDecision.CONTINUE:
            self._next.append((sid, rung + 1))


class ASHAOptimizer(SyneTuneOptimizer):
    """Asynchronous successive halving with random proposals (Syne Tune's ``ASHA``)."""

    name = "asha"
    scheduler_name = "ASHA"
