"""The Helm chart (helm/ecotune): lint + render + Kubernetes schema validation of every scenario
(scripts/check_chart.sh), and the rendered content checked with PyYAML.

Needs the real helm and kubernetes-validate from ``scripts/install_tools.sh`` (CI runs it);
without them the tests fail and say so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from helm_render import CHART, CI, EXAMPLES, ROOT, helm, of_kind, pod_specs, render
from helm_render import tool as _tool


def study_values(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["studies"]


# -- the full check script ---------------------------------------------------------------------
def test_check_chart_script_passes(tmp_path: Path) -> None:
    _tool("helm"), _tool("kubernetes-validate")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "check_chart.sh")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all scenarios passed" in res.stdout
    # every scenario was rendered and validated, the ci/ ones included
    scenarios = ["default"] + [f"{f.parent.name}-{f.stem}" for f in
                               sorted([*EXAMPLES.glob("*.yaml"), *CI.glob("*-values.yaml")])]
    assert len(scenarios) >= 6
    for name in scenarios:
        assert (tmp_path / f"{name}.yaml").exists(), name
        assert f"ok   {name} (" in res.stdout


# -- studies -> ConfigMap + CronJobs -----------------------------------------------------------
@pytest.mark.parametrize("example", ["llama-3-8b.yaml", "qwen-multi.yaml"])
def test_one_cronjob_per_study_with_its_schedule(example: str) -> None:
    path = EXAMPLES / example
    studies = study_values(path)
    docs = render(path)
    crons = of_kind(docs, "CronJob")
    assert len(crons) == len(studies)
    by_study = {c["metadata"]["labels"]["ecotune.io/study"]: c for c in crons}
    assert set(by_study) == {s["name"] for s in studies}
    for s in studies:
        cron = by_study[s["name"]]
        assert cron["spec"]["schedule"] == s["schedule"]
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["command"] == ["python", "-m", "pipelines.submit"]
        assert c["args"][:2] == ["--config", "/etc/ecotune/study.yaml"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "study"]
        assert vol["configMap"]["items"] == [{"key": f"{s['name']}.yaml", "path": "study.yaml"}]


def test_study_config_merges_defaults_and_overrides() -> None:
    path = EXAMPLES / "qwen-multi.yaml"
    values = yaml.safe_load(path.read_text())
    (cm,) = of_kind(render(path), "ConfigMap")
    assert set(cm["data"]) == {f"{s['name']}.yaml" for s in values["studies"]}
    small = yaml.safe_load(cm["data"]["qwen-7b-mmlu.yaml"])
    big = yaml.safe_load(cm["data"]["qwen-32b-humaneval.yaml"])
    # qwen-7b takes the defaults, qwen-32b overrides some of them.
    assert small["study"]["budget_tokens"] == values["studyDefaults"]["budgetTokens"]
    assert small["study"]["optimizer"] == "ecotune"
    assert small["study"]["search_space"] == values["studyDefaults"]["searchSpace"]
    assert big["study"]["budget_tokens"] == 8_000_000
    assert big["study"]["optimizer"] == "bohb"
    assert (big["study"]["r_min"], big["study"]["r_max"]) == (4, 164)
    assert big["study"]["model"] == "Qwen/Qwen2.5-32B-Instruct"
    assert big["engine"] == {
        "type": "service",
        "base_url": "http://qwen-32b.serving.svc.cluster.local:8000/v1",
        "served_model_name": "Qwen/Qwen2.5-32B-Instruct",
        "serving_url": "",
        "api_key_secret": {"name": "vllm-api-key", "key": "key"},
        "gpu_evaluator": None,
    }
    assert big["storage"]["journal_uri"] == "s3://serving-ecotune/qwen/qwen-32b-humaneval/journal"
    assert big["tracking"]["registered_model"] == "serving-qwen-32b-humaneval"
    # the registry alias the pipeline's promotion moves, and its held-out instances
    assert big["tracking"]["promote_alias"] == "production" and big["tracking"]["held_out"] == 50
    assert big["kfp"]["images"]["control_plane"] == (
        "registry.example.internal/ml-platform/ecotune-control-plane:0.1.0")


def test_presets_reach_the_optimizer(tmp_path: Path) -> None:
    """`candidates` in values -> the study ConfigMap -> the components' optimizer."""
    from components._common import make_study_optimizer

    path = EXAMPLES / "llama-3-8b.yaml"
    values = yaml.safe_load(path.read_text())
    (cm,) = of_kind(render(path), "ConfigMap")
    entry = next(s for s in values["studies"] if s.get("candidates"))
    study = yaml.safe_load(cm["data"][f"{entry['name']}.yaml"])
    assert study["study"]["candidates"] == entry["candidates"]
    opt = make_study_optimizer(study, str(tmp_path / "journal.jsonl"))
    t = opt.ask()
    assert {k: t.config[k] for k in entry["candidates"][0]} in entry["candidates"]


