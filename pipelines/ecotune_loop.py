"""The EcoTune loop as a KFP v2 pipeline: rounds of ask (batch) -> evaluate (parallel) -> decide.

KFP v2 has no recursion, so ``max_rounds`` rounds are unrolled at compile time, each nested
in the previous round's ``dsl.If(controller.output == "continue")``::

    ExitHandler(finalize)
      sample_dataset
      round 0: update_surrogate -> ParallelFor(trial items, parallelism=P): evaluate -> control_budget
        If continue: round 1: ... -> If continue: round 2: ...

All state lives in the study journal, so every step can be retried. Kubernetes settings
(GPU, tolerations, model cache, secrets) are applied here only, with kfp-kubernetes; they
come from :class:`PipelineOptions`, which :meth:`PipelineOptions.from_study` fills from a
chart study config (``pipelines.submit`` compiles one pipeline per study that way).
"""

from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes

from components import control_budget, finalize_study, sample_dataset, update_surrogate
from components.evaluator import evaluate_trial
from components.images import CONTROL_PLANE_IMAGE, EVALUATOR_IMAGE

PIPELINE_NAME = "ecotune-loop"


@dataclass
class PipelineOptions:
    """Compile-time settings of the pipeline (what a KFP parameter cannot change).

    Attributes:
        max_rounds: rounds unrolled (the loop stops earlier when the budget is spent).
        parallelism: evaluators running at once in a round.
        gpu_evaluator: run evaluators on GPU nodes with vLLM started in the pod (evaluator
            image); False: CPU evaluators against an existing vLLM service (``engine_url``).
        gpu_resource, gpu_count: accelerator resource name and limit per evaluator.
        accelerator_label, accelerator_type: node selector for the GPU model.
        node_selector: more node labels for the GPU evaluator.
        tolerations: tolerations (dicts with key/operator/value/effect) for the GPU evaluator.
        model_cache_pvc, model_cache_mount: the model-weights PVC and where it is mounted.
        s3_secret, s3_access_key_key, s3_secret_key_key: Secret with the S3 credentials.
        s3_endpoint_url, s3_region: set as ``AWS_ENDPOINT_URL`` / ``AWS_DEFAULT_REGION``.
        mlflow_tracking_uri: ``MLFLOW_TRACKING_URI`` of the finalize step.
        mlflow_secret, mlflow_username_key, mlflow_password_key: MLflow basic-auth Secret.
        api_key_secret, api_key_key: Secret with the engine's API key (``ECOTUNE_API_KEY``).
        control_plane_image, evaluator_image: images of the CPU and GPU steps.
    """

    max_rounds: int = 3
    parallelism: int = 4
    gpu_evaluator: bool = False
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = 1
    accelerator_label: str | None = "nvidia.com/gpu.product"
    accelerator_type: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    model_cache_pvc: str | None = None
    model_cache_mount: str = "/models"
    s3_secret: str | None = "ecotune-s3"
    s3_access_key_key: str = "AWS_ACCESS_KEY_ID"
    s3_secret_key_key: str = "AWS_SECRET_ACCESS_KEY"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_secret: str | None = None
    mlflow_username_key: str = "MLFLOW_TRACKING_USERNAME"
    mlflow_password_key: str = "MLFLOW_TRACKING_PASSWORD"
    api_key_secret: str | None = None
    api_key_key: str = "key"
    control_plane_image: str = CONTROL_PLANE_IMAGE
    evaluator_image: str = EVALUATOR_IMAGE

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {self.parallelism}")

    @classmethod
    def from_study(cls, cfg: dict[str, Any], **overrides: Any) -> "PipelineOptions":
        """Options for one chart study config (``/etc/ecotune/study.yaml``)."""
        eng, st = cfg.get("engine") or {}, cfg.get("storage") or {}
        tr, images = cfg.get("tracking") or {}, (cfg.get("kfp") or {}).get("images") or {}
        gpu = eng.get("gpu_evaluator") or {}
        kw: dict[str, Any] = {"gpu_evaluator": eng.get("type") == "gpuEvaluator"
                              and not eng.get("base_url")}
        if gpu:
            kw.update(gpu_resource=gpu.get("gpu_resource") or "nvidia.com/gpu",
                      gpu_count=int(gpu.get("gpu_count") or 1),
                      accelerator_label=gpu.get("accelerator_label"),
                      accelerator_type=gpu.get("accelerator_type"),
                      node_selector=dict(gpu.get("node_selector") or {}),
                      tolerations=list(gpu.get("tolerations") or []),
                      model_cache_pvc=gpu.get("model_cache_pvc") or None,
                      model_cache_mount=gpu.get("model_cache_mount") or "/models")
            if gpu.get("image"):
                kw["evaluator_image"] = gpu["image"]
        if (eng.get("api_key_secret") or {}).get("name"):
            kw.update(api_key_secret=eng["api_key_secret"]["name"],
                      api_key_key=eng["api_key_secret"].get("key") or "key")
        creds = st.get("credentials_secret") or {}
        kw.update(s3_secret=creds.get("name") if st.get("enabled") else None,
                  s3_endpoint_url=st.get("endpoint_url") or None,
                  s3_region=st.get("region") or None)
        if creds.get("access_key_id_key"):
            kw["s3_access_key_key"] = creds["access_key_id_key"]
        if creds.get("secret_access_key_key"):
            kw["s3_secret_key_key"] = creds["secret_access_key_key"]
        if tr.get("enabled"):
            kw["mlflow_tracking_uri"] = tr.get("tracking_uri") or None
            mcreds = tr.get("credentials_secret") or {}
            if mcreds.get("name"):
                kw.update(mlflow_secret=mcreds["name"],
                          mlflow_username_key=mcreds.get("username_key") or "MLFLOW_TRACKING_USERNAME",
                          mlflow_password_key=mcreds.get("password_key") or "MLFLOW_TRACKING_PASSWORD")
        if images.get("control_plane"):
            kw["control_plane_image"] = images["control_plane"]
        return cls(**{**kw, **overrides})


