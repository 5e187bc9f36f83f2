"""Evaluator: run one asked trial on the engine and tell its result to the journal."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE, EVALUATOR_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def evaluate_trial(study: dict, trial: dict, engine_url: str) -> str:
    """Evaluate one work item of the updater's batch and tell the result.

    ``trial`` is ``{"trial_id", "journal_uri", "manifest_uri", "engine_url"}`` (the
    ``dsl.ParallelFor`` loop item); the trial itself comes from its ``ask`` record in the
    journal. The item's ``engine_url`` (the run engine's, or the pipeline's) wins over the
    ``engine_url`` parameter.

    Idempotent: a trial already told returns at once; instance records written by a
    crashed attempt are deduplicated by key. Every token spent is told, also when the
    evaluation fails part way (``components._steps.run_trial``). With tracking on, the
    trial's MLflow run is written as soon as it is told (``components._steps.log_trials``).
    An empty ``engine_url`` starts vLLM inside this pod (GPU evaluator image); ``fake://``
    uses a FakeEngine (tests).

    Returns:
        The trial's status (``complete``/``partial``/``failed``/``already-told``).
    """
    from components._common import chart, make_study_optimizer
    from components._steps import log_trials, run_trial

    # the local runner hands numbers inside dicts over as floats
    trial_id, journal_uri = int(trial["trial_id"]), str(trial["journal_uri"])
    cfg = chart(study)
    opt = make_study_optimizer(cfg, journal_uri)
    if opt.state.is_told(trial_id):
        log_trials(cfg, opt.state.journal.records(), only=[trial_id])  # a retry after tell
        return "already-told"
    url = str(trial.get("engine_url") or engine_url)
    result = run_trial(cfg, opt, trial_id, str(trial["manifest_uri"]), url)
    opt.tell(opt.state.trials[trial_id], result)
    log_trials(cfg, opt.state.journal.records(), only=[trial_id])  # MLflow, as it finishes
    return str(result.status)


#: GPU step: starts vLLM in the evaluator image (the pipeline adds accelerator, PVC,
#: tolerations). ``evaluate_trial`` itself is the CPU step against an existing service.
evaluate_trial_gpu_op = dsl.component(evaluate_trial.python_func, base_image=EVALUATOR_IMAGE,
                                      install_kfp_package=False)
