"""What the pipeline's steps do beyond config plumbing, as plain functions the components call.

Each component (``components/<name>/component.py``) is a thin ``@dsl.component`` whose body
KFP copies into the compiled pipeline; the work it delegates lives here, so it is one
importable, testable function and the component reads as the step's contract. Like
:mod:`components._common`, this module never imports kfp: a running step imports it
inside the component's body, and the KFP runtime there cannot build components.
"""

from __future__ import annotations

import logging
from typing import Any

from components._common import chart, promote_best, serve_vllm, subsets_store
from components.chart_config import ChartConfig
from ecotune.optimizers.base import Optimizer

log = logging.getLogger(__name__)


def record_round(opt: Optimizer, round_index: int, max_rounds: int) -> str:
    """Append the ``round:<i>`` record (B_used, B_remain, η, T̂, decision) and return it.

    ``"continue"`` when the budget affords another trial, the optimizer has not stopped
    and a compiled round is left; ``"stop"`` otherwise (reason in the record). A round
    already recorded returns its decision and writes nothing (the step may be retried).
    """
    state = opt.state
    records = state.journal.records()
    done = next((r for r in records if r.get("key") == f"round:{round_index}"), None)
    if done is not None:
        return done["decision"]
    stop = next((r for r in records if r.get("type") == "stop"), None)
    reason = state.check_stop()
    if reason is None and stop is not None:
        reason = stop["reason"]
    if reason is None and round_index + 1 >= max_rounds:
        reason = "max_rounds"
    decision = "continue" if reason is None else "stop"
    b = state.budget
    state.journal.append({
        "type": "round", "key": f"round:{round_index}", "round": round_index,
        "B_used": b.used, "B_remain": b.remain, "eta": b.eta,
        "T_hat": b.t_hat(state.mean_trial_cost()), "trials_told": len(state.results),
        "pending": sorted(state.pending), "decision": decision, "stop_reason": reason})
    return decision


def run_trial(cfg: ChartConfig | dict[str, Any], opt: Optimizer, trial_id: int,
              manifest_uri: str, engine_url: str) -> Any:
    """Evaluate the asked trial ``trial_id`` on the engine; the :class:`TrialResult` to tell.

    The instances are the study's nested subset on the store (``manifest_uri``);
    deterministic answers are shared through the response cache beside the subsets
    (``<subsets store>/cache``). An empty ``engine_url`` starts vLLM in this pod
    (:func:`~components._common.serve_vllm`). An engine failure never escapes: the result
    is FAILED and keeps every token spent before it (the ledger's partial result), so the
    journal's bill stays an upper bound of the engine's. A missing subset or task does
    escape: the step fails and is retried before any token is spent.
    """
    import contextlib

    from ecotune.cache import ResponseCache
    from ecotune.engines import make_engine
    from ecotune.subsets import load_subset
    from ecotune.tasks import make_task
    from ecotune.trial import TrialResult, TrialStatus
    from ecotune.trial_runner import EngineEvaluator

    c, state = chart(cfg), opt.state
    asked, s = state.trials[trial_id], c.study
    task = make_task(s.task)
    store = subsets_store(manifest_uri)
    ids = load_subset(store, task, s.seed, s.r_max)
    server = serve_vllm(c) if not engine_url else contextlib.nullcontext(engine_url)
    try:
        with server as url:
            spec = c.engine_spec(url)
            engine = make_engine(spec)
            cache = ResponseCache.open(f"{store}/cache", spec["model"],
                                       seeded=bool(spec.get("send_seed", True)))
            return EngineEvaluator(task, engine, ids, state.journal, cache=cache
                                   ).evaluate(asked)
    except Exception as exc:  # noqa: BLE001 - a failed trial is told, never lost
        result = getattr(exc, "partial_result", None) or TrialResult(
            score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0)
        result.status, result.error = TrialStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if result.n_evaluated == 0:
            result.score = None
        return result


def log_trials(cfg: ChartConfig | dict[str, Any], records: list[dict[str, Any]],
               only: list[int] | None = None) -> int | None:
    """Mirror the journal into MLflow during the run, not only in the exit handler.

    The sample step calls it first (one step, before any evaluator: it creates the study's
    parent run, so parallel evaluators never race to make two); each evaluator logs its own
    trial as it finishes (``only``); the round's controller catches up whatever an
    evaluator failed to log. Returns the trial runs written (None: tracking is off or MLflow
    failed, which is logged and never fails the step; the journal stays the source of truth).
    """
    c = chart(cfg)
    if not c.tracking.enabled:
        return None
    from ecotune.tracking import MlflowTracker

    tracker = MlflowTracker(c.tracking.experiment or "ecotune", c.tracking.tracking_uri)
    return tracker.sync_from_journal(records, only=only)


def track_study(cfg: ChartConfig | dict[str, Any], opt: Optimizer,
                records: list[dict[str, Any]], summary: dict[str, Any], journal_uri: str,
                run_state: str, engine_url: str, serving_url: str | None = None
                ) -> dict[str, Any]:
    """Sync MLflow from the journal and promote the winner; what to add to the summary.

    With tracking enabled, MLflow gets the trial runs missing there, ``trials.csv``, plots
    and ``best_config.yaml`` (``mlflow_run_id``); with a registered model and a run that
    ``SUCCEEDED``, the best config at r_max is promoted (:func:`promote_best`: scored on
    held-out instances against the current holder of the alias when ``engine_url`` is
    set) and the outcome is appended to the journal (``promotion``). Failures are logged,
    never raised: the journal stays the source of truth and the next sync catches up.
    ``serving_url``: the endpoint to register when ``engine_url`` does not outlive the run.
    """
    c, state = chart(cfg), opt.state
    track, added = c.tracking, {}
    if not track.enabled:
        return added
    try:
        from ecotune.tracking import MlflowTracker

        tracker = MlflowTracker(track.experiment or "ecotune", track.tracking_uri)
        tracker.sync_from_journal(records)
        trials = [{"trial": state.trials[i].to_dict(), "result": r.to_dict()}
                  for i, r in sorted(state.results.items())]
        tracker.on_study_end(summary, trials)
        added["mlflow_run_id"] = tracker.parent_run_id
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow sync failed: %s", exc)
    if track.registered_model and run_state == "SUCCEEDED":
        try:
            added["promotion"] = promote_best(opt, c, engine_url, serving_url)
        except Exception as exc:  # noqa: BLE001
            log.warning("promotion failed: %s", exc)
        if added.get("promotion"):
            state.journal.append({"type": "promotion", "key": f"promotion:{journal_uri}:"
                                  f"{added['promotion']['version']}", **added["promotion"]})
    return added