def _cpu(task: dsl.PipelineTask, o: PipelineOptions, image: str | None = None) -> None:
    """Storage credentials and endpoint for every step (S3 journal and subsets)."""
    task.set_caching_options(False)  # steps read and write the journal: never cache them
    task.set_retry(num_retries=2, backoff_duration="30s")
    if o.s3_secret:
        kubernetes.use_secret_as_env(task, o.s3_secret, {
            o.s3_access_key_key: "AWS_ACCESS_KEY_ID",
            o.s3_secret_key_key: "AWS_SECRET_ACCESS_KEY"})
    if o.s3_endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL", o.s3_endpoint_url)
    if o.s3_region:
        task.set_env_variable("AWS_DEFAULT_REGION", o.s3_region)


def _evaluator(task: dsl.PipelineTask, o: PipelineOptions) -> None:
    _cpu(task, o)
    if o.api_key_secret:
        kubernetes.use_secret_as_env(task, o.api_key_secret, {o.api_key_key: "ECOTUNE_API_KEY"})
    if not o.gpu_evaluator:
        task.set_cpu_limit("2").set_memory_limit("4G")
        return
    task.set_accelerator_type(o.gpu_resource).set_accelerator_limit(o.gpu_count)
    task.set_memory_limit("64G")
    if o.accelerator_label and o.accelerator_type:
        kubernetes.add_node_selector(task, o.accelerator_label, o.accelerator_type)
    for key, value in sorted(o.node_selector.items()):
        kubernetes.add_node_selector(task, key, value)
    for t in o.tolerations:
        kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"),
                                  value=t.get("value"), effect=t.get("effect"),
                                  toleration_seconds=t.get("tolerationSeconds"))
    if o.model_cache_pvc:
        kubernetes.mount_pvc(task, o.model_cache_pvc, o.model_cache_mount)


