"""The ``evaluate_trial`` component of the EcoTune pipeline and its GPU variant; see
``component.py``."""

from components.evaluate_trial.component import evaluate_trial, evaluate_trial_gpu_op

__all__ = ["evaluate_trial", "evaluate_trial_gpu_op"]
