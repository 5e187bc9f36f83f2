"""Helpers for the component tests: a chart study config on a FakeEngine, and the steps
called through ``component.python_func`` the way a pipeline round calls them.

Used by each component's ``tests/`` (fixtures in ``components/conftest.py``) and by
``tests/test_components.py`` (flows across components). Nothing here runs in a step.
"""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.control_budget import control_budget
from components.evaluate_trial import evaluate_trial
from components.update_surrogate import update_surrogate


def study_config(budget: int = 20000, **study: Any) -> dict[str, Any]:
    """A chart study config: random search on 40 arithmetic instances, r in [2, 8], the
    FakeEngine as the service (``fake://``); ``study`` overrides keys of its study block."""
    return {"version": 1,
            "study": {"name": "unit", "model": "fake-model",
                      "task": {"name": "arithmetic", "n": 40}, "optimizer": "random",
                      "budget_tokens": budget, "r_min": 2, "r_max": 8, "seed": 0,
                      "max_trials": None, "search_space": None, "fixed": {}, **study},
            "engine": {"type": "service", "base_url": "fake://",
                       "served_model_name": "fake-model"},
            "tracking": {"enabled": False}}


def final_status(state: str = "SUCCEEDED") -> dsl.PipelineTaskFinalStatus:
    """What KFP hands the exit handler for a run that ended in ``state``."""
    return dsl.PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="job",
                                       pipeline_task_name="exit", error_code=None,
                                       error_message=None)


def ask(cfg: dict[str, Any], journal: str, manifest: str, q: int, engine_url: str = ""
        ) -> list[dict[str, Any]]:
    """The updater's batch of up to ``q`` work items."""
    return update_surrogate.python_func(study=cfg, journal_uri=journal, manifest_uri=manifest,
                                        q=q, engine_url=engine_url)


def evaluate(cfg: dict[str, Any], item: dict[str, Any], engine_url: str = "fake://") -> str:
    """One evaluator step on a work item; its status."""
    return evaluate_trial.python_func(study=cfg, trial=item, engine_url=engine_url)


def run_rounds(cfg: dict[str, Any], journal: str, manifest: str, max_rounds: int, q: int = 3
               ) -> list[str]:
    """Rounds of ask -> evaluate each item -> controller, until one decides ``stop``."""
    decisions = []
    for i in range(max_rounds):
        for item in ask(cfg, journal, manifest, q):
            evaluate(cfg, item)
        decisions.append(control_budget.python_func(study=cfg, journal_uri=journal,
                                                    round_index=i, max_rounds=max_rounds))
        if decisions[-1] != "continue":
            break
    return decisions