def test_empty_search_space_means_builtin_default(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"studies": [GOOD_STUDY]}))
    (cm,) = of_kind(render(good), "ConfigMap")
    assert yaml.safe_load(cm["data"]["s1.yaml"])["study"]["search_space"] is None


def test_a_zero_override_is_not_lost(tmp_path: Path) -> None:
    """tau: 0 on a study must beat a non-zero default (no merge that drops zero values)."""
    values = tmp_path / "zero.yaml"
    values.write_text(yaml.safe_dump({"studyDefaults": {"tau": 0.5},
                                      "studies": [{**GOOD_STUDY, "tau": 0, "seed": 0}]}))
    (cm,) = of_kind(render(values), "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["s1.yaml"])
    assert cfg["study"]["tau"] == 0


def test_ecotune_settings_reach_the_optimizer(tmp_path: Path) -> None:
    """`ecotune:` in values (defaults, a study's own map replacing them whole) -> the study
    ConfigMap -> the components' optimizer; another optimizer's study gets none of them."""
    from components._common import make_study_optimizer

    values = tmp_path / "eco.yaml"
    values.write_text(yaml.safe_dump({
        "studyDefaults": {"ecotune": {"noise": "scaled", "init_share": 0.1}},
        "studies": [GOOD_STUDY,
                    {**GOOD_STUDY, "name": "s2", "ecotune": {"acquisition": "paper",
                                                            "early_stopping": False}},
                    {**GOOD_STUDY, "name": "s3", "optimizer": "random"}]}))
    (cm,) = of_kind(render(values), "ConfigMap")
    s1, s2, s3 = (yaml.safe_load(cm["data"][f"s{i}.yaml"]) for i in (1, 2, 3))
    assert (s1["study"]["noise"], s1["study"]["init_share"]) == ("scaled", 0.1)
    assert s2["study"]["acquisition"] == "paper" and s2["study"]["early_stopping"] is False
    assert "noise" not in s2["study"] and "noise" not in s3["study"]
    opt = make_study_optimizer(s1, str(tmp_path / "j1.jsonl"))
    assert (opt.noise, opt.init_share) == ("scaled", 0.1)
    opt = make_study_optimizer(s2, str(tmp_path / "j2.jsonl"))
    assert (opt.acquisition, opt.early_stopping, opt.noise) == ("paper", False, "auto")


def test_the_charts_ecotune_settings_are_the_librarys() -> None:
    """Every EcoTune-only setting of the library is in the chart's values schema (τ has its
    own field), with the same choices, so a new one cannot be forgotten there."""
    import json
    import typing

    from ecotune.config import ECOTUNE_ONLY, EcoTuneSettings

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    for props in (schema["studyDefaults"]["properties"]["ecotune"]["properties"],
                  schema["studies"]["items"]["properties"]["ecotune"]["properties"]):
        assert set(props) == set(ECOTUNE_ONLY) - {"tau"}
        for name, spec in props.items():
            choices = [a for arg in typing.get_args(EcoTuneSettings.model_fields[name].annotation)
                       for a in typing.get_args(arg)]
            if "enum" in spec:
                assert set(spec["enum"]) == set(choices), name


# -- secrets, images, security ---------------------------------------------------------------
SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "SECRET")


@pytest.mark.parametrize("example", ["llama-3-8b.yaml", "qwen-multi.yaml"])
def test_secrets_are_referenced_never_inlined(example: str) -> None:
    docs = render(EXAMPLES / example)
    assert not of_kind(docs, "Secret"), "the chart must not create Secrets with credentials"
    refs = set()
    for spec in pod_specs(docs):
        for c in spec["containers"]:
            for env in c.get("env", []):
                if any(w in env["name"].upper() for w in SECRET_WORDS) and not env["name"].endswith("_PATH"):
                    assert "value" not in env, f"{env['name']} is inlined"
                    refs.add(env["valueFrom"]["secretKeyRef"]["name"])
    values = yaml.safe_load((EXAMPLES / example).read_text())
    assert values["engine"]["existingSecret"] in refs
    (cm,) = of_kind(docs, "ConfigMap")
    for text in cm["data"].values():
        cfg = yaml.safe_load(text)
        assert cfg["storage"]["credentials_secret"]["name"] == values["s3"]["existingSecret"]
        assert cfg["tracking"]["credentials_secret"]["name"] == values["mlflow"]["existingSecret"]


