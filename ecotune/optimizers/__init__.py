"""Optimizers behind one ask/tell interface, built by name with :func:`make_optimizer`.

Example:
    >>> from ecotune.optimizers import make_optimizer
    >>> opt = make_optimizer("ecotune", space=space, budget_tokens=50_000, r_min=5, r_max=50)
    >>> while (trial := opt.ask()) is not None:
    ...     opt.tell(trial, evaluator.evaluate(trial))   # a TrialResult
    >>> config, score = opt.best()

Each optimizer is a proposer (:class:`~ecotune.optimizers.base.Optimizer`, which documents
the subclass contract) over the study's :class:`~ecotune.optimizers.state.StudyState`.
"""

from __future__ import annotations

import inspect
from typing import Any

from ecotune.optimizers.base import Optimizer
from ecotune.optimizers.state import StudyState
from ecotune.space import SearchSpace

OPTIMIZERS = ("ecotune", "random", "qmc", "botorch", "cmaes", "bohb", "smac_bohb", "dehb", "asha",
              "tpe_hyperband", "gp", "tpe", "eipu", "mfkg", "helm")


def _registry() -> dict[str, type[Optimizer]]:
    from ecotune.optimizers.botorch_peers import EIPerCostOptimizer, MFKGOptimizer
    from ecotune.optimizers.dehb import DEHBOptimizer
    from ecotune.optimizers.ecotune import EcoTuneOptimizer
    from ecotune.optimizers.evolution import CMAESOptimizer
    from ecotune.optimizers.gp import BoTorchOptimizer
    from ecotune.optimizers.optuna_single import OptunaGPOptimizer, OptunaOptimizer
    from ecotune.optimizers.simple import HelmDefault, QMCSearch, RandomSearch
    from ecotune.optimizers.smac_bohb import SMACBOHBOptimizer
    from ecotune.optimizers.synetune import ASHAOptimizer, SyneTuneOptimizer
    from ecotune.optimizers.tpe_hyperband import TPEHyperbandOptimizer

    return {"ecotune": EcoTuneOptimizer, "random": RandomSearch, "qmc": QMCSearch,
            "botorch": BoTorchOptimizer, "cmaes": CMAESOptimizer, "bohb": SyneTuneOptimizer,
            "smac_bohb": SMACBOHBOptimizer, "dehb": DEHBOptimizer,
            "asha": ASHAOptimizer, "tpe_hyperband": TPEHyperbandOptimizer,
            "gp": OptunaGPOptimizer, "tpe": OptunaOptimizer, "eipu": EIPerCostOptimizer,
            "mfkg": MFKGOptimizer, "helm": HelmDefault}


def make_optimizer(name: str, *, space: SearchSpace | dict, budget_tokens: int, r_min: int,
                   r_max: int, seed: int = 0, journal: str | None = None,
                   **options: Any) -> Optimizer:
    """Build an optimizer by name; with ``journal``, record to it or resume from it.

    Args:
        name: one of :data:`OPTIMIZERS`: ``ecotune``; ``random``, ``qmc``, ``botorch``
            (single-fidelity GP-EI), ``cmaes``; ``bohb`` and ``asha`` (Syne Tune's own,
            the ``bench`` extra); ``smac_bohb`` (SMAC3's multi-fidelity facade, the
            ``smac`` extra); ``dehb`` (the ``dehb`` package, run in its own environment,
            ``.venv-dehb``: it pins numpy < 2); ``tpe_hyperband`` (Optuna TPE + Hyperband pruner);
            ``gp`` and ``tpe`` (Optuna's GPSampler and TPESampler, single fidelity);
            ``eipu`` and ``mfkg`` (BoTorch's EI per unit cost and multi-fidelity KG); and
            ``helm``, the fixed HELM default configuration.
        space: a :class:`~ecotune.space.SearchSpace` or its dict form.
        budget_tokens: hard token budget B.
        r_min, r_max: fidelity range in task instances.
        seed: random seed.
        journal: local path or ``s3://`` URI of the study journal.
        **options: optimizer-specific settings (``tau``, ``eta0``, ``lam``, ``max_trials``,
            ``fixed``, ``prompt_tokens_hint``, ...): those :class:`StudyState` takes go to
            the study state, the rest to the optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if isinstance(space, dict):
        space = SearchSpace.from_dict(space)
    state_kw = {k: options.pop(k) for k in _STATE_OPTIONS if k in options}
    state = StudyState(space, budget_tokens, r_min, r_max, seed=seed, journal=journal,
                       **state_kw)
    opt = _registry()[name](state, **options)
    opt._open()
    return opt


#: keyword options of make_optimizer that belong to the study state, not the proposer
_STATE_OPTIONS = tuple(n for n, p in inspect.signature(StudyState).parameters.items()
                       if p.kind is inspect.Parameter.KEYWORD_ONLY)

__all__ = ["OPTIMIZERS", "Optimizer", "StudyState", "make_optimizer"]
