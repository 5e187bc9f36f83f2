"""The study loop's MLflow callback: each trial as it finishes, the study at its end."""

from __future__ import annotations

from typing import Any

from ecotune.config import StudyConfig


class TrackingCallback:
    """run_study callback mirroring the study into MLflow."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def on_trial_end(self, opt: Any, trial: Any, result: Any) -> None:
        self.tracker.on_trial_end(trial, result, cumulative_tokens=opt.tokens_used,
                                  best_score=opt.best()[1])

    def on_study_end(self, opt: Any) -> None:
        st = opt.state
        trials = [{"trial": st.trials[i].to_dict(), "result": st.results[i].to_dict()}
                  for i in sorted(st.results)]
        self.tracker.on_study_end({**opt.summary(), "r_max": opt.r_max}, trials)


def make_tracker(cfg: StudyConfig) -> Any:
    from ecotune.tracking import MlflowTracker

    t = cfg.tracking
    return MlflowTracker(experiment=t.experiment, tracking_uri=t.tracking_uri,
                         registry_uri=t.registry_uri, local_dir=cfg.mlflow_local_dir)
