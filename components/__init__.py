"""EcoTune's Kubeflow Pipelines components, thin ``@dsl.component`` wrappers over ``ecotune``.

One module per component; each takes the chart's study config (a dict) and the study
journal's URI and keeps no state of its own: the journal is the run's only state, so any
step can be retried. Unit tests call ``component.python_func(...)`` directly.

Names load lazily: inside a running step only ``components._common`` is imported, and the
KFP runtime there cannot build components.
"""

import importlib
from typing import Any

_EXPORTS = {
    "control_budget": "components.controller",
    "evaluate_trial": "components.evaluator",
    "evaluate_trial_op": "components.evaluator",
    "evaluate_trial_gpu_op": "components.evaluator",
    "finalize_study": "components.finalize",
    "sample_dataset": "components.sampler",
    "update_surrogate": "components.updater",
    "CONTROL_PLANE_IMAGE": "components.images",
    "EVALUATOR_IMAGE": "components.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
