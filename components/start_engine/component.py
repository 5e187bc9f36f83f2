"""Run engine: start the run's one vLLM Deployment + Service and return its URL."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def start_engine(study: dict, run_key: str) -> str:
    """Create the run's vLLM engine on a GPU node and wait until it serves.

    For studies with ``engine.gpu_evaluator.engine: perRun``: one engine for all the run's
    trials instead of a cold start in every evaluator pod (:mod:`ecotune.run_engine`). The
    name comes from the study and ``run_key``, so a retried step keeps the engine its first
    attempt created, and the exit handler (``finalize_study`` with ``stop_engine``) deletes
    it whatever happened. Needs create/get/delete on Deployments and Services in the run's
    namespace (the chart's run-engine Role).

    Returns:
        The engine's OpenAI base URL inside the cluster.
    """
    from components._common import chart, run_engine_spec
    from ecotune.run_engine import RunEngine

    cfg = chart(study)
    gpu = cfg.engine.gpu_evaluator
    return RunEngine(run_engine_spec(cfg, run_key)).start(
        timeout_s=gpu.startup_timeout_s if gpu else 1800.0)
