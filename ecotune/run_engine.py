"""One vLLM engine per pipeline run: a Deployment and a Service that a step creates and the
run's exit handler deletes.

Starting vLLM inside every GPU evaluator pod cold-starts the model (up to half an hour for a
large one) to score a few instances, once per trial; keeping a GPU Deployment up around the
clock for a weekly study wastes the week. A run engine is the middle: the pipeline's first
step creates ``vllm serve`` as a Deployment (one replica, the study's GPUs, model cache,
``/dev/shm``, Hugging Face token, API key) with a ClusterIP Service, waits until it is ready
and hands its URL to every trial of the run; the exit handler deletes both, whether the run
succeeded or failed.

Everything is keyed by a name derived from the study and the run (:func:`engine_name`), so
a retried step finds the engine its first attempt created (HTTP 409 keeps it) and the exit
handler, which cannot take outputs of the steps it guards, computes the same name.

This module is an edge: it imports the Kubernetes client (shipped with kfp) only when used;
the optimizer never sees it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

#: where a pod finds its own namespace
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def engine_name(study: str, run_key: str) -> str:
    """The run engine's Deployment/Service name: a DNS-1035 label (≤ 63 characters) from
    the study name and a hash of the run key, the same in every step of one run."""
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:10]
    base = re.sub(r"[^a-z0-9-]+", "-", study.lower()).strip("-")[:40].rstrip("-") or "study"
    return f"ecotune-{base}-{digest}"


def pod_namespace(default: str | None = None) -> str:
    """The namespace this pod runs in (its service-account mount), else ``default``."""
    if NAMESPACE_FILE.exists():
        return NAMESPACE_FILE.read_text().strip()
    if default:
        return default
    raise ValueError("run engine: no namespace given and not running in a pod "
                     f"({NAMESPACE_FILE} is missing)")


class RunEngineSpec(BaseModel):
    """What the run's vLLM Deployment needs; the pipeline fills it from the chart's study
    config (``engine.gpu_evaluator``, ``kfp`` pod settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=63, pattern=_DNS_LABEL.pattern)
    namespace: str = Field(min_length=1)
    image: str = Field(min_length=1)
    model: str = Field(min_length=1)
    served_model_name: str = Field(min_length=1)
    run_key: str = ""
    port: int = Field(8000, ge=1, le=65535)
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = Field(1, ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    model_cache_pvc: str | None = None
    model_cache_mount: str = "/models"
    shm_size: str | None = "8Gi"
    hf_token_secret: str | None = None
    hf_token_key: str = "HF_TOKEN"
    api_key_secret: str | None = None
    api_key_key: str = "key"
    vllm_args: list[str] = Field(default_factory=list)
    #: ``{requests: {cpu, memory}, limits: {cpu, memory}}`` besides the GPUs
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    image_pull_secrets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def url(self) -> str:
        """The engine's OpenAI base URL inside the cluster."""
        return f"http://{self.name}.{self.namespace}.svc.cluster.local:{self.port}"

    @property
    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "ecotune-run-engine", "ecotune.io/engine": self.name}


