"""Kubernetes settings of the pipeline's steps, applied with kfp-kubernetes.

The only place the pipeline's pods get Secrets, volumes, scheduling, metadata, resources
and deadlines; the components never know. Every step gets the image pull secrets, the pod
labels and annotations, CPU and memory requests and limits (a profile namespace's
ResourceQuota rejects a pod without them) and its timeout.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from pipelines.options import PipelineOptions, Resources


def _resources(task: dsl.PipelineTask, r: Resources) -> None:
    task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
    task.set_memory_request(r.memory_request).set_memory_limit(r.memory_limit)


def _pod(task: dsl.PipelineTask, o: PipelineOptions, step: str) -> None:
    """What every step's pod gets: pull secrets, metadata, deadline, S3 access."""
    task.set_caching_options(False)  # steps read and write the journal: never cache them
    task.set_retry(num_retries=2, backoff_duration="30s")
    if o.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(o.image_pull_secrets))
    for key, value in sorted(o.pod_labels.items()):
        kubernetes.add_pod_label(task, key, value)
    for key, value in sorted(o.pod_annotations.items()):
        kubernetes.add_pod_annotation(task, key, value)
    seconds = int(o.timeouts.get(step) or 0)
    if seconds:
        kubernetes.set_timeout(task, seconds)
    if o.s3_secret:
        kubernetes.use_secret_as_env(task, o.s3_secret, {
            o.s3_access_key_key: "AWS_ACCESS_KEY_ID",
            o.s3_secret_key_key: "AWS_SECRET_ACCESS_KEY"})
    if o.s3_endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL", o.s3_endpoint_url)
    if o.s3_region:
        task.set_env_variable("AWS_DEFAULT_REGION", o.s3_region)


def control_plane_step(task: dsl.PipelineTask, o: PipelineOptions, step: str) -> None:
    """A CPU step of the control plane (sampler, updater, controller, finalize)."""
    _pod(task, o, step)
    _resources(task, o.control_plane_resources)


def evaluator_step(task: dsl.PipelineTask, o: PipelineOptions) -> None:
    """The evaluator: against a service on CPU, or vLLM in the pod on GPU nodes."""
    _pod(task, o, "evaluate")
    engine_access(task, o)
    if not o.gpu_evaluator:
        _resources(task, o.evaluator_resources)
        return
    _resources(task, o.gpu_evaluator_resources)
    task.set_accelerator_type(o.gpu_resource).set_accelerator_limit(o.gpu_count)
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
        cache = o.model_cache_mount.rstrip("/")
        task.set_env_variable("HF_HOME", f"{cache}/hf")
        task.set_env_variable("VLLM_CACHE_ROOT", f"{cache}/vllm")
    if o.shm_size:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                   medium="Memory", size_limit=o.shm_size)
    if o.hf_token_secret:
        kubernetes.use_secret_as_env(task, o.hf_token_secret, {o.hf_token_key: "HF_TOKEN"})


def engine_access(task: dsl.PipelineTask, o: PipelineOptions) -> None:
    """The engine's API key (``ECOTUNE_API_KEY``, from ``api_key_secret``), for every step
    that calls the engine: the evaluators, and the sample, ask and finalize steps, which
    count prompt tokens or score held-out instances on the pipeline's ``engine_url``."""
    if o.api_key_secret:
        kubernetes.use_secret_as_env(task, o.api_key_secret, {o.api_key_key: "ECOTUNE_API_KEY"})


def tracking_env(task: dsl.PipelineTask, o: PipelineOptions) -> None:
    """MLflow endpoint and credentials: the sample step (the study's run), the evaluators
    (each logs its trial as it finishes), the controller (catch-up) and finalize."""
    if o.mlflow_tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", o.mlflow_tracking_uri)
    if o.mlflow_secret:
        kubernetes.use_secret_as_env(task, o.mlflow_secret, {
            o.mlflow_username_key: "MLFLOW_TRACKING_USERNAME",
            o.mlflow_password_key: "MLFLOW_TRACKING_PASSWORD"})
