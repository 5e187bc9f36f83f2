"""One vLLM per pipeline run (issue #13, GPU-hours): the Deployment + Service that
``start_engine`` creates and ``finalize_study`` deletes, through the official Kubernetes
client against a loopback API server; the manifests pass Kubernetes' schema; the chart's
GPU study renders into that engine, its RBAC and its NetworkPolicy; the compiled pipeline
starts it before sampling and shares it across the run's trials."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helm_render import EXAMPLES, KUBE_VERSION, of_kind, render, study_configs, tool

from components._common import run_engine_spec
from components.chart_config import ChartConfig
from ecotune.run_engine import RunEngine, RunEngineSpec, engine_name, manifests
from ecotune.testing.kube import KubeApi
from pipelines.options import PipelineOptions

GPU_STUDY = (EXAMPLES / "llama-3-8b.yaml",)
IN_PIPELINE = ("vllm.deploy=false",
               "studies[0].engine.gpuEvaluator.servingUrl=http://llama.serving:8000/v1",
               "global.imagePullSecrets[0]=regcred")


def spec(**kw) -> RunEngineSpec:
    base = dict(name=engine_name("llama-3-8b-gsm8k", "run-7"), namespace="ml", run_key="run-7",
                image="ghcr.io/ecotune/evaluator:0.1.0", model="meta-llama/Llama-3-8B",
                served_model_name="llama", gpu_count=2, tolerations=[
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                model_cache_pvc="cache", hf_token_secret="hf", api_key_secret="engine-key",
                vllm_args=["--max-model-len", "8192"],
                resources={"requests": {"cpu": "4", "memory": "32Gi"},
                           "limits": {"cpu": "8", "memory": "64Gi"}},
                image_pull_secrets=["regcred"], labels={"team": "ml"})
    return RunEngineSpec(**{**base, **kw})


def test_engine_name_is_a_dns_label_fixed_per_run() -> None:
    a = engine_name("Llama_3/8B gsm8k" + "x" * 80, "run-1")
    assert len(a) <= 63 and a == a.lower() and a[0].isalpha() and a[-1].isalnum()
    assert a == engine_name("Llama_3/8B gsm8k" + "x" * 80, "run-1")
    assert a != engine_name("Llama_3/8B gsm8k" + "x" * 80, "run-2")
    assert engine_name("7b", "r").startswith("ecotune-7b-")
    assert engine_name("--", "r").startswith("ecotune-study-")
    with pytest.raises(ValueError):
        spec(name="Not_A_Label")


def test_manifests_carry_gpus_secrets_cache_and_shm() -> None:
    dep, svc = manifests(spec())
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["vllm", "serve", "meta-llama/Llama-3-8B"]
    assert c["args"][:2] == ["--served-model-name", "llama"]
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2"
    assert c["args"][-2:] == ["--max-model-len", "8192"]
    assert c["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "engine-key",
                                                                "key": "key"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf"
    assert env["HF_HOME"]["value"] == "/models/hf"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["model-cache"]["persistentVolumeClaim"] == {"claimName": "cache"}
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["automountServiceAccountToken"] is False
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["metadata"]["labels"]["team"] == "ml"
    assert dep["metadata"]["annotations"]["ecotune.io/run-key"] == "run-7"
    # no shm, no cache claim: an emptyDir for the weights, no /dev/shm volume
    dep2, _ = manifests(spec(shm_size=None, model_cache_pvc=None, hf_token_secret=None))
    vols2 = {v["name"]: v for v in dep2["spec"]["template"]["spec"]["volumes"]}
    assert "dshm" not in vols2 and vols2["model-cache"] == {"name": "model-cache",
                                                             "emptyDir": {}}


def test_manifests_pass_the_kubernetes_schema(tmp_path: Path) -> None:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump_all(manifests(spec())))
    res = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", KUBE_VERSION,
                          str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_start_waits_for_ready_then_stop_deletes_both() -> None:
    with KubeApi(ready_after=3) as api:
        engine = RunEngine(spec(), api.client())
        url = engine.start(timeout_s=30, poll_s=0.01)
        assert url == f"http://{engine.spec.name}.ml.svc.cluster.local:8000"
        kinds = sorted(k for _, k, _ in api.objects)
        assert kinds == ["deployments", "services"]
        posted = [b for m, _, b in api.requests if m == "POST"]
        assert posted == list(manifests(engine.spec))  # what was sent is what we built
        reads = [p for m, p, _ in api.requests if m == "GET"]
        assert len(reads) == 3 and all(p.endswith("/status") for p in reads)
        # a retried step keeps the engine its first attempt made (409 is not an error)
        RunEngine(spec(), api.client()).start(timeout_s=5, poll_s=0.01)
        assert len(api.objects) == 2
        assert engine.stop() is True and api.objects == {}
        assert engine.stop() is False  # nothing left: the exit handler may run twice


def test_start_times_out_when_never_ready() -> None:
    with KubeApi(ready_after=0) as api:
        with pytest.raises(TimeoutError, match="not ready after"):
            RunEngine(spec(), api.client()).start(timeout_s=0.2, poll_s=0.02)


# -- the chart's GPU study -> run engine, RBAC, NetworkPolicy ---------------------------------
def test_chart_gpu_study_defaults_to_one_engine_per_run() -> None:
    docs = render(*GPU_STUDY, sets=(*IN_PIPELINE, "networkPolicy.enabled=true"))
    (cfg,) = study_configs(docs).values()
    assert cfg["engine"]["gpu_evaluator"]["engine"] == "perRun"
    opts = PipelineOptions.from_study(cfg)
    assert opts.run_engine and not opts.gpu_evaluator
    s = run_engine_spec(ChartConfig.of(cfg), "run-3", namespace="ml-tuning")
    assert s.node_selector["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert s.model_cache_pvc and s.image.endswith("evaluator:0.1.0")
    assert s.image_pull_secrets == ["regcred"] and s.labels["ecotune.io/study"] == cfg[
        "study"]["name"]
    assert s.resources["limits"]["memory"] == "64Gi"
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("run-engine")]
    assert role["metadata"]["namespace"] == cfg["kfp"]["namespace"]
    rules = {(g, r): set(v["verbs"]) for v in role["rules"] for g in v["apiGroups"]
             for r in v["resources"]}
    assert rules == {("apps", "deployments"): {"get", "create", "delete"},
                     ("apps", "deployments/status"): {"get"},
                     ("", "services"): {"create", "delete"}}
    (bind,) = [b for b in of_kind(docs, "RoleBinding")
               if b["metadata"]["name"].endswith("run-engine")]
    assert bind["subjects"][0]["name"] == cfg["kfp"]["service_account"]
    (pol,) = [p for p in of_kind(docs, "NetworkPolicy")
              if p["metadata"]["name"].endswith("run-engine")]
    dep, _ = manifests(s)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = pol["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    # ... and the pipeline's own policy does not select the engine pod
    (pipe,) = [p for p in of_kind(docs, "NetworkPolicy")
               if p["metadata"]["name"].endswith("-pipeline")]
    assert not pipe["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_chart_per_trial_or_managed_vllm_needs_no_engine_rights() -> None:
    for sets in ((*IN_PIPELINE, "studies[0].engine.gpuEvaluator.engine=perTrial"), ()):
        docs = render(*GPU_STUDY, sets=sets)
        assert not [r for r in of_kind(docs, "Role") if "run-engine" in r["metadata"]["name"]]
        (cfg,) = study_configs(docs).values()
        assert not PipelineOptions.from_study(cfg).run_engine


# -- the compiled pipeline --------------------------------------------------------------------
def test_pipeline_starts_the_engine_first_and_finalize_deletes_it(tmp_path: Path) -> None:
    from kfp import compiler

    from pipelines.ecotune_loop import build_pipeline

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(PipelineOptions(run_engine=True, max_rounds=2)),
                                str(out))
    spec_, platform = yaml.safe_load_all(out.read_text())
    tasks = spec_["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert tasks["start-engine"].get("dependentTasks") is None
    from_engine = {"taskOutputParameter": {"outputParameterKey": "Output",
                                           "producerTask": "start-engine"}}
    assert tasks["sample-dataset"]["inputs"]["parameters"]["engine_url"] == from_engine
    assert tasks["update-surrogate"]["inputs"]["parameters"]["engine_url"] == from_engine
    final = spec_["root"]["dag"]["tasks"]["finalize-study"]["inputs"]["parameters"]
    assert final["stop_engine"] == {"runtimeValue": {"constant": True}}
    # every evaluator is a CPU pod: the GPUs are the engine's
    ex = spec_["deploymentSpec"]["executors"]
    for name, e in ex.items():
        assert "accelerator" not in json.dumps(e.get("container", {}).get("resources", {})), name
    assert "start-engine" in json.dumps(platform)  # its pod settings (pull secrets, ...)
    with pytest.raises(ValueError, match="exclude each other"):
        PipelineOptions(run_engine=True, gpu_evaluator=True)
