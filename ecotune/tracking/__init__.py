"""MLflow integration: study tracking and model-registry promotion.

Importing this package does not import MLflow; the names below load their module (and
MLflow, where needed) on first access, so the optimizer core stays MLflow-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MlflowTracker": "ecotune.tracking.mlflow_tracker",
    "promote": "ecotune.tracking.registry",
    "PromotionResult": "ecotune.tracking.registry",
    "registered_model_name": "ecotune.tracking.registry",
    "paired_test": "ecotune.tracking.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