def manifests(spec: RunEngineSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the Service of a run engine, as Kubernetes API dicts."""
    labels = {**spec.labels, **spec.selector, "app.kubernetes.io/component": "vllm"}
    meta = {"name": spec.name, "namespace": spec.namespace, "labels": labels,
            "annotations": {**spec.annotations, "ecotune.io/run-key": spec.run_key}}
    gpus = {spec.gpu_resource: str(spec.gpu_count)}
    res = {"requests": {**spec.resources.get("requests", {}), **gpus},
           "limits": {**spec.resources.get("limits", {}), **gpus}}
    cache = spec.model_cache_mount.rstrip("/") or "/models"
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
           {"name": "HF_HOME", "value": f"{cache}/hf"},
           {"name": "VLLM_CACHE_ROOT", "value": f"{cache}/vllm"}]
    for secret, key, var in ((spec.api_key_secret, spec.api_key_key, "VLLM_API_KEY"),
                             (spec.hf_token_secret, spec.hf_token_key, "HF_TOKEN")):
        if secret:
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    mounts = [{"name": "model-cache", "mountPath": cache}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "model-cache", **({"persistentVolumeClaim": {"claimName": spec.model_cache_pvc}}
                                   if spec.model_cache_pvc else {"emptyDir": {}})},
        {"name": "tmp", "emptyDir": {}}]
    if spec.shm_size:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory",
                                                     "sizeLimit": spec.shm_size}})
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": "vllm", "image": spec.image, "imagePullPolicy": "IfNotPresent",
        "command": ["vllm", "serve", spec.model],
        "args": ["--served-model-name", spec.served_model_name, "--host", "0.0.0.0",
                 "--port", str(spec.port), "--tensor-parallel-size", str(spec.gpu_count),
                 *spec.vllm_args],
        "env": env, "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "startupProbe": {**probe, "failureThreshold": 180},  # 30 min to load the weights
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": res, "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}}}
    pod = {"automountServiceAccountToken": False, "containers": [container],
           "volumes": volumes, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
           "nodeSelector": spec.node_selector or None, "tolerations": spec.tolerations or None,
           "imagePullSecrets": [{"name": s} for s in spec.image_pull_secrets] or None}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": spec.selector},
                 "template": {"metadata": {"labels": labels, "annotations": spec.annotations},
                              "spec": {k: v for k, v in pod.items() if v is not None}}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "ClusterIP", "selector": spec.selector,
                 "ports": [{"name": "http", "port": spec.port, "targetPort": "http",
                            "protocol": "TCP"}]}}
    return deployment, service


class RunEngine:
    """Create, await and delete one run engine through the Kubernetes API.

    Args:
        spec: the engine.
        api_client: a ``kubernetes.client.ApiClient``; default: the in-cluster config (the
            pipeline pod's service account), else ``$KUBECONFIG`` or ``~/.kube/config``.
    """

    def __init__(self, spec: RunEngineSpec, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:  # outside a pod: $KUBECONFIG, read now
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            api_client = client.ApiClient()
        self.spec = spec
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    def start(self, timeout_s: float = 1800.0, poll_s: float = 10.0) -> str:
        """Create the Deployment and Service (kept when a retried step already made them)
        and wait until a replica is ready; returns the engine's URL.

        Raises:
            TimeoutError: not ready within ``timeout_s`` (the exit handler deletes it).
        """
        from kubernetes.client.exceptions import ApiException

        deployment, service = manifests(self.spec)
        ns = self.spec.namespace
        for create, body in ((self._apps.create_namespaced_deployment, deployment),
                             (self._core.create_namespaced_service, service)):
            try:
                create(ns, body)
                log.info("run engine: created %s %s/%s", body["kind"], ns, self.spec.name)
            except ApiException as e:
                if e.status != 409:
                    raise
                log.info("run engine: %s %s/%s exists (a retried step): kept",
                         body["kind"], ns, self.spec.name)
        deadline = time.monotonic() + timeout_s
        while True:
            status = self._apps.read_namespaced_deployment_status(self.spec.name, ns).status
            if status is not None and (status.ready_replicas or 0) >= 1:
                log.info("run engine %s ready at %s", self.spec.name, self.spec.url)
                return self.spec.url
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run engine {ns}/{self.spec.name} not ready after "
                                   f"{timeout_s:.0f} s (see its pod's events and log)")
            time.sleep(poll_s)

    def stop(self) -> bool:
        """Delete the Deployment and the Service; True when anything was there."""
        from kubernetes.client.exceptions import ApiException

        found = False
        for delete in (self._apps.delete_namespaced_deployment,
                       self._core.delete_namespaced_service):
            try:
                delete(self.spec.name, self.spec.namespace, propagation_policy="Foreground")
                found = True
            except ApiException as e:
                if e.status != 404:
                    raise
        log.info("run engine %s/%s %s", self.spec.namespace, self.spec.name,
                 "deleted" if found else "was not there")
        return found
