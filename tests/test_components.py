"""Flows across the components (``python_func`` on a local journal with FakeEngine) and the
shared helpers they use; each component's own tests are in ``components/<name>/tests/``."""

import pytest

from components._common import rounds
from components.control_budget import control_budget
from components.sample_dataset import sample_dataset
from components.testing import ask, evaluate, run_rounds, study_config
from ecotune.journal import open_journal
from ecotune.trial import TrialResult


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


def test_trials_reach_mlflow_as_they_finish_not_only_at_the_end(tmp_path, monkeypatch):
    """Issue #13: the sample step makes the study's MLflow run, each evaluator logs its own
    trial when it is told (before any exit handler), the round's controller writes what an
    evaluator could not, and a retried evaluator or controller writes nothing twice."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the artifact store of the local MLflow: ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = study_config()
    cfg["tracking"] = {"enabled": True, "tracking_uri": uri, "experiment": "live"}
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "s"),
                                     journal_uri=str(tmp_path / "j"), run_key="run-1")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("live")

    def runs(role: str) -> list:
        return client.search_runs([exp.experiment_id], f"tags.`ecotune.role` = '{role}'")

    assert len(runs("study")) == 1 and runs("trial") == []
    items = ask(cfg, out.journal_uri, out.manifest_uri, 3)
    evaluate(cfg, items[0])
    assert [r.data.tags["ecotune.trial_id"] for r in runs("trial")] == ["0"]
    evaluate(cfg, items[1])
    assert sorted(r.data.tags["ecotune.trial_id"] for r in runs("trial")) == ["0", "1"]
    # an evaluator whose MLflow call failed (here: it had no tracking) leaves a gap ...
    evaluate({**cfg, "tracking": {"enabled": False}}, items[2])
    assert len(runs("trial")) == 2
    # ... the controller fills it; retries write nothing more
    control_budget.python_func(study=cfg, journal_uri=out.journal_uri, round_index=0,
                               max_rounds=3)
    assert evaluate(cfg, items[0]) == "already-told"
    control_budget.python_func(study=cfg, journal_uri=out.journal_uri, round_index=0,
                               max_rounds=3)
    trial_runs = runs("trial")
    assert sorted(r.data.tags["ecotune.trial_id"] for r in trial_runs) == ["0", "1", "2"]
    (parent,) = runs("study")
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    tells = [r for r in open_journal(out.journal_uri).records() if r["type"] == "tell"]
    logged = {int(r.data.tags["ecotune.trial_id"]): r.data.metrics for r in trial_runs}
    for t in tells:
        assert logged[t["trial_id"]]["tokens"] == t["result"]["tokens"]
