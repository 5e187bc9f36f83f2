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
