"""Components called through ``component.python_func`` on a local journal with FakeEngine."""

import json

import pytest
from kfp import dsl

from components import (
    control_budget,
    evaluate_trial_op,
    finalize_study,
    sample_dataset,
    update_surrogate,
)
from components._common import rounds
from ecotune.journal import open_journal
from ecotune.trial import TrialResult


def study_config(budget: int = 20000, **study) -> dict:
    return {"version": 1,
            "study": {"name": "unit", "model": "fake-model",
                      "task": {"name": "arithmetic", "n": 40}, "optimizer": "random",
                      "budget_tokens": budget, "r_min": 2, "r_max": 8, "seed": 0,
                      "max_trials": None, "search_space": None, "fixed": {}, **study},
            "engine": {"type": "service", "base_url": "fake://",
                       "served_model_name": "fake-model"},
            "tracking": {"enabled": False}}


def final_status(state: str = "SUCCEEDED") -> dsl.PipelineTaskFinalStatus:
    return dsl.PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="job",
                                       pipeline_task_name="exit", error_code=None,
                                       error_message=None)


@pytest.fixture
def prepared(tmp_path):
    cfg = study_config()
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                     journal_uri=str(tmp_path / "journal"), run_key="run-1")
    return cfg, out.journal_uri, out.manifest_uri


def test_sampler_builds_subsets_and_journal_header_idempotently(tmp_path, prepared):
    cfg, journal, manifest = prepared
    assert journal == str(tmp_path / "journal" / "run-1")
    assert manifest.endswith("/subsets/arithmetic-0/0/manifest.json") or "/subsets/" in manifest
    assert json.loads(open(manifest).read())["r_max"] == 8
    again = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                       journal_uri=str(tmp_path / "journal"), run_key="run-1")
    assert tuple(again) == (manifest, journal)
    assert [r["type"] for r in open_journal(journal).records()] == ["study"]


def ask(cfg, journal, manifest, q):
    return update_surrogate.python_func(study=cfg, journal_uri=journal, manifest_uri=manifest,
                                        q=q)


def evaluate(cfg, item, engine_url="fake://"):
    return evaluate_trial_op.python_func(study=cfg, trial=item, engine_url=engine_url)


def test_updater_asks_a_batch_and_reissues_untold_trials(prepared):
    cfg, journal, manifest = prepared
    items = ask(cfg, journal, manifest, 3)
    # each loop item carries what the evaluator needs besides the pipeline parameters
    assert items == [{"trial_id": i, "journal_uri": journal, "manifest_uri": manifest}
                     for i in (0, 1, 2)]
    # a retried updater (or the next round after a lost evaluator) hands them out again
    assert [i["trial_id"] for i in ask(cfg, journal, manifest, 3)] == [0, 1, 2]


def test_evaluator_accepts_float_ids_from_the_local_runner(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, {**item, "trial_id": float(item["trial_id"])}) in ("complete", "partial")
    assert evaluate(cfg, item) == "already-told"


def test_evaluator_tells_once(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, item) in ("complete", "partial")
    assert evaluate(cfg, item) == "already-told"
    recs = open_journal(journal).records()
    tells = [r for r in recs if r["type"] == "tell"]
    insts = [r for r in recs if r["type"] == "instance"]
    assert len(tells) == 1 and tells[0]["result"]["n_evaluated"] == len(insts) > 0
    assert tells[0]["result"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in insts)


def test_evaluator_failure_is_told_as_failed(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, item, engine_url="http://127.0.0.1:9") == "failed"


def run_rounds(cfg, journal, manifest, max_rounds, q=3):
    decisions = []
    for i in range(max_rounds):
        for item in ask(cfg, journal, manifest, q):
            evaluate(cfg, item)
        decisions.append(control_budget.python_func(study=cfg, journal_uri=journal,
                                                    round_index=i, max_rounds=max_rounds))
        if decisions[-1] != "continue":
            break
    return decisions


def test_controller_records_rounds_and_stops_at_max_rounds(prepared):
    cfg, journal, manifest = prepared
    assert run_rounds(cfg, journal, manifest, max_rounds=2) == ["continue", "stop"]
    recs = open_journal(journal).records()
    rr = rounds(recs)
    assert [r["round"] for r in rr] == [0, 1]
    assert rr[-1]["stop_reason"] == "max_rounds"
    spent = sum(r["result"]["prompt_tokens"] + r["result"]["completion_tokens"]
                for r in recs if r["type"] == "tell")
    assert rr[-1]["B_used"] == spent and rr[-1]["B_remain"] == 20000 - spent
    assert {"eta", "T_hat", "decision"} <= set(rr[-1])
    # a retried controller returns the recorded decision and writes nothing new
    n = len(recs)
    assert control_budget.python_func(study=cfg, journal_uri=journal, round_index=1,
                                      max_rounds=2) == "stop"
    assert len(open_journal(journal).records()) == n


