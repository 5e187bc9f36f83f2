"""Compile-time settings of the EcoTune pipeline, and how a chart study config fills them.

A KFP parameter cannot change a task's Kubernetes settings (GPU, tolerations, volumes,
Secrets, pod metadata, resources, timeouts): they are compiled into the pipeline. The chart
renders them into each study's config (``/etc/ecotune/study.yaml``);
:meth:`PipelineOptions.from_study` reads them back, and ``pipelines.kube`` applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from components.images import CONTROL_PLANE_IMAGE, EVALUATOR_IMAGE

#: the steps of the pipeline, as ``timeouts`` keys: start-engine (run engine only),
#: sample-dataset, round-<i>-ask, round-<i>-evaluate, round-<i>-budget, finalize
STEPS = ("engine", "sample", "ask", "evaluate", "budget", "finalize")

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")  # what kfp's set_cpu_* accept
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")  # kfp's set_memory_*


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests and limits of a step's container (Kubernetes quantities;
    memory in whole units, as KFP accepts them: ``512Mi``, ``4Gi``). Every field set: a
    namespace ResourceQuota on cpu and memory rejects a pod that lacks any of them."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def __post_init__(self) -> None:
        for name in ("cpu_request", "cpu_limit"):
            if not _CPU.match(str(getattr(self, name))):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a CPU quantity "
                                 "KFP accepts (e.g. 500m, 2)")
        for name in ("memory_request", "memory_limit"):
            if not _MEMORY.match(str(getattr(self, name))):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a memory quantity "
                                 "KFP accepts (e.g. 512Mi, 4Gi)")

    @classmethod
    def from_k8s(cls, spec: dict[str, Any], default: Resources) -> Resources:
        """From ``{requests: {cpu, memory}, limits: {cpu, memory}}``; missing fields keep
        ``default``'s."""
        req, lim = spec.get("requests") or {}, spec.get("limits") or {}
        return cls(cpu_request=str(req.get("cpu") or default.cpu_request),
                   cpu_limit=str(lim.get("cpu") or default.cpu_limit),
                   memory_request=str(req.get("memory") or default.memory_request),
                   memory_limit=str(lim.get("memory") or default.memory_limit))


CONTROL_PLANE_RESOURCES = Resources("500m", "2", "1Gi", "4Gi")
EVALUATOR_RESOURCES = Resources("500m", "2", "2Gi", "4Gi")
GPU_EVALUATOR_RESOURCES = Resources("4", "8", "32Gi", "64Gi")


