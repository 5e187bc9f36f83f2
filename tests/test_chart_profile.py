"""The chart in a multi-user KFP profile namespace (helm/ecotune/ci/*.yaml scenarios): what it
renders for the pipeline's pods (pull secrets, metadata, resources, timeouts, /dev/shm, HF
token), where the model-cache PVC goes, the NetworkPolicies, the schedule's time zone, and
the study config compiled into a pipeline that carries all of it.

scripts/check_chart.sh (tests/test_chart.py) lints, renders and validates every scenario
against the Kubernetes schemas; these tests check the content.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helm_render import CI, EXAMPLES, helm, of_kind, render, study_configs

from pipelines.compile import compile_pipeline
from pipelines.ecotune_loop import PipelineOptions

PROFILE = CI / "profile-namespace-values.yaml"
VLLM_NP = CI / "networkpolicy-vllm-values.yaml"


def values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# -- the study config carries the pipeline pods' settings ---------------------------------
def test_profile_study_config_carries_the_pipeline_pod_settings() -> None:
    v = values(PROFILE)
    cfgs = study_configs(render(PROFILE))
    llama, qwen = cfgs["llama-gsm8k"], cfgs["qwen-mmlu"]
    for cfg in (llama, qwen):
        k = cfg["kfp"]
        assert k["namespace"] == "team-llm"
        assert k["image_pull_secrets"] == ["team-registry"]
        assert k["pod_annotations"] == {"sidecar.istio.io/inject": "false"}
        assert k["resources"] == {"control_plane": v["pipeline"]["resources"]["controlPlane"],
                                  "evaluator": v["pipeline"]["resources"]["evaluator"],
                                  "gpu_evaluator": v["pipeline"]["resources"]["gpuEvaluator"]}
        assert k["timeouts"] == v["pipeline"]["timeouts"]
    assert llama["kfp"]["pod_labels"] == {
        "team": "llm-platform", "app.kubernetes.io/part-of": "ecotune",
        "app.kubernetes.io/instance": "ecotune", "app.kubernetes.io/component": "pipeline",
        "ecotune.io/study": "llama-gsm8k"}
    gpu = llama["engine"]["gpu_evaluator"]
    assert gpu["shm_size"] == "16Gi"
    assert gpu["hf_token_secret"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert llama["engine"]["serving_url"] == "http://llama-3-8b.serving.svc.cluster.local:8000/v1"
    # the study default, and a study that turns the failure stop off
    assert llama["study"]["max_failed_trials"] == 3
    assert qwen["study"]["max_failed_trials"] is None and qwen["study"]["optimizer"] == "bohb"


def test_chart_labels_win_over_pod_labels_from_values(tmp_path: Path) -> None:
    """The NetworkPolicy selects pipeline pods by the chart's labels: values cannot move them."""
    clash = tmp_path / "clash.yaml"
    clash.write_text(yaml.safe_dump({"pipeline": {"podLabels": {
        "app.kubernetes.io/component": "other", "cost-center": "42"}}}))
    labels = study_configs(render(PROFILE, clash))["qwen-mmlu"]["kfp"]["pod_labels"]
    assert labels["app.kubernetes.io/component"] == "pipeline" and labels["cost-center"] == "42"


