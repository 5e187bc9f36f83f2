"""The in-process study loop: ask, evaluate, tell, with callbacks at the edges.

The loop knows neither the optimizer's method nor where trials run. Callbacks (MLflow
tracking, progress display) are told after each trial and at the end; a callback that
raises is logged and never stops the study.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ecotune.evaluator import Evaluator
from ecotune.optimizers.base import Optimizer
from ecotune.trial import TrialResult, TrialStatus

log = logging.getLogger(__name__)


def run_study(opt: Optimizer, evaluator: Evaluator, callbacks: Sequence[Any] = (),
              max_trials: int | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run trials until the optimizer is done; returns ``opt.summary()``.

    A callback may define ``on_trial_end(opt, trial, result)`` and
    ``on_study_end(opt)``; either may be left out.

    A trial whose evaluation raises is told as failed with the reason and every token the
    evaluator reported before failing (``exc.partial_result`` when it carries one).
    """
    done = 0
    while (max_trials is None or done < max_trials) and not (should_stop and should_stop()):
        trial = opt.ask()
        if trial is None:
            break
        t0 = time.monotonic()
        try:
            result = evaluator.evaluate(trial)
        except Exception as exc:  # noqa: BLE001 - a failed trial must not end the study
            partial = getattr(exc, "partial_result", None)
            log.warning("trial %s failed: %s", trial.id, exc)
            result = partial or TrialResult(score=None, prompt_tokens=0, completion_tokens=0,
                                            n_evaluated=0)
            cause = exc.__cause__ or exc  # the engine's own error, not a wrapper's
            result.status, result.error = TrialStatus.FAILED, f"{type(cause).__name__}: {cause}"
            if result.n_evaluated == 0:
                result.score = None
        result.wall_time_s = result.wall_time_s or time.monotonic() - t0
        opt.tell(trial, result=result)
        done += 1
        _notify(callbacks, "on_trial_end", opt, trial, result)
    _notify(callbacks, "on_study_end", opt)
    return opt.summary()


def _notify(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is None:
            continue
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.warning("callback %s.%s failed: %s", type(cb).__name__, event, exc)