def test_kfp_token_from_existing_secret() -> None:
    docs = render(EXAMPLES / "qwen-multi.yaml")
    for cron in of_kind(docs, "CronJob"):
        (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        (tok,) = [e for e in c["env"] if e["name"] == "KFP_BEARER_TOKEN"]
        assert tok["valueFrom"]["secretKeyRef"] == {"name": "kfp-token", "key": "token"}


@pytest.mark.parametrize("example", [None, "llama-3-8b.yaml", "qwen-multi.yaml"])
def test_images_pinned_and_pods_hardened(example: str | None) -> None:
    docs = render(*([EXAMPLES / example] if example else []))
    for spec in pod_specs(docs):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, image
            assert not image.endswith(":latest"), image
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"] and "requests" in c["resources"]
            if not image.startswith("vllm/"):
                assert sc["readOnlyRootFilesystem"] is True


def test_rbac_is_least_privilege() -> None:
    docs = render(EXAMPLES / "llama-3-8b.yaml")
    roles = of_kind(docs, "Role")
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert "secrets" not in rule["resources"]
            assert "deletecollection" not in rule["verbs"]
            if "delete" in rule["verbs"]:  # only replacing a study's own recurring run
                assert set(rule["resources"]) <= {"recurringruns", "jobs"}
            assert "pipelines" not in rule["resources"]  # specs travel inline with the run
            if "configmaps" in rule["resources"]:
                assert rule["resourceNames"] == ["ecotune-studies"]
    (kfp_role,) = [r for r in roles if r["metadata"].get("namespace") == "ml-tuning"]
    assert {"runs", "experiments"} <= {res for r in kfp_role["rules"] for res in r["resources"]}


# -- vLLM evaluator ------------------------------------------------------------------------------
def test_vllm_deployment_for_gpu_evaluator() -> None:
    docs = render(EXAMPLES / "llama-3-8b.yaml")
    (dep,) = of_kind(docs, "Deployment")
    (svc,) = of_kind(docs, "Service")
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"].startswith("vllm/vllm-openai:v")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    (cache,) = [v for v in spec["volumes"] if v["name"] == "model-cache"]
    assert cache["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "60Gi"
    assert {"--model", "meta-llama/Meta-Llama-3-8B-Instruct"} <= set(c["args"])
    assert svc["spec"]["ports"][0]["port"] == 8000
    (cm,) = of_kind(docs, "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["llama-3-8b-gsm8k.yaml"])
    assert cfg["engine"]["base_url"] == (
        f"http://{svc['metadata']['name']}.tuning.svc.cluster.local:8000/v1")


def test_gpu_evaluator_inside_pipeline_without_vllm_deploy() -> None:
    docs = render(CHART / "ci" / "recurring-run-values.yaml")
    assert not of_kind(docs, "Deployment") and not of_kind(docs, "CronJob")
    (job, cleanup) = of_kind(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert "--recurring" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    # uninstalling stops the schedule: a pre-delete hook deletes the recurring run
    assert cleanup["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "--delete-recurring" in cleanup["spec"]["template"]["spec"]["containers"][0]["args"]
    (cm,) = of_kind(docs, "ConfigMap")
    gpu = yaml.safe_load(cm["data"]["mistral-arc.yaml"])["engine"]["gpu_evaluator"]
    assert gpu["gpu_count"] == 2 and gpu["accelerator_type"] == "NVIDIA-L4"
    assert gpu["model_cache_pvc"] == "shared-model-cache"
    assert gpu["image"] == "ghcr.io/ecotune/evaluator:0.1.0"


def test_helm_test_pods() -> None:
    docs = render(EXAMPLES / "qwen-multi.yaml")
    tests = [d for d in of_kind(docs, "Pod")
             if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    names = {t["metadata"]["name"] for t in tests}
    assert names == {"ecotune-test-kfp", "ecotune-test-kfp-auth", "ecotune-test-mlflow",
                     "ecotune-test-engine-qwen-7b-mmlu", "ecotune-test-engine-qwen-32b-humaneval"}
    for t in tests:
        assert t["spec"]["containers"][0]["image"].startswith("curlimages/curl:8.")


# -- the schema and template checks reject bad values --------------------------------------------
GOOD_STUDY = {"name": "s1", "model": "m", "task": "gsm8k",
              "engine": {"type": "service", "service": {"url": "http://vllm:8000/v1"}}}


def _with(**changes) -> dict:
    study = {**GOOD_STUDY, **changes}
    return {k: v for k, v in study.items() if v is not None}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"studies": [_with(budgetTokens=-5)]}, "budgetTokens"),
        ({"studies": [_with(model=None)]}, "model is required"),
        ({"studies": [_with(optimizer="gridsearch")]}, "optimizer"),
        ({"studies": [_with(schedule="every day")]}, "schedule"),
        ({"studies": [_with(r_min=0)]}, "r_min"),
        ({"studies": [_with(name="Bad_Name")]}, "name"),
        ({"studies": [_with(engine={"type": "service"})]}, "service is required"),
        ({"studies": [_with(engine={"type": "gpuEvaluator"})]}, "gpuEvaluator is required"),
        ({"studies": [_with(engine={"type": "gpuEvaluator", "gpuEvaluator": {
            "acceleratorType": "NVIDIA-L4", "gpuCount": 0}})]}, "gpuCount"),
        ({"studies": [_with(searchSpace={"temprature": {"type": "float"}})]}, "searchSpace"),
        ({"studies": [_with(ecotune={"noise": "gaussian"})]}, "ecotune"),
        ({"studies": [_with(ecotune={"init_shar": 0.1})]}, "ecotune"),
        ({"images": {"controlPlane": {"repository": "x/y", "tag": "latest"}}}, "tag"),
        ({"s3": {"enabled": True, "existingSecret": ""}}, "existingSecret"),
        ({"s3": {"accessKey": "AKIA..."}}, "accessKey"),
        ({"studies": [_with(r_min=300)]}, "r_min (300) must be <= r_max (128)"),
        ({"studies": [GOOD_STUDY, GOOD_STUDY]}, "duplicate study name"),
    ],
)
def test_bad_values_are_rejected(tmp_path: Path, values: dict, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    res = helm("template", "ecotune", str(CHART), "-f", str(bad))
    assert res.returncode != 0, f"accepted: {values}"
    assert message in res.stderr, res.stderr


def test_good_minimal_study_is_accepted(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"studies": [GOOD_STUDY]}))
    assert len(of_kind(render(good), "CronJob")) == 1


# -- helm test: the submit credentials list KFP experiments ----------------------------------
def _run_check(pod: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The test pod's shell check, run here (curl) with the pod's env plus ``env``."""
    (c,) = pod["spec"]["containers"]
    penv = {e["name"]: e.get("value", "") for e in c.get("env", []) if "value" in e}
    return subprocess.run(["sh", "-c", c["args"][0]], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], **penv, **env})


@pytest.mark.parametrize("mode", ["serviceAccountToken", "existingSecret"])
def test_helm_test_lists_experiments_with_the_submit_credentials(tmp_path: Path, mode: str
                                                                 ) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sets = (f"kfp.auth.mode={mode}", "kfp.auth.existingSecret=kfp-token")
    docs = render(EXAMPLES / "qwen-multi.yaml", sets=sets)
    (pod,) = [d for d in of_kind(docs, "Pod") if d["metadata"]["name"].endswith("test-kfp-auth")]
    spec = pod["spec"]
    assert spec["serviceAccountName"].endswith("-submit")
    (c,) = spec["containers"]
    if mode == "serviceAccountToken":
        (vol,) = spec["volumes"]
        src = vol["projected"]["sources"][0]["serviceAccountToken"]
        assert src["audience"] == "pipelines.kubeflow.org"
        assert c["volumeMounts"][0]["mountPath"] == "/var/run/secrets/kubeflow/pipelines"
    else:
        (sec,) = [e for e in c["env"] if e["name"] == "KFP_BEARER_TOKEN"]
        assert sec["valueFrom"]["secretKeyRef"]["name"] == "kfp-token"
    seen: list[tuple[str, str | None]] = []

    class Api(BaseHTTPRequestHandler):  # a KFP v2beta1 API that checks the bearer token
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            body = json.dumps({"experiments": []} if ok else {"error": "unauthenticated"})
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{srv.server_address[1]}"
        token = tmp_path / "token"
        for secret, ok in (("s3cret", True), ("wrong", False)):
            token.write_text(secret)
            env = {"KFP_HOST": host, **({"KFP_TOKEN_PATH": str(token)}
                                        if mode == "serviceAccountToken"
                                        else {"KFP_BEARER_TOKEN": secret})}
            res = _run_check(pod, env)
            assert (res.returncode == 0) is ok, res.stderr
        ns = c["env"][1]["value"]
        assert seen[0] == (f"/apis/v2beta1/experiments?namespace={ns}&page_size=1",
                           "Bearer s3cret")
    finally:
        srv.shutdown()
    # no auth, no such test
    docs = render(EXAMPLES / "qwen-multi.yaml", sets=("kfp.auth.mode=none",))
    assert not [d for d in of_kind(docs, "Pod") if d["metadata"]["name"].endswith("kfp-auth")]