def test_chart_study_config_compiles_into_a_pipeline_with_those_settings(tmp_path: Path) -> None:
    """values -> ConfigMap -> PipelineOptions.from_study -> compiled YAML, as the submit Job
    does: every step has the pull secret, the annotation, requests/limits and its timeout; the
    GPU evaluator the /dev/shm, the HF token, the model cache PVC the chart created."""
    docs = render(PROFILE)
    v = values(PROFILE)["pipeline"]
    cfg = study_configs(docs)["llama-gsm8k"]
    path = compile_pipeline(tmp_path / "p.yaml", PipelineOptions.from_study(cfg, max_rounds=2))
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    step = {"sample-dataset": "sample", "update-surrogate": "ask", "evaluate-trial": "evaluate",
            "control-budget": "budget", "finalize-study": "finalize"}
    for name, ex in spec["deploymentSpec"]["executors"].items():
        kind = name.removeprefix("exec-").rstrip("-0123456789")
        k, res = kube[name], ex["container"]["resources"]
        assert [s["secretName"] for s in k["imagePullSecret"]] == ["team-registry"]
        assert k["podMetadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert k["podMetadata"]["labels"]["ecotune.io/study"] == "llama-gsm8k"
        assert int(k["activeDeadlineSeconds"]) == v["timeouts"][step[kind]]
        want = v["resources"]["gpuEvaluator" if kind == "evaluate-trial" else "controlPlane"]
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == \
            (str(want["requests"]["cpu"]), want["requests"]["memory"]), name
        assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == \
            (str(want["limits"]["cpu"]), want["limits"]["memory"]), name
    evs = [kube[n] for n in kube if n.startswith("exec-evaluate-trial")]
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    assert len(evs) == 2  # one per round
    for ev in evs:
        assert ev["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm",
                                         "medium": "Memory", "sizeLimit": "16Gi"}]
        assert any(s["secretName"] == "hf-token" for s in ev["secretAsEnv"])
        assert ev["pvcMount"][0]["constant"] == pvc["metadata"]["name"]


# -- the model cache PVC lives where its pods run ------------------------------------------
def test_model_cache_pvc_is_in_the_namespace_of_the_pods_that_mount_it() -> None:
    # vLLM inside the pipeline: the PVC goes to the KFP (profile) namespace
    (pvc,) = of_kind(render(PROFILE), "PersistentVolumeClaim")
    assert pvc["metadata"]["namespace"] == "team-llm"
    # the chart's own vLLM Deployment (release namespace) mounts it: it stays there, even
    # though runs go to another KFP namespace
    docs = render(EXAMPLES / "llama-3-8b.yaml")
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    assert study_configs(docs)["llama-3-8b-gsm8k"]["kfp"]["namespace"] == "ml-tuning"
    assert pvc["metadata"]["namespace"] == "tuning"


# -- NetworkPolicies -------------------------------------------------------------------------
@pytest.mark.parametrize("example", [None, "llama-3-8b.yaml", "qwen-multi.yaml"])
def test_no_network_policy_unless_enabled(example: str | None) -> None:
    assert not of_kind(render(*([EXAMPLES / example] if example else [])), "NetworkPolicy")


