"""Kubernetes settings in the compiled pipeline YAML (profile namespaces): image pull
secrets, pod labels and annotations, requests and limits, /dev/shm, the Hugging Face token,
step timeouts; checked on every step's executor, by structure."""

from pathlib import Path

import pytest
import yaml

from pipelines.compile import compile_pipeline
from pipelines.ecotune_loop import PipelineOptions, Resources

KINDS = ("sample-dataset", "update-surrogate", "evaluate-trial", "control-budget",
         "finalize-study")
#: the executor kind of each step name a timeout is given for
STEP_OF = {"sample-dataset": "sample", "update-surrogate": "ask", "evaluate-trial": "evaluate",
           "control-budget": "budget", "finalize-study": "finalize"}


def compiled(tmp_path: Path, **opts) -> tuple[dict, dict]:
    """(container executors, kubernetes executors) by executor name."""
    path = compile_pipeline(tmp_path / "p.yaml", PipelineOptions(**opts))
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return (spec["deploymentSpec"]["executors"],
            platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])


def kind(name: str) -> str:
    return name.removeprefix("exec-").rstrip("-0123456789")


def resources(container: dict) -> dict:
    r = container["resources"]
    return {k: r[k] for k in ("resourceCpuRequest", "resourceCpuLimit",
                              "resourceMemoryRequest", "resourceMemoryLimit") if k in r}


PROFILE = dict(
    max_rounds=2, image_pull_secrets=["team-registry", "mirror"],
    pod_labels={"team": "ml-platform", "app.kubernetes.io/part-of": "ecotune"},
    pod_annotations={"sidecar.istio.io/inject": "false"},
    control_plane_resources=Resources("250m", "1", "512Mi", "2Gi"),
    evaluator_resources=Resources("1", "3", "3Gi", "6Gi"),
    timeouts={"sample": 900, "ask": 600, "evaluate": 7200, "budget": 300, "finalize": 1800})


def test_every_step_gets_pull_secrets_metadata_requests_limits_and_its_timeout(tmp_path):
    containers, kube = compiled(tmp_path, **PROFILE)
    assert {kind(n) for n in containers} == set(KINDS)
    assert sum(kind(n) == "control-budget" for n in containers) == 2  # both rounds
    for name, ex in containers.items():
        k = kube[name]
        assert [s["secretName"] for s in k["imagePullSecret"]] == ["team-registry", "mirror"]
        assert k["podMetadata"]["labels"] == PROFILE["pod_labels"]
        assert k["podMetadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert int(k["activeDeadlineSeconds"]) == PROFILE["timeouts"][STEP_OF[kind(name)]]
        want = ({"resourceCpuRequest": "1", "resourceCpuLimit": "3",
                 "resourceMemoryRequest": "3Gi", "resourceMemoryLimit": "6Gi"}
                if kind(name) == "evaluate-trial" else
                {"resourceCpuRequest": "250m", "resourceCpuLimit": "1",
                 "resourceMemoryRequest": "512Mi", "resourceMemoryLimit": "2Gi"})
        assert resources(ex["container"]) == want, name
        # against a service: no GPU, no /dev/shm, no node selection
        assert "accelerator" not in ex["container"]["resources"]
        assert "emptyDirMounts" not in k and "nodeSelector" not in k


def test_defaults_still_set_requests_and_limits_on_every_step(tmp_path):
    """A ResourceQuota rejects `resources: {}`: even the default pipeline sets all four."""
    containers, kube = compiled(tmp_path, max_rounds=1)
    for name, ex in containers.items():
        assert set(resources(ex["container"])) == {
            "resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest",
            "resourceMemoryLimit"}, name
        k = kube.get(name, {})
        assert "imagePullSecret" not in k and "activeDeadlineSeconds" not in k
        assert "podMetadata" not in k


def test_gpu_evaluator_gets_shm_hf_token_cache_env_and_gpu_resources(tmp_path):
    containers, kube = compiled(
        tmp_path, max_rounds=1, gpu_evaluator=True, gpu_count=2, model_cache_pvc="models",
        model_cache_mount="/cache", shm_size="16Gi", hf_token_secret="hf-token",
        hf_token_key="token", gpu_evaluator_resources=Resources("6", "12", "48Gi", "96Gi"),
        timeouts={"evaluate": 10800})
    (name,) = [n for n in containers if kind(n) == "evaluate-trial"]
    k, c = kube[name], containers[name]["container"]
    assert k["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm",
                                    "medium": "Memory", "sizeLimit": "16Gi"}]
    hf = [s for s in k["secretAsEnv"] if s["secretName"] == "hf-token"]
    assert hf and hf[0]["keyToEnv"] == [{"secretKey": "token", "envVar": "HF_TOKEN"}]
    assert {"name": "HF_HOME", "value": "/cache/hf"} in c["env"]
    assert {"name": "VLLM_CACHE_ROOT", "value": "/cache/vllm"} in c["env"]
    assert k["pvcMount"][0]["mountPath"] == "/cache"
    assert resources(c) == {"resourceCpuRequest": "6", "resourceCpuLimit": "12",
                            "resourceMemoryRequest": "48Gi", "resourceMemoryLimit": "96Gi"}
    assert c["resources"]["accelerator"]["resourceCount"] == "2"
    assert int(k["activeDeadlineSeconds"]) == 10800
    # the HF token goes to the evaluator only, never to the control plane
    for other, kk in kube.items():
        if other != name:
            assert "hf-token" not in str(kk) and "emptyDirMounts" not in kk


