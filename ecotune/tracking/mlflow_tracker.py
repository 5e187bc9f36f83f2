"""Mirror a study into MLflow: one parent run per study, one nested run per trial.

The study runner calls the event hooks (``on_study_start``, ``on_trial_end``,
``on_study_end``); MLflow is imported lazily so the optimizer core never loads it.
Tracking is a *view* of the journal and must never stop a study: any tracking error
(server down, timeout, bad response) is logged as a warning and marks the tracker
``dirty``; :meth:`MlflowTracker.sync_from_journal` later re-creates whatever is missing.
Every write is idempotent: trial runs are found by their ``ecotune.trial_id`` tag and the
study run by its ``ecotune.study`` tag, so resuming a study (a new process) or re-syncing
never duplicates runs.

Example:
    >>> tracker = MlflowTracker(experiment="ecotune")          # doctest: +SKIP
    >>> tracker.on_study_start("qwen-mmlu-1", spec, {"ecotune.model": "qwen"})
    >>> tracker.on_trial_end(trial, result, cumulative_tokens=1200, best_score=0.4)
    >>> tracker.on_study_end(summary, trials)
    >>> tracker.sync_from_journal(open_journal(path).records())
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import yaml

from ecotune.tracking import report
from ecotune.tracking.params import redact, to_params
from ecotune.tracking.replay import study_record, trial_events
from ecotune.trial import Trial, TrialResult, TrialStatus

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

TAG_STUDY = "ecotune.study"
TAG_ROLE = "ecotune.role"  # "study" | "trial"
TAG_TRIAL = "ecotune.trial_id"
TAG_STATUS = "ecotune.status"
_BATCH = 100  # MLflow's per-request param limit
_SPACE_KEYS = ("space", "search_space")


def resolve_uris(tracking_uri: str | None, registry_uri: str | None,
                 local_dir: str | os.PathLike[str]) -> tuple[str, str, str | None]:
    """``(tracking_uri, registry_uri, local_artifact_dir)`` following MLflow conventions.

    Explicit arguments win, then ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``; with
    neither, a local SQLite store ``<local_dir>/mlflow.db`` with artifacts in
    ``<local_dir>/artifacts`` (the third value, ``None`` for remote stores). The registry
    defaults to the tracking store, as in MLflow.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    art = None
    if not uri:
        d = Path(local_dir).resolve()
        d.mkdir(parents=True, exist_ok=True)
        uri, art = f"sqlite:///{d / 'mlflow.db'}", (d / "artifacts").as_uri()
    reg = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or uri
    return uri, reg, art