def test_network_policies_close_ingress_and_limit_egress_to_dns_and_the_rules() -> None:
    docs = render(PROFILE)
    pols = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert set(pols) == {"ecotune-submit", "ecotune-pipeline"}  # no vLLM Deployment here
    egress = values(PROFILE)["networkPolicy"]["egress"]
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    for pol in pols.values():
        assert pol["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert pol["spec"]["ingress"] == []
        assert pol["spec"]["egress"] == [dns, *egress]
    # the pipeline policy is in the KFP namespace and selects exactly the labels the
    # pipeline gives its pods
    pipe = pols["ecotune-pipeline"]
    assert pipe["metadata"]["namespace"] == "team-llm"
    sel = pipe["spec"]["podSelector"]["matchLabels"]
    for cfg in study_configs(docs).values():
        assert sel.items() <= cfg["kfp"]["pod_labels"].items()
    # the submit policy selects the submit pods (CronJob pod template labels)
    sub = pols["ecotune-submit"]["spec"]["podSelector"]
    for cron in of_kind(docs, "CronJob"):
        labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert sub["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] in sub["matchExpressions"][0]["values"]


def test_managed_vllm_takes_ingress_only_from_pipeline_and_test_pods() -> None:
    docs = render(VLLM_NP)
    pols = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    vllm = pols["ecotune-vllm"]["spec"]
    assert vllm["policyTypes"] == ["Ingress"] and "egress" not in vllm  # egress left open
    (dep,) = of_kind(docs, "Deployment")
    assert vllm["podSelector"]["matchLabels"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    (rule,) = vllm["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    peers = rule["from"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "tuning"}
    labels = study_configs(docs)["mistral-arc"]["kfp"]["pod_labels"]
    assert peers[0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert peers[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert peers[2] == values(VLLM_NP)["networkPolicy"]["vllmIngressFrom"][0]
    assert len(peers) == 3


# -- the schedule's time zone ------------------------------------------------------------------
def test_cronjob_keeps_each_studys_time_zone() -> None:
    crons = of_kind(render(EXAMPLES / "qwen-multi.yaml"), "CronJob")
    assert {c["spec"]["timeZone"] for c in crons} == {"Europe/Berlin"}


def test_recurring_runs_only_in_the_zone_kfp_schedules_in(tmp_path: Path) -> None:
    """KFP's API has no per-run time zone: a study whose timeZone differs from the
    ScheduledWorkflow controller's is refused instead of firing at another hour."""
    docs = render(VLLM_NP)  # recurringRunTimeZone Europe/Paris, study in Europe/Paris
    cfg = study_configs(docs)["mistral-arc"]
    assert cfg["schedule"] == {"cron": "0 1 * * *", "time_zone": "Europe/Paris"}
    bad = tmp_path / "berlin.yaml"
    bad.write_text(yaml.safe_dump({"kfp": {"recurringRunTimeZone": "UTC"},
                                   "studies": [{**values(VLLM_NP)["studies"][0],
                                                "timeZone": "Europe/Berlin"}]}))
    res = helm("template", "ecotune", str(CI.parent), "-f", str(VLLM_NP), "-f", str(bad))
    assert res.returncode != 0
    assert "studies[mistral-arc]: timeZone Europe/Berlin cannot be kept by a KFP recurring run" \
        in res.stderr
    utc = tmp_path / "utc.yaml"  # UTC and Etc/UTC are the same zone
    utc.write_text(yaml.safe_dump({"kfp": {"recurringRunTimeZone": "UTC"},
                                   "studies": [{**values(VLLM_NP)["studies"][0],
                                                "timeZone": "Etc/UTC"}]}))
    assert len(of_kind(render(VLLM_NP, utc), "Job")) == 2


# -- values the schema and templates reject ----------------------------------------------------
GPU_STUDY = {"name": "g1", "model": "m", "task": "gsm8k",
             "engine": {"type": "gpuEvaluator",
                        "gpuEvaluator": {"acceleratorType": "NVIDIA-L4", "gpuCount": 1}}}


@pytest.mark.parametrize(("bad", "message"), [
    ({"studies": [GPU_STUDY]}, "studies[g1]: engine.gpuEvaluator.servingUrl is required"),
    ({"pipeline": {"resources": {"controlPlane": {
        "requests": {"cpu": "500m", "memory": "1.5Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"}}}}}, "memory"),
    # removing a default (null) would leave a pod without it: a ResourceQuota rejects that
    ({"pipeline": {"resources": {"evaluator": {"requests": {"memory": None}}}}},
     "memory is required"),
    ({"pipeline": {"timeouts": {"evaluation": 60}}}, "evaluation"),
    ({"pipeline": {"timeouts": {"ask": -1}}}, "ask"),
    ({"studyDefaults": {"maxFailedTrials": -1}}, "maxFailedTrials"),
    ({"networkPolicy": {"enabled": True, "egress": "all"}}, "egress"),
])
def test_bad_production_values_are_rejected(tmp_path: Path, bad: dict, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    res = helm("template", "ecotune", str(CI.parent), "-f", str(f))
    assert res.returncode != 0, f"accepted: {bad}"
    assert message in res.stderr, res.stderr


def test_gpu_study_with_serving_url_or_without_registry_is_accepted(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    study = {**GPU_STUDY, "engine": {"type": "gpuEvaluator", "gpuEvaluator": {
        **GPU_STUDY["engine"]["gpuEvaluator"], "servingUrl": "http://m.serving:8000/v1"}}}
    ok.write_text(yaml.safe_dump({"studies": [study]}))
    assert study_configs(render(ok))["g1"]["engine"]["serving_url"] == "http://m.serving:8000/v1"
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"mlflow": {"registry": {"enabled": False}},
                                   "studies": [GPU_STUDY]}))
    assert study_configs(render(off))["g1"]["engine"]["serving_url"] == ""
