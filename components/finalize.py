"""Finalize (exit handler): summary, MLflow sync and report, registry promotion."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def finalize_study(study: dict, journal_uri: str, engine_url: str,
                   status: dsl.PipelineTaskFinalStatus, run_key: str = "") -> str:
    """Close the study whether the run succeeded or failed; returns the summary as JSON.

    Appends a ``final`` record (summary, rounds, run state). With tracking enabled, MLflow
    is synced from the journal (missing trial runs re-created) and gets ``trials.csv``,
    plots and ``best_config.yaml``; with a registered model and a successful run, the best
    config at r_max is promoted (``challenger``, and the study's alias when it beats the
    current holder on the same held-out instances; see ``promote_best``) and the outcome is
    appended to the journal (``promotion``). Tracking failures never fail the step: the journal
    stays the source of truth and the next sync catches up.
    """
    import json
    import logging

    from components._common import (
        chart,
        make_study_optimizer,
        promote_best,
        rounds,
        run_journal_uri,
    )

    log = logging.getLogger("ecotune.finalize")
    journal = run_journal_uri(journal_uri, run_key)
    cfg = chart(study)
    track = cfg.tracking
    opt = make_study_optimizer(cfg, journal)
    state = opt.state
    records = state.journal.records()
    last = (rounds(records) or [{}])[-1]
    summary = {**opt.summary(), "r_max": opt.r_max, "state": status.state,
               "rounds": len(rounds(records)), "stop_reason": last.get("stop_reason")}
    state.journal.append({"type": "final", "key": "final", "summary": summary})
    if track.enabled:
        try:
            from ecotune.tracking import MlflowTracker

            tracker = MlflowTracker(track.experiment or "ecotune", track.tracking_uri)
            tracker.sync_from_journal(records)
            trials = [{"trial": state.trials[i].to_dict(), "result": r.to_dict()}
                      for i, r in sorted(state.results.items())]
            tracker.on_study_end(summary, trials)
            summary["mlflow_run_id"] = tracker.parent_run_id
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow sync failed: %s", exc)
        if track.registered_model and status.state == "SUCCEEDED":
            try:
                summary["promotion"] = promote_best(opt, cfg, engine_url)
            except Exception as exc:  # noqa: BLE001
                log.warning("promotion failed: %s", exc)
            if summary.get("promotion"):
                state.journal.append({"type": "promotion", "key": f"promotion:{journal}:"
                                    f"{summary['promotion']['version']}", **summary["promotion"]})
    return json.dumps(summary, default=str)

