"""The compiled pipeline's structure (checked by structure, never byte for byte against the
compiler's own output) and the submitter (fake KFP client)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipelines import submit as submit_mod
from pipelines.compile import compile_pipeline
from pipelines.compile import main as compile_main
from pipelines.ecotune_loop import PipelineOptions


def load(path) -> dict:
    """The pipeline spec with the platform spec (second YAML document) as ``platforms``."""
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    spec = docs[0]
    if len(docs) > 1:
        spec["platforms"] = docs[1]["platforms"]
    return spec


def compiled(tmp_path, **opts) -> dict:
    return load(compile_pipeline(tmp_path / "p.yaml", PipelineOptions(**opts)))


def dag_tasks(spec: dict) -> dict:
    comps = spec["components"]
    return {name: c["dag"]["tasks"] for name, c in comps.items() if "dag" in c}


def test_rounds_are_unrolled_and_nested_in_conditions(tmp_path):
    spec = compiled(tmp_path, max_rounds=3, parallelism=2)
    dags = dag_tasks(spec)
    all_tasks = {n: t for ts in [*dags.values(), spec["root"]["dag"]["tasks"]] for n, t in ts.items()}
    controllers = sorted(n for n in all_tasks if n.startswith("control-budget"))
    assert len(controllers) == 3
    conditions = [t for t in all_tasks.values() if "triggerPolicy" in t
                  and "condition" in t["triggerPolicy"]]
    assert len(conditions) == 2  # round 1 inside round 0's If, round 2 inside round 1's
    assert all("'continue'" in t["triggerPolicy"]["condition"] or '"continue"' in
               t["triggerPolicy"]["condition"] for t in conditions)
    loops = [t for t in all_tasks.values() if "iteratorPolicy" in t]
    assert len(loops) == 3 and {t["iteratorPolicy"]["parallelismLimit"] for t in loops} == {2}
    assert all("parameterIterator" in t for t in loops)
    evaluators = [n for n in all_tasks if n.startswith("evaluate-trial")]
    assert len(evaluators) == 3
    # the exit handler: finalize runs after the exit-handler DAG, whatever its outcome
    root = spec["root"]["dag"]["tasks"]
    assert {"exit-handler-1", "finalize-study"} <= set(root)
    assert root["finalize-study"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "study", "journal_uri", "subsets_uri", "engine_url", "batch_size"}


def test_loop_body_takes_only_its_item_and_pipeline_parameters(tmp_path):
    """The only task output crossing into a ParallelFor is the updater's batch it iterates
    over (kfp.local replaces any other task output there with the loop item); the evaluator
    takes the item ({trial_id, journal_uri, manifest_uri}) plus pipeline parameters."""
    spec = compiled(tmp_path, max_rounds=3, parallelism=2)
    loops = [t for ts in dag_tasks(spec).values() for t in ts.values() if "iteratorPolicy" in t]
    assert len(loops) == 3
    for loop in loops:
        items = loop["parameterIterator"]["items"]["inputParameter"]
        from_tasks = {k for k, v in loop["inputs"]["parameters"].items()
                      if "taskOutputParameter" in v}
        assert from_tasks == {items} and "update-surrogate" in items
    evaluators = [t for ts in dag_tasks(spec).values() for n, t in ts.items()
                  if n.startswith("evaluate-trial")]
    for ev in evaluators:
        params = ev["inputs"]["parameters"]
        assert set(params) == {"study", "trial", "engine_url"}
        assert params["trial"]["componentInputParameter"].endswith("-loop-item")
        assert params["study"]["componentInputParameter"] == "pipelinechannel--study"
        assert params["engine_url"]["componentInputParameter"] == "pipelinechannel--engine_url"


def test_max_rounds_one_has_no_condition(tmp_path):
    spec = compiled(tmp_path, max_rounds=1)
    assert not any(n.startswith("comp-condition") for n in spec["components"])


def executors(spec: dict) -> dict:
    return spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_service_variant_kubernetes_config(tmp_path):
    spec = compiled(tmp_path, s3_secret="s3-creds", api_key_secret="vllm-key",
                    mlflow_tracking_uri="http://mlflow", mlflow_secret="mlflow-creds",
                    s3_endpoint_url="http://minio:9000")
    ex = executors(spec)
    ev = next(v for k, v in ex.items() if "evaluate-trial" in k)
    names = {s["secretName"] for s in ev["secretAsEnv"]}
    assert names == {"s3-creds", "vllm-key", "mlflow-creds"}  # it logs its trial to MLflow
    ask = next(v for k, v in ex.items() if "update-surrogate" in k)
    assert {s["secretName"] for s in ask["secretAsEnv"]} == {"s3-creds", "vllm-key"}
    fin = next(v for k, v in ex.items() if "finalize" in k)
    # finalize scores held-out instances on the engine for the promotion: it has the key too
    assert {s["secretName"] for s in fin["secretAsEnv"]} == {"s3-creds", "mlflow-creds",
                                                             "vllm-key"}
    assert not any("nodeSelector" in v or "tolerations" in v for v in ex.values())
    images = {c["container"]["image"] for c in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/ecotune/control-plane:0.1.0"}
    envs = [e for c in spec["deploymentSpec"]["executors"].values()
            for e in c["container"].get("env", [])]
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"} in envs


def test_gpu_variant_kubernetes_config(tmp_path):
    spec = compiled(tmp_path, gpu_evaluator=True, accelerator_type="NVIDIA-H100-80GB-HBM3",
                    gpu_count=2, node_selector={"pool": "gpu"}, model_cache_pvc="models-llama")
    ex = executors(spec)
    ev = next(v for k, v in ex.items() if "evaluate-trial" in k)
    assert ev["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                            "pool": "gpu"}
    assert ev["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert ev["pvcMount"][0]["mountPath"] == "/models"
    assert ev["pvcMount"][0]["constant"] == "models-llama" or "models-llama" in str(ev["pvcMount"])
    cont = next(c["container"] for k, c in spec["deploymentSpec"]["executors"].items()
                if "evaluate-trial" in k)
    assert cont["image"] == "ghcr.io/ecotune/evaluator:0.1.0"
    assert cont["resources"]["accelerator"]["resourceCount"] == "2"
    assert cont["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"


def test_compile_is_deterministic_and_has_the_expected_shape(tmp_path):
    """Same options, same YAML; and the default pipeline's interface and steps are what the
    chart and the submitter rely on: its parameters, one exit handler whose finalizer runs
    whatever happened, sample → (update → ParallelFor(evaluate) → control) per round, all
    on the pinned control-plane image."""
    a = compile_pipeline(tmp_path / "a.yaml").read_text()
    b = compile_pipeline(tmp_path / "b.yaml").read_text()
    assert a == b
    spec = load(tmp_path / "a.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {
        "study": "STRUCT", "journal_uri": "STRING", "subsets_uri": "STRING",
        "engine_url": "STRING", "batch_size": "NUMBER_INTEGER"}
    assert params["engine_url"]["defaultValue"] == "" and params["batch_size"]["isOptional"]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "finalize-study"}
    assert root["finalize-study"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert root["finalize-study"]["dependentTasks"] == ["exit-handler-1"]
    execs = spec["deploymentSpec"]["executors"]
    kinds = {n.removeprefix("exec-").rstrip("-0123456789") for n in execs}
    assert kinds == {"sample-dataset", "update-surrogate", "evaluate-trial", "control-budget",
                     "finalize-study"}
    rounds = sum(n.startswith("exec-control-budget") for n in execs)
    assert rounds == sum(n.startswith("exec-update-surrogate") for n in execs) == \
        sum(n.startswith("exec-evaluate-trial") for n in execs) >= 2
    loops = [c for n, c in spec["components"].items() if n.startswith("comp-for-loop")]
    assert len(loops) == rounds
    assert {ex["container"]["image"] for ex in execs.values()} == \
        {"ghcr.io/ecotune/control-plane:0.1.0"}


def test_compile_cli(tmp_path):
    out = tmp_path / "x" / "p.yaml"
    assert compile_main(["--out", str(out), "--max-rounds", "2"]) == 0
    spec = load(out)
    assert sum("control-budget" in n for n in spec["deploymentSpec"]["executors"]) == 2


# ---------------------------------------------------------------------- submit
STUDY = {
    "version": 1,
    "study": {"name": "llama", "model": "meta-llama/Llama-3-8B", "task": "mmlu",
              "optimizer": "ecotune", "budget_tokens": 1000000, "r_min": 8, "r_max": 200,
              "tau": 0.0, "eta0": 1.0, "lambda": 0.1, "seed": 0, "max_trials": None,
              "search_space": None, "fixed": {}},
    "schedule": {"cron": "0 4 * * 1", "time_zone": "UTC"},
    "engine": {"type": "gpuEvaluator", "base_url": "", "served_model_name": "llama",
               "api_key_secret": None,
               "gpu_evaluator": {"image": "reg/ecotune-evaluator:0.1.0",
                                 "accelerator_type": "NVIDIA-H100", "accelerator_label":
                                 "nvidia.com/gpu.product", "gpu_count": 1,
                                 "gpu_resource": "nvidia.com/gpu", "node_selector": {},
                                 "tolerations": [], "model_cache_pvc": "models-llama",
                                 "model_cache_mount": "/models", "vllm_args": []}},
    "storage": {"enabled": True, "journal_uri": "s3://b/llama/journal",
                "artifacts_uri": "s3://b/llama", "endpoint_url": "", "region": "eu-west-1",
                "credentials_secret": {"name": "ecotune-s3", "access_key_id_key": "AK",
                                       "secret_access_key_key": "SK"}},
    "tracking": {"enabled": True, "tracking_uri": "http://mlflow", "experiment": "e",
                 "registered_model": "llama", "promote_alias": "production",
                 "credentials_secret": None},
    "kfp": {"host": "http://kfp", "namespace": "team", "experiment": "ecotune",
            "pipeline_package": "", "pipeline_root": "s3://b/root",
            "service_account": "default-editor", "run_name_prefix": "ecotune-llama",
            "images": {"control_plane": "reg/cp:0.1.0", "evaluator": "reg/ev:0.1.0"}},
}


class FakeClient:
    def __init__(self, runs=()):
        self.calls = []
        self.runs = list(runs)

    def list_runs(self, experiment_id=None, page_size=100, page_token=""):
        return SimpleNamespace(runs=self.runs, next_page_token="")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", name, namespace))
        return SimpleNamespace(experiment_id="exp-1")

    def run_pipeline(self, **kw):
        self.calls.append(("run", kw, Path(kw["pipeline_package_path"]).read_text()))
        return SimpleNamespace(run_id="run-1")

    def list_recurring_runs(self, **kw):
        return SimpleNamespace(recurring_runs=[SimpleNamespace(recurring_run_id="old",
                                                               display_name="ecotune-llama-recurring")])

    def delete_recurring_run(self, rid):
        self.calls.append(("delete", rid))

    def create_recurring_run(self, **kw):
        self.calls.append(("recurring", kw, Path(kw["pipeline_package_path"]).read_text()))
        return SimpleNamespace(recurring_run_id="rr-1")


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(STUDY))
    return p


def test_load_config_and_errors(tmp_path, study_file):
    cfg = submit_mod.load_config(study_file)
    assert cfg.study.name == "llama"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**STUDY, "version": 2}))
    with pytest.raises(submit_mod.SubmitError):
        submit_mod.load_config(bad)
    svc = tmp_path / "svc.yaml"
    svc.write_text(yaml.safe_dump({**STUDY, "engine": {"type": "service", "base_url": ""}}))
    with pytest.raises(submit_mod.SubmitError, match="base_url"):
        submit_mod.load_config(svc)


def per_trial(study: dict) -> dict:
    """``study`` with vLLM started in every GPU evaluator pod (not once per run)."""
    eng = study["engine"]
    return {**study, "engine": {**eng, "gpu_evaluator": {**eng["gpu_evaluator"],
                                                         "engine": "perTrial"}}}


def test_options_from_study():
    run = PipelineOptions.from_study(STUDY)  # the default: one vLLM for the whole run
    assert run.run_engine and not run.gpu_evaluator
    o = PipelineOptions.from_study(per_trial(STUDY))
    assert o.gpu_evaluator and not o.run_engine and o.model_cache_pvc == "models-llama"
    assert o.evaluator_image == "reg/ecotune-evaluator:0.1.0"
    assert (o.s3_secret, o.s3_access_key_key, o.s3_secret_key_key) == ("ecotune-s3", "AK", "SK")
    assert o.control_plane_image == "reg/cp:0.1.0" and o.mlflow_tracking_uri == "http://mlflow"


def test_submit_run_compiles_for_the_study():
    client = FakeClient()
    submit_mod.submit(STUDY, client, max_rounds=2)  # one engine per run: a step starts it
    package = client.calls[-1][2]
    assert "start-engine" in package and "reg/ecotune-evaluator:0.1.0" not in package
    client = FakeClient()
    done = submit_mod.submit(per_trial(STUDY), client, max_rounds=2)
    assert done == {"kind": "run", "name": done["name"], "id": "run-1"}
    assert done["name"].startswith("ecotune-llama-")
    kind, kw, package = client.calls[-1]
    assert kw["params"]["journal_uri"] == "s3://b/llama/journal"
    assert kw["params"]["engine_url"] == "" and kw["params"]["study"]["study"]["name"] == "llama"
    assert kw["service_account"] == "default-editor" and kw["pipeline_root"] == "s3://b/root"
    assert "reg/ecotune-evaluator:0.1.0" in package and "models-llama" in package
    assert "image: reg/cp:0.1.0" in package and "ghcr.io/ecotune" not in package


def test_submit_recurring_replaces_and_can_be_disabled():
    client = FakeClient()
    done = submit_mod.submit(STUDY, client, recurring=True, disabled=True, max_rounds=2)
    assert done["kind"] == "recurring" and done["enabled"] is False
    assert ("delete", "old") in client.calls
    kw = client.calls[-1][1]
    assert kw["cron_expression"] == "0 0 4 * * 1" and kw["enabled"] is False
    assert kw["max_concurrency"] == 1
    # fixed parameters: its runs find the run before them (continuation, warm start)
    assert kw["params"]["journal_uri"] == "s3://b/llama/journal#after=latest"


def test_delete_recurring_removes_the_studys_schedule(monkeypatch, study_file, capsys):
    client = FakeClient()
    monkeypatch.setattr(submit_mod, "make_client", lambda cfg: client)
    assert submit_mod.main(["--config", str(study_file), "--delete-recurring"]) == 0
    assert ("delete", "old") in client.calls
    assert "deleted recurring run ecotune-llama-recurring (old)" in capsys.readouterr().out


def test_main_parses_env_and_flags(monkeypatch, study_file, capsys):
    client = FakeClient()
    monkeypatch.setattr(submit_mod, "make_client", lambda cfg: client)
    monkeypatch.setenv("ECOTUNE_STUDY", "llama")
    assert submit_mod.main(["--config", str(study_file), "--max-rounds", "2"]) == 0
    assert "submitted run" in capsys.readouterr().out
    monkeypatch.setenv("ECOTUNE_STUDY", "other")
    assert submit_mod.main(["--config", str(study_file)]) == 2
    with pytest.raises(SystemExit):
        submit_mod.main(["--config", str(study_file), "--disabled"])


def test_make_client_uses_env(monkeypatch):
    import kfp

    seen = {}
    monkeypatch.setattr(kfp, "Client", lambda **kw: seen.update(kw) or "client")
    monkeypatch.setenv("KFP_HOST", "http://other")
    monkeypatch.setenv("KFP_NAMESPACE", "ns2")
    monkeypatch.setenv("KFP_BEARER_TOKEN", "tok")
    assert submit_mod.make_client({**STUDY}) == "client"
    assert seen == {"host": "http://other", "namespace": "ns2", "existing_token": "tok"}
    monkeypatch.delenv("KFP_BEARER_TOKEN")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "/nonexistent/token")
    with pytest.raises(submit_mod.SubmitError, match="no token file"):
        submit_mod.make_client({**STUDY})


def test_retried_or_overlapping_submits_do_not_create_runs(monkeypatch):
    """A retried submit of the same Job finds its run; a run of the study still running
    blocks a new one (they would share the journal and the budget); a finished one not."""
    monkeypatch.setenv("ECOTUNE_JOB_NAME", "ecotune-llama-cron-29000000")
    mine = SimpleNamespace(run_id="r0", display_name="ecotune-llama-cron-29000000",
                           state="SUCCEEDED")
    done = submit_mod.submit(STUDY, FakeClient([mine]), max_rounds=2)
    assert done["kind"] == "skipped" and "already submitted" in done["reason"]
    other = SimpleNamespace(run_id="r1", display_name="ecotune-llama-cron-28990000",
                            state="RUNNING")
    client = FakeClient([other])
    done = submit_mod.submit(STUDY, client, max_rounds=2)
    assert done["kind"] == "skipped" and "still RUNNING" in done["reason"]
    assert not [c for c in client.calls if c[0] == "run"]
    client = FakeClient([SimpleNamespace(run_id="r1", display_name=other.display_name,
                                         state="FAILED")])
    done = submit_mod.submit(STUDY, client, max_rounds=2)
    assert done == {"kind": "run", "name": "ecotune-llama-cron-29000000", "id": "run-1",
                    "after": "r1"}  # the new run may continue r1's study (test_continuation)


def test_the_projected_token_reaches_a_kfp_api_server(tmp_path, monkeypatch):
    """A real kfp.Client against a loopback server speaking the KFP v2beta1 REST API: every
    request carries the ServiceAccount token from KF_PIPELINES_SA_TOKEN_PATH."""
    import json
    import threading
    from http.server import ThreadingHTTPServer

    from ecotune.testing.http import JsonHandler

    seen: list[tuple[str, str, str | None]] = []

    class Api(JsonHandler):

        def do_GET(self):  # noqa: N802
            seen.append(("GET", self.path, self.headers.get("Authorization")))
            if self.path.startswith("/apis/v2beta1/experiments"):
                self.reply({"experiments": [], "total_size": 0})
            elif self.path.startswith("/apis/v2beta1/runs"):
                self.reply({"runs": [], "total_size": 0})
            else:
                self.reply({})

        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            seen.append(("POST", self.path, self.headers.get("Authorization")))
            if self.path.startswith("/apis/v2beta1/experiments"):
                self.reply({"experiment_id": "exp-1", **body})
            else:
                self.reply({"run_id": "run-9", "display_name": body.get("display_name")})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("projected-sa-token")
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    monkeypatch.delenv("KFP_BEARER_TOKEN", raising=False)
    monkeypatch.setenv("ECOTUNE_JOB_NAME", "cron-1")
    try:
        done = submit_mod.submit(STUDY, submit_mod.make_client(STUDY), max_rounds=2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert done == {"kind": "run", "name": "ecotune-llama-cron-1", "id": "run-9"}
    assert {m for m, _, _ in seen} == {"GET", "POST"}
    assert any(p.startswith("/apis/v2beta1/runs") and m == "POST" for m, p, _ in seen)
    assert all(auth == "Bearer projected-sa-token" for _, _, auth in seen), seen
