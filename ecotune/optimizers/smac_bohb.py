"""``smac_bohb``: SMAC3's multi-fidelity facade (random forest + EI over Hyperband), as BOHB.

SMAC3's ``MultiFidelityFacade`` is the BOHB of the SMAC authors: Hyperband brackets decide
which configuration runs at which budget, and a model-based selector (a random forest with
EI, fitted on the highest budget with enough data) proposes the new configurations. It is
used through its own ask/tell (``SMAC.ask`` / ``SMAC.tell``), with the instance count as the
budget (``min_budget = r_min``, ``max_budget = r_max``, η = the reduction factor). A budget
SMAC asks for is rounded to whole instances. SMAC minimises a cost: it is told
``1 − score``. Its space has no conditions: it sees every setting; what EcoTune sends is the
canonical config. On a finite candidate set EcoTune snaps SMAC's proposal to the nearest
candidate and SMAC is told that score for its proposal (SMAC's Hyperband tracks the
configurations it asked; a different one cannot be told in their place).

SMAC writes its run history under a temporary folder per study, removed with the optimizer.
Replays rebuild SMAC by asking it again in the same order (its RNG is seeded) and telling it
the recorded results, so a resumed study continues the same run. SMAC3 2.4's local search
collects its start points in a ``set`` of configurations
(``LocalSearch._get_init_points_from_previous_configs``; the set came with SMAC3's
"Simplify local search code", PR #1244, while the docstring there still describes an
order-kept de-duplication), whose order follows Python's string hashes: one seed gives one
run only under one ``PYTHONHASHSEED``. EcoTune runs SMAC as shipped rather than patch it.
The benchmark records under ``PYTHONHASHSEED=0`` (the Makefile), and a resume under
another hash seed stops with a clear error rather than continue another run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from typing import Any

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.space import SearchSpace
from ecotune.trial import Trial, TrialResult, TrialStatus


def smac_space(space: SearchSpace, seed: int):
    """The same ranges as a ConfigSpace ``ConfigurationSpace`` (no conditions)."""
    from ecotune.optimizers.dehb import space_spec
    from ecotune.optimizers.dehb_worker import config_space

    return config_space(space_spec(space), seed)


class SMACBOHBOptimizer(Optimizer):
    """SMAC3's multi-fidelity facade (BOHB) behind ask/tell.

    Args:
        reduction_factor: η of Hyperband's successive halving.
    """

    name = "smac_bohb"
    single_fidelity = False

    def __init__(self, *args: Any, reduction_factor: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        try:
            from smac import MultiFidelityFacade, Scenario
        except ImportError as e:  # an optional extra
            raise ImportError("optimizer 'smac_bohb' needs SMAC3 and pyrfr: "
                              "pip install 'ecotune[smac]' (pyrfr builds with swig)") from e
        self._rf = int(reduction_factor)
        self._dir = tempfile.mkdtemp(prefix="ecotune-smac-")
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        scenario = Scenario(smac_space(self.space, self.seed), deterministic=True,
                            n_trials=10**7, min_budget=self.r_min, max_budget=self.r_max,
                            seed=self.seed, output_directory=self._dir, name="ecotune")
        self.smac = MultiFidelityFacade(
            scenario, target_function=_never_called,
            intensifier=MultiFidelityFacade.get_intensifier(scenario, eta=self._rf),
            overwrite=True, logging_level=logging.ERROR)
        self._infos: dict[int, Any] = {}   # ecotune trial id -> SMAC TrialInfo
        self._asked: Any = None            # the TrialInfo of the proposal in flight
        self._options.update(reduction_factor=self._rf)

    def _propose(self) -> Proposal:
        info = self.smac.ask()
        self._asked = info
        config = dict(info.config)
        r = min(max(int(round(float(info.budget))), self.r_min), self.r_max)
        return config, r, {"smac_config": config, "budget": float(info.budget)}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        info, self._asked = self._asked, None
        if info is None:  # replay: ask SMAC again, in the same order
            info = self.smac.ask()
            if dict(info.config) != meta["smac_config"] or float(info.budget) != meta["budget"]:
                raise RuntimeError(
                    "SMAC replay diverged from the journal (SMAC3's choices follow Python's "
                    "string hashes: resume with the PYTHONHASHSEED the study ran with)")
        self._infos[trial.id] = info

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        from smac.runhistory.dataclasses import TrialValue
        from smac.runhistory.enumerations import StatusType

        info = self._infos.pop(trial.id)
        if result.score is None or result.status == TrialStatus.FAILED:
            self.smac.tell(info, TrialValue(cost=float("inf"), status=StatusType.CRASHED),
                           save=False)
            return
        self.smac.tell(info, TrialValue(cost=1.0 - float(result.score)), save=False)


def _never_called(config: Any, seed: int = 0, budget: float = 0.0) -> float:
    """SMAC's facade wants a target function; with ask/tell it is never run."""
    raise RuntimeError("SMAC is driven by ask/tell here; trials run in EcoTune's evaluators")
