"""Evaluator: run one asked trial on the engine and tell its result to the journal."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE, EVALUATOR_IMAGE


def evaluate_trial(study: dict, trial: dict, engine_url: str) -> str:
    """Evaluate one work item of the updater's batch and tell the result.

    ``trial`` is ``{"trial_id", "journal_uri", "manifest_uri"}`` (the ``dsl.ParallelFor``
    loop item); the trial itself comes from its ``ask`` record in the journal.

    Idempotent: a trial already told returns at once; instance records written by a
    crashed attempt are deduplicated by key. Every token spent is told, also when the
    evaluation fails part way. Deterministic answers are shared through the response cache
    beside the subsets (``<subsets store>/cache``), across trials, runs and studies. An empty ``engine_url`` starts vLLM inside this pod (GPU
    evaluator image); ``fake://`` uses a FakeEngine (tests).

    Returns:
        The trial's status (``complete``/``partial``/``failed``/``already-told``).
    """
    import contextlib

    from components._common import chart, make_study_optimizer, serve_vllm, subsets_store
    from ecotune.cache import ResponseCache
    from ecotune.engines import make_engine
    from ecotune.subsets import load_subset
    from ecotune.tasks import make_task
    from ecotune.trial import TrialResult, TrialStatus
    from ecotune.trial_runner import EngineEvaluator

    # the local runner hands numbers inside dicts over as floats
    trial_id, journal_uri = int(trial["trial_id"]), str(trial["journal_uri"])
    manifest_uri = str(trial["manifest_uri"])
    cfg = chart(study)
    opt = make_study_optimizer(cfg, journal_uri)
    if opt.state.is_told(trial_id):
        return "already-told"
    asked, s = opt.state.trials[trial_id], cfg.study
    task = make_task(s.task)
    ids = load_subset(subsets_store(manifest_uri), task, s.seed, s.r_max)
    server = serve_vllm(cfg) if not engine_url else contextlib.nullcontext(engine_url)
    try:
        with server as url:
            spec = cfg.engine_spec(url)
            engine = make_engine(spec)
            cache = ResponseCache.open(f"{subsets_store(manifest_uri)}/cache", spec["model"],
                                       seeded=bool(spec.get("send_seed", True)))
            runner = EngineEvaluator(task, engine, ids, opt.state.journal, cache=cache)
            result = runner.evaluate(asked)
    except Exception as exc:  # noqa: BLE001 - a failed trial is told, never lost
        result = getattr(exc, "partial_result", None) or TrialResult(
            score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0)
        result.status, result.error = TrialStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if result.n_evaluated == 0:
            result.score = None
    opt.tell(asked, result)
    return str(result.status)


#: CPU step against an existing OpenAI-compatible vLLM service.
evaluate_trial_op = dsl.component(evaluate_trial, base_image=CONTROL_PLANE_IMAGE,
                                  install_kfp_package=False)
#: GPU step: starts vLLM in the evaluator image (pipeline adds accelerator, PVC, tolerations).
evaluate_trial_gpu_op = dsl.component(evaluate_trial, base_image=EVALUATOR_IMAGE,
                                      install_kfp_package=False)