def test_budget_stop_and_empty_batch(tmp_path):
    cfg = study_config(budget=2500)
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "s"),
                                     journal_uri=str(tmp_path / "j"), run_key="")
    decisions = run_rounds(cfg, out.journal_uri, out.manifest_uri, max_rounds=10)
    assert decisions[-1] == "stop" and len(decisions) < 10
    recs = open_journal(out.journal_uri).records()
    assert rounds(recs)[-1]["stop_reason"] in ("budget", "max_trials", "exhausted")
    spent = sum(r["result"]["tokens"] for r in recs if r["type"] == "tell")
    assert spent <= 2500


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED"])
def test_finalize_writes_summary_either_way(prepared, state):
    cfg, journal, manifest = prepared
    if state == "SUCCEEDED":
        run_rounds(cfg, journal, manifest, max_rounds=1)
    base, key = journal.rsplit("/", 1)
    summary = json.loads(finalize_study.python_func(study=cfg, journal_uri=base, engine_url="fake://",
                                                    status=final_status(state), run_key=key))
    assert summary["state"] == state
    final = [r for r in open_journal(journal).records() if r["type"] == "final"]
    assert len(final) == 1 and final[0]["summary"]["tokens_used"] == summary["tokens_used"]


def test_consecutive_failed_trials_stop_the_pipeline_with_the_reason(tmp_path):
    """study.max_failed_trials reaches the optimizer: after K failed trials in a row the
    round's controller stops with ``failed_trials`` and the updater asks nothing more."""
    cfg = study_config(max_failed_trials=2)
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "s"),
                                     journal_uri=str(tmp_path / "j"), run_key="")
    items = ask(cfg, out.journal_uri, out.manifest_uri, 2)
    assert [evaluate(cfg, it, engine_url="http://127.0.0.1:9") for it in items] == \
        ["failed", "failed"]
    assert control_budget.python_func(study=cfg, journal_uri=out.journal_uri, round_index=0,
                                      max_rounds=5) == "stop"
    assert ask(cfg, out.journal_uri, out.manifest_uri, 2) == []
    recs = open_journal(out.journal_uri).records()
    assert rounds(recs)[-1]["stop_reason"] == "failed_trials"
    assert [r["reason"] for r in recs if r["type"] == "stop"] == ["failed_trials"]
    assert recs[0]["options"]["max_failed_trials"] == 2


def _registered_engine(store, name: str, version: str) -> dict:
    """The engine a registered model version calls (its pyfunc model_config)."""
    import mlflow
    import yaml
    from mlflow import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(name, version)
    path = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, tracking_uri=uri,
                                               dst_path=str(store / f"dl-{version}"))
    mlmodel = yaml.safe_load(open(f"{path}/MLmodel").read())
    return mlmodel["flavors"]["python_function"]["config"]["engine"]


def test_gpu_mode_registers_the_production_endpoint_never_a_placeholder(tmp_path, monkeypatch):
    """vLLM inside the pipeline (no engine_url): the winner is registered against the
    study's engine.serving_url; without one nothing is registered."""
    from components._common import make_study_optimizer, promote_best

    monkeypatch.chdir(tmp_path)  # the local MLflow store: ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = study_config()
    cfg["engine"] = {"type": "gpuEvaluator", "base_url": "", "served_model_name": "fake-model",
                     "serving_url": "http://vllm-prod.serving.svc:8000/v1"}
    cfg["tracking"] = {"enabled": True, "registered_model": "ecotune-unit-gpu"}
    opt = make_study_optimizer(cfg, str(tmp_path / "journal.jsonl"))
    t = opt.ask()
    scores = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    opt.tell(t, result=TrialResult(score=0.75, prompt_tokens=80, completion_tokens=20,
                                   n_evaluated=8, instance_ids=[str(i) for i in range(8)],
                                   instance_scores=scores))
    res = promote_best(opt, cfg, engine_url="")
    assert res["promoted"] and res["version"] == "1"
    engine = _registered_engine(tmp_path / "mlruns", "ecotune-unit-gpu", "1")
    assert engine == {"base_url": "http://vllm-prod.serving.svc:8000/v1", "model": "fake-model"}
    cfg["engine"].pop("serving_url")
    with pytest.raises(ValueError, match="engine.serving_url is not set"):
        promote_best(opt, cfg, engine_url="")