def make_client(tracking_uri: str, registry_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def _guard(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Run a hook; on any error warn, mark the tracker dirty and return None."""

    @functools.wraps(fn)
    def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> T | None:
        try:
            if not self._reachable():
                raise ConnectionError(f"MLflow tracking server {self.tracking_uri} unreachable")
            return fn(self, *args, **kwargs)
        except Exception as e:  # tracking must never kill the study
            self.dirty = True
            log.warning("MLflow tracking failed in %s (%s: %s); will catch up from the journal",
                        fn.__name__, type(e).__name__, e)
            return None

    return wrapper


class MlflowTracker:
    """Event hooks that log a study to MLflow; see the module docstring.

    Args:
        experiment: MLflow experiment name (created on first use).
        tracking_uri: Tracking store; default ``MLFLOW_TRACKING_URI`` or a local SQLite store.
        registry_uri: Model registry store; default ``MLFLOW_REGISTRY_URI`` or the tracking one.
        local_dir: Where the local store lives when no URI is configured.
        probe_timeout_s: Timeout of the ``/health`` probe done before talking to an HTTP
            server, so a dead server costs seconds, not MLflow's minutes of retries.

    Attributes:
        dirty: True once any tracking call failed; cleared by a successful
            :meth:`sync_from_journal`.
    """

    def __init__(self, experiment: str = "ecotune", tracking_uri: str | None = None,
                 registry_uri: str | None = None, local_dir: str | os.PathLike[str] = "mlruns",
                 probe_timeout_s: float = 3.0):
        self.experiment = experiment
        self.tracking_uri, self.registry_uri, self._artifact_location = resolve_uris(
            tracking_uri, registry_uri, local_dir)
        self.probe_timeout_s = probe_timeout_s
        self.dirty = False
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._study: tuple[str, dict[str, Any], dict[str, str]] | None = None
        self._end: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
        self._logged: set[int] = set()

    # -- plumbing ---------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = make_client(self.tracking_uri, self.registry_uri)
        return self._client

    def _reachable(self) -> bool:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        try:
            r = httpx.get(self.tracking_uri.rstrip("/") + "/health", timeout=self.probe_timeout_s)
            return r.status_code < 500
        except httpx.HTTPError:
            return False

    def _experiment(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                exp_id = self.client.create_experiment(
                    self.experiment, artifact_location=self._artifact_location)
            else:
                exp_id = exp.experiment_id
            self._experiment_id = exp_id
        return self._experiment_id

    def _search(self, filter_string: str) -> list[Any]:
        return list(self.client.search_runs([self._experiment()], filter_string, max_results=1000))

    def _log_batch(self, run_id: str, params: Mapping[str, str] = {},
                   metrics: Iterable[tuple[str, float, int]] = ()) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        ps = [Param(k, v) for k, v in params.items()]
        ms = [Metric(k, float(v), now, step) for k, v, step in metrics]
        for i in range(0, max(len(ps), 1), _BATCH):
            self.client.log_batch(run_id, params=ps[i:i + _BATCH], metrics=ms if i == 0 else [])

    def _ensure_parent(self) -> str:
        if self.parent_run_id is not None:
            return self.parent_run_id
        if self._study is None:
            raise RuntimeError("on_study_start (or sync_from_journal with a study record) first")
        name, spec, tags = self._study
        found = self._search(f"tags.`{TAG_STUDY}` = '{_q(name)}' and tags.`{TAG_ROLE}` = 'study'")
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(self._experiment(), run_name=name,
                                         tags={**tags, TAG_STUDY: name, TAG_ROLE: "study"})
            run_id = run.info.run_id
            self._log_batch(run_id, params=to_params(
                {k: v for k, v in spec.items() if k not in _SPACE_KEYS}))
            space = next((spec[k] for k in _SPACE_KEYS if k in spec), None)
            self.client.log_dict(run_id, redact(space if space is not None else {}),
                                 "search_space.json")
            self.client.log_dict(run_id, redact(spec), "spec.json")
        self.parent_run_id = run_id
        return run_id

    def _trial_run(self, parent: str, trial_id: int) -> Any | None:
        runs = self._search(f"tags.`{TAG_TRIAL}` = '{trial_id}' and "
                            f"tags.`mlflow.parentRunId` = '{parent}'")
        done = [r for r in runs if r.info.status in ("FINISHED", "FAILED")]
        for r in runs:  # a run left RUNNING was cut off half-written: redo it
            if r not in done:
                self.client.delete_run(r.info.run_id)
        return done[0] if done else None

    # -- hooks ------------------------------------------------------------------------
    @_guard
    def on_study_start(self, study_name: str, spec: dict[str, Any], tags: dict[str, str]) -> None:
        """Create (or, on resume, find by ``ecotune.study`` tag) the study's parent run.

        ``spec`` is logged as flat params (secrets redacted, values cut to 500 chars), the
        search space (``spec["space"]``) and the whole spec as JSON artifacts. ``tags``
        should carry ``ecotune.model``, ``ecotune.task``, ``ecotune.optimizer``.
        """
        self._study = (study_name, dict(spec), {k: str(v) for k, v in tags.items()})
        self.parent_run_id = None
        self._ensure_parent()

    def on_trial_end(self, trial: Trial, result: TrialResult, cumulative_tokens: int,
                     best_score: float | None) -> None:
        """Log one nested trial run and the study's step metrics (step = trial id)."""
        self._log_trial(trial, result, cumulative_tokens, best_score)

    @_guard
    def _log_trial(self, trial: Trial, result: TrialResult, cumulative_tokens: int,
                   best_score: float | None) -> None:
        self._write_trial(trial, result, cumulative_tokens, best_score)

    def _write_trial(self, trial: Trial, result: TrialResult, cumulative_tokens: int,
                     best_score: float | None) -> bool:
        """Write the trial run unless it exists; True when something was written."""
        from mlflow.entities import RunStatus

        parent = self._ensure_parent()
        if trial.id in self._logged or self._trial_run(parent, trial.id) is not None:
            self._logged.add(trial.id)
            return False
        name = self._study[0] if self._study else ""
        run = self.client.create_run(self._experiment(), run_name=f"trial-{trial.id}", tags={
            "mlflow.parentRunId": parent, TAG_STUDY: name, TAG_ROLE: "trial",
            TAG_TRIAL: str(trial.id), TAG_STATUS: str(result.status)})
        rid = run.info.run_id
        params = to_params(trial.config, "config.")
        params.update(fidelity=str(trial.fidelity), token_limit=str(trial.token_limit),
                      predicted_tokens=f"{trial.predicted_tokens:.1f}")
        metrics = [("prompt_tokens", result.prompt_tokens, 0),
                   ("completion_tokens", result.completion_tokens, 0),
                   ("tokens", result.tokens, 0), ("cumulative_tokens", cumulative_tokens, 0),
                   ("unsettled_tokens", result.unsettled_tokens, 0),
                   ("reused_tokens", result.reused_tokens, 0),
                   ("n_evaluated", result.n_evaluated, 0), ("wall_time_s", result.wall_time_s, 0)]
        if result.score is not None:
            metrics.append(("score", result.score, 0))
        self._log_batch(rid, params, metrics)
        if result.error:
            self.client.set_tag(rid, "ecotune.error", str(redact(result.error))[:5000])
        failed = result.status == TrialStatus.FAILED
        self.client.set_terminated(rid, RunStatus.to_string(
            RunStatus.FAILED if failed else RunStatus.FINISHED))
        step = [("cumulative_tokens", cumulative_tokens, trial.id)]
        if best_score is not None:
            step += [("best_score", best_score, trial.id),
                     ("best_score_by_tokens", best_score, int(cumulative_tokens))]
        self._log_batch(parent, metrics=step)
        self._logged.add(trial.id)
        return True

    def on_study_end(self, summary: dict[str, Any], trials: list[dict[str, Any]]) -> None:
        """Attach ``trials.csv``, ``best_vs_tokens.png``, ``score_vs_tokens.png``,
        ``best_config.yaml`` and the summary's numbers as final metrics; close the run."""
        self._end = (dict(summary), list(trials))
        self._log_end()

    @_guard
    def _log_end(self) -> None:
        from mlflow.entities import RunStatus

        assert self._end is not None
        summary, trials = self._end
        parent = self._ensure_parent()
        rows = report.trial_rows(trials, summary.get("r_max"))
        self.client.log_text(parent, report.trials_csv(rows), "trials.csv")
        for fname, make in (("best_vs_tokens.png", report.best_vs_tokens_figure),
                            ("score_vs_tokens.png", report.score_vs_tokens_figure)):
            fig = make(rows)
            try:
                self.client.log_figure(parent, fig, fname)
            finally:
                report.close(fig)
        best = summary.get("best_config")
        if best is None:  # the best at r_max, as in the best_score metric
            top = report.best_row(rows, summary.get("r_max"))
            best = {k[7:]: v for k, v in (top or {}).items() if k.startswith("config.")}
        self.client.log_text(parent, yaml.safe_dump(redact(dict(best)), sort_keys=True),
                             "best_config.yaml")
        self.client.log_dict(parent, redact(summary), "summary.json")
        finals = [(f"final.{k}", float(v), 0) for k, v in _flat_numbers(summary).items()]
        if finals:
            self._log_batch(parent, metrics=finals)
        self.client.set_terminated(parent, RunStatus.to_string(RunStatus.FINISHED))
        self._end = None

    @_guard
    def sync_from_journal(self, journal_records: Iterable[Mapping[str, Any]],
                          only: Collection[int] | None = None) -> int:
        """Re-create trial runs missing from MLflow; returns how many were written.

        Trials already logged (found by tag) are skipped, so this is safe to call after
        every study and on every resume. A pending ``on_study_end`` that failed is redone.
        Clears ``dirty`` when it completes. ``only``: write just these trials (a pipeline's
        evaluator logs its own trial as it finishes, while other evaluators of the round
        log theirs: none writes another's, so none writes one twice); the study's parent
        run is found or created either way.
        """
        recs = list(journal_records)
        if self._study is None:
            srec = study_record(recs) or {}
            name = srec.get("name") or srec.get("study") or srec.get("study_name")
            if not name:
                raise RuntimeError("no study name: call on_study_start first")
            self._study = (str(name), dict(srec.get("spec") or {}),
                           {k: str(v) for k, v in (srec.get("tags") or {}).items()})
        parent = self._ensure_parent()
        r_max = self._study[1].get("r_max")
        existing = {r.data.tags.get(TAG_TRIAL) for r in self._search(
            f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TAG_ROLE}` = 'trial'")
            if r.info.status in ("FINISHED", "FAILED")}
        self._logged |= {int(t) for t in existing if t is not None}
        written = sum(self._write_trial(ev.trial, ev.result, ev.cumulative_tokens, ev.best_score)
                      for ev in trial_events(recs, r_max) if ev.trial.id not in self._logged
                      and (only is None or ev.trial.id in only))
        if self._end is not None:
            self._log_end.__wrapped__(self)  # type: ignore[attr-defined]
        self.dirty = False
        return written


def _q(s: str) -> str:
    return s.replace("'", "\\'")


def _flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out
