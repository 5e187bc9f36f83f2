"""Finalize (exit handler): summary, MLflow sync and report, registry promotion."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def finalize_study(study: dict, journal_uri: str, engine_url: str,
                   status: dsl.PipelineTaskFinalStatus, run_key: str = "",
                   stop_engine: bool = False) -> str:
    """Close the study whether the run succeeded or failed; returns the summary as JSON.

    Appends a ``final`` record (summary, rounds, run state). With tracking enabled, MLflow
    is synced from the journal and, after a successful run, the best config at r_max is
    promoted in the registry (``components._steps.track_study``). Tracking failures never
    fail the step: the journal stays the source of truth and the next sync catches up.

    ``stop_engine``: the run started its own vLLM (``start_engine``); promotion scores the
    held-out instances on it, then it is deleted, also when anything before failed.
    """
    import contextlib
    import json

    from components._common import chart, make_study_optimizer, rounds, run_journal_uri
    from components._steps import track_study

    cfg = chart(study)
    with contextlib.ExitStack() as cleanup:
        url, serving = engine_url, None
        if stop_engine:  # deleted whatever happens below, even if the journal cannot be read
            from components._common import run_engine_spec
            from ecotune.run_engine import RunEngine

            engine = RunEngine(run_engine_spec(cfg, run_key))
            cleanup.callback(engine.stop)
            url, serving = engine.spec.url, cfg.engine.serving_url
        journal = run_journal_uri(journal_uri, run_key)
        opt = make_study_optimizer(cfg, journal)
        records = opt.state.journal.records()
        last = (rounds(records) or [{}])[-1]
        summary = {**opt.summary(), "r_max": opt.r_max, "state": status.state,
                   "rounds": len(rounds(records)), "stop_reason": last.get("stop_reason")}
        opt.state.journal.append({"type": "final", "key": "final", "summary": summary})
        summary.update(track_study(cfg, opt, records, summary, journal, status.state, url,
                                   serving_url=serving))
    return json.dumps(summary, default=str)