def _tracking(task: dsl.PipelineTask, o: PipelineOptions) -> None:
    if o.mlflow_tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", o.mlflow_tracking_uri)
    if o.mlflow_secret:
        kubernetes.use_secret_as_env(task, o.mlflow_secret, {
            o.mlflow_username_key: "MLFLOW_TRACKING_USERNAME",
            o.mlflow_password_key: "MLFLOW_TRACKING_PASSWORD"})


def build_pipeline(options: PipelineOptions | None = None) -> Any:
    """The pipeline function for ``options`` (compile it with ``kfp.compiler.Compiler``)."""
    o = options or PipelineOptions()
    def op(func: Any, image: str) -> Any:  # the components, in this study's pinned images
        return dsl.component(getattr(func, "python_func", func), base_image=image,
                             install_kfp_package=False)

    evaluate = op(evaluate_trial, o.evaluator_image if o.gpu_evaluator else o.control_plane_image)
    ask_op, budget_op = op(update_surrogate, o.control_plane_image), op(control_budget, o.control_plane_image)
    sample_op, final_op = op(sample_dataset, o.control_plane_image), op(finalize_study, o.control_plane_image)

    def one_round(i: int, study: Any, journal: Any, manifest: Any, engine_url: Any,
                  batch_size: Any) -> None:
        ask = ask_op(study=study, journal_uri=journal, manifest_uri=manifest, q=batch_size)
        ask.set_display_name(f"round-{i}-ask")
        _cpu(ask, o)
        # the loop body takes only its item ({trial_id, journal_uri, manifest_uri}) and
        # pipeline parameters: no other task's outputs cross into the ParallelFor
        with dsl.ParallelFor(ask.output, parallelism=o.parallelism, name=f"round-{i}-trials"
                             ) as item:
            ev = evaluate(study=study, trial=item, engine_url=engine_url)
            ev.set_display_name(f"round-{i}-evaluate")
            _evaluator(ev, o)
        ctl = budget_op(study=study, journal_uri=journal, round_index=i,
                             max_rounds=o.max_rounds).after(ev)
        ctl.set_display_name(f"round-{i}-budget")
        _cpu(ctl, o)
        if i + 1 < o.max_rounds:
            with dsl.If(ctl.output == "continue", name=f"round-{i + 1}"):
                one_round(i + 1, study, journal, manifest, engine_url, batch_size)

    @dsl.pipeline(name=PIPELINE_NAME, description=(
        "EcoTune: token-budgeted multi-fidelity tuning of LLM inference settings "
        f"({o.max_rounds} rounds, {o.parallelism} parallel evaluators, "
        f"{'GPU evaluator' if o.gpu_evaluator else 'existing vLLM service'})."))
    def ecotune_loop(study: dict, journal_uri: str, subsets_uri: str, engine_url: str = "",
                     batch_size: int = 4) -> None:
        """Args: study config (chart contract), journal prefix, subsets store, engine URL
        (empty: start vLLM in the GPU evaluator), trials asked per round."""
        final = final_op(study=study, journal_uri=journal_uri, engine_url=engine_url,
                               run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        final.set_display_name("finalize")
        _cpu(final, o)
        _tracking(final, o)
        with dsl.ExitHandler(final, name="ecotune-study"):
            prep = sample_op(study=study, subsets_uri=subsets_uri, journal_uri=journal_uri,
                                  run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            prep.set_display_name("sample-dataset")
            _cpu(prep, o)
            one_round(0, study, prep.outputs["journal_uri"], prep.outputs["manifest_uri"],
                      engine_url, batch_size)

    return ecotune_loop


#: the default pipeline (existing vLLM service, 3 rounds), as ``make pipeline`` compiles it.
ecotune_loop = build_pipeline()