@dataclass
class PipelineOptions:
    """Compile-time settings of the pipeline (what a KFP parameter cannot change).

    Attributes:
        max_rounds: rounds unrolled (the loop stops earlier when the budget is spent).
        parallelism: evaluators running at once in a round.
        gpu_evaluator: run evaluators on GPU nodes with vLLM started in the pod (evaluator
            image); False: CPU evaluators against an existing vLLM service (``engine_url``)
            or the run engine.
        run_engine: a ``start-engine`` step creates one vLLM Deployment + Service for the
            run (``ecotune.run_engine``; its GPU settings come from the study config), CPU
            evaluators call it, and the exit handler deletes it.
        gpu_resource, gpu_count: accelerator resource name and limit per evaluator.
        accelerator_label, accelerator_type: node selector for the GPU model.
        node_selector: more node labels for the GPU evaluator.
        tolerations: tolerations (dicts with key/operator/value/effect) for the GPU evaluator.
        model_cache_pvc, model_cache_mount: the model-weights PVC and where it is mounted
            (``HF_HOME`` and ``VLLM_CACHE_ROOT`` point into it).
        shm_size: size of the memory-backed ``/dev/shm`` of the GPU evaluator (vLLM's
            tensor-parallel workers share tensors there); None: not mounted.
        hf_token_secret, hf_token_key: Secret with a Hugging Face token, given to the GPU
            evaluator as ``HF_TOKEN`` (gated models).
        s3_secret, s3_access_key_key, s3_secret_key_key: Secret with the S3 credentials.
        s3_endpoint_url, s3_region: set as ``AWS_ENDPOINT_URL`` / ``AWS_DEFAULT_REGION``.
        mlflow_tracking_uri: ``MLFLOW_TRACKING_URI`` of the finalize step.
        mlflow_secret, mlflow_username_key, mlflow_password_key: MLflow basic-auth Secret.
        api_key_secret, api_key_key: Secret with the engine's API key (``ECOTUNE_API_KEY``).
        control_plane_image, evaluator_image: images of the CPU and GPU steps.
        image_pull_secrets: Secrets every step's pod pulls its image with.
        pod_labels, pod_annotations: metadata of every step's pod (e.g. the annotation
            ``sidecar.istio.io/inject: "false"`` in an Istio-injected profile namespace).
        control_plane_resources: requests and limits of the sampler, updater, controller
            and finalize steps.
        evaluator_resources, gpu_evaluator_resources: those of the evaluator step against a
            service / with vLLM in the pod (the GPUs come from ``gpu_count``).
        timeouts: seconds a step's pod may run (its ``activeDeadlineSeconds``), by step
            (:data:`STEPS`); a step not named, or 0, has none. A retry is a new pod with
            the same deadline.
    """

    max_rounds: int = 3
    parallelism: int = 4
    gpu_evaluator: bool = False
    run_engine: bool = False
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = 1
    accelerator_label: str | None = "nvidia.com/gpu.product"
    accelerator_type: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    model_cache_pvc: str | None = None
    model_cache_mount: str = "/models"
    shm_size: str | None = "8Gi"
    hf_token_secret: str | None = None
    hf_token_key: str = "HF_TOKEN"
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
    image_pull_secrets: list[str] = field(default_factory=list)
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    control_plane_resources: Resources = CONTROL_PLANE_RESOURCES
    evaluator_resources: Resources = EVALUATOR_RESOURCES
    gpu_evaluator_resources: Resources = GPU_EVALUATOR_RESOURCES
    timeouts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {self.parallelism}")
        if self.gpu_evaluator and self.run_engine:
            raise ValueError("gpu_evaluator (vLLM in every evaluator pod) and run_engine "
                             "(one vLLM for the run) exclude each other")
        unknown = sorted(set(self.timeouts) - set(STEPS))
        if unknown:
            raise ValueError(f"timeouts: unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
        bad = {k: v for k, v in self.timeouts.items() if int(v) < 0}
        if bad:
            raise ValueError(f"timeouts must be >= 0 seconds, got {bad}")

    @classmethod
    def from_study(cls, cfg: dict[str, Any], **overrides: Any) -> PipelineOptions:
        """Options for one chart study config (``/etc/ecotune/study.yaml``)."""
        eng, k = cfg.get("engine") or {}, cfg.get("kfp") or {}
        in_pipeline = eng.get("type") == "gpuEvaluator" and not eng.get("base_url")
        per_run = (eng.get("gpu_evaluator") or {}).get("engine", "perRun") == "perRun"
        kw: dict[str, Any] = {"gpu_evaluator": in_pipeline and not per_run,
                              "run_engine": in_pipeline and per_run}
        kw.update(_gpu(eng.get("gpu_evaluator") or {}))
        if (eng.get("api_key_secret") or {}).get("name"):
            kw.update(api_key_secret=eng["api_key_secret"]["name"],
                      api_key_key=eng["api_key_secret"].get("key") or "key")
        kw.update(_storage(cfg.get("storage") or {}))
        kw.update(_tracking(cfg.get("tracking") or {}))
        kw.update(_pods(k))
        if (k.get("images") or {}).get("control_plane"):
            kw["control_plane_image"] = k["images"]["control_plane"]
        return cls(**{**kw, **overrides})


def _gpu(gpu: dict[str, Any]) -> dict[str, Any]:
    if not gpu:
        return {}
    kw = dict(gpu_resource=gpu.get("gpu_resource") or "nvidia.com/gpu",
              gpu_count=int(gpu.get("gpu_count") or 1),
              accelerator_label=gpu.get("accelerator_label"),
              accelerator_type=gpu.get("accelerator_type"),
              node_selector=dict(gpu.get("node_selector") or {}),
              tolerations=list(gpu.get("tolerations") or []),
              model_cache_pvc=gpu.get("model_cache_pvc") or None,
              model_cache_mount=gpu.get("model_cache_mount") or "/models")
    if "shm_size" in gpu:
        kw["shm_size"] = gpu["shm_size"] or None
    hf = gpu.get("hf_token_secret") or {}
    if hf.get("name"):
        kw.update(hf_token_secret=hf["name"], hf_token_key=hf.get("key") or "HF_TOKEN")
    if gpu.get("image"):
        kw["evaluator_image"] = gpu["image"]
    return kw


def _storage(st: dict[str, Any]) -> dict[str, Any]:
    creds = st.get("credentials_secret") or {}
    kw: dict[str, Any] = dict(s3_secret=creds.get("name") if st.get("enabled") else None,
                              s3_endpoint_url=st.get("endpoint_url") or None,
                              s3_region=st.get("region") or None)
    if creds.get("access_key_id_key"):
        kw["s3_access_key_key"] = creds["access_key_id_key"]
    if creds.get("secret_access_key_key"):
        kw["s3_secret_key_key"] = creds["secret_access_key_key"]
    return kw


def _tracking(tr: dict[str, Any]) -> dict[str, Any]:
    if not tr.get("enabled"):
        return {}
    kw: dict[str, Any] = {"mlflow_tracking_uri": tr.get("tracking_uri") or None}
    creds = tr.get("credentials_secret") or {}
    if creds.get("name"):
        kw.update(mlflow_secret=creds["name"],
                  mlflow_username_key=creds.get("username_key") or "MLFLOW_TRACKING_USERNAME",
                  mlflow_password_key=creds.get("password_key") or "MLFLOW_TRACKING_PASSWORD")
    return kw


def _pods(k: dict[str, Any]) -> dict[str, Any]:
    """Pod settings of every step: pull secrets, metadata, resources, timeouts."""
    res = k.get("resources") or {}
    return dict(
        image_pull_secrets=[str(s) for s in k.get("image_pull_secrets") or []],
        pod_labels={str(a): str(b) for a, b in (k.get("pod_labels") or {}).items()},
        pod_annotations={str(a): str(b) for a, b in (k.get("pod_annotations") or {}).items()},
        control_plane_resources=Resources.from_k8s(res.get("control_plane") or {},
                                                   CONTROL_PLANE_RESOURCES),
        evaluator_resources=Resources.from_k8s(res.get("evaluator") or {},
                                               EVALUATOR_RESOURCES),
        gpu_evaluator_resources=Resources.from_k8s(res.get("gpu_evaluator") or {},
                                                   GPU_EVALUATOR_RESOURCES),
        timeouts={str(s): int(v) for s, v in (k.get("timeouts") or {}).items()})