def test_options_from_a_chart_study_config():
    cfg = {"engine": {"type": "gpuEvaluator", "base_url": "",
                      "gpu_evaluator": {"gpu_count": 1, "shm_size": "4Gi", "engine": "perTrial",
                                        "hf_token_secret": {"name": "hf", "key": "HF_TOKEN"},
                                        "model_cache_pvc": "m", "model_cache_mount": "/models"}},
           "kfp": {"image_pull_secrets": ["regcred"],
                   "pod_labels": {"ecotune.io/study": "s1"},
                   "pod_annotations": {"sidecar.istio.io/inject": "false"},
                   "resources": {"control_plane": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                                   "limits": {"cpu": 1, "memory": "1Gi"}},
                                 "gpu_evaluator": {"limits": {"memory": "80Gi"}}},
                   "timeouts": {"evaluate": 3600, "finalize": 0}}}
    o = PipelineOptions.from_study(cfg)
    assert o.gpu_evaluator and o.shm_size == "4Gi" and o.hf_token_secret == "hf"
    assert o.image_pull_secrets == ["regcred"]
    assert o.pod_labels == {"ecotune.io/study": "s1"}
    assert o.control_plane_resources == Resources("100m", "1", "256Mi", "1Gi")
    # fields not given keep the defaults
    assert o.gpu_evaluator_resources == Resources("4", "8", "32Gi", "80Gi")
    assert o.timeouts == {"evaluate": 3600, "finalize": 0}


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Resources("500m", "1", "1.5Gi", "2Gi"), "memory_request '1.5Gi'"),
    (lambda: Resources("half", "1", "1Gi", "2Gi"), "cpu_request 'half'"),
    (lambda: PipelineOptions(timeouts={"evaluation": 60}), "unknown step(s) ['evaluation']"),
    (lambda: PipelineOptions(timeouts={"ask": -1}), "timeouts must be >= 0"),
])
def test_bad_pod_settings_are_refused_before_compiling(build, message):
    with pytest.raises(ValueError) as e:
        build()
    assert message in str(e.value)


def test_steps_that_call_the_engine_get_its_url_and_api_key(tmp_path):
    """sample and ask count exact prompt tokens on the engine (the cost prior and the
    trials' token limits ``ecotune tune`` gets), the evaluators and finalize call it: each
    gets the pipeline's ``engine_url`` and the key Secret as ``ECOTUNE_API_KEY``. The
    controller only replays the journal: neither."""
    path = compile_pipeline(tmp_path / "p.yaml", PipelineOptions(
        max_rounds=2, api_key_secret="engine-key", api_key_key="token"))
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    tasks = {n: t for d in dags for n, t in d["tasks"].items()}
    calls = {"sample-dataset", "update-surrogate", "evaluate-trial", "finalize-study"}
    assert sum(kind(n) == "update-surrogate" for n in tasks) == 2  # every round's ask
    for name, task in tasks.items():
        if kind(name) in calls:
            url = task["inputs"]["parameters"]["engine_url"]["componentInputParameter"]
            assert url in ("engine_url", "pipelinechannel--engine_url"), name
        elif "componentRef" in task and not name.startswith(("exit-", "for-", "condition-")):
            assert "engine_url" not in task["inputs"]["parameters"], name
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {kind(n) for n in kube} == set(KINDS)
    key = {"secretName": "engine-key",
           "keyToEnv": [{"secretKey": "token", "envVar": "ECOTUNE_API_KEY"}]}
    for name, k in kube.items():
        envs = [{f: s[f] for f in ("secretName", "keyToEnv")} for s in k["secretAsEnv"]]
        assert (key in envs) == (kind(name) in calls), name
