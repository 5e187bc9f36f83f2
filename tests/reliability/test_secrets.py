"""Secrets in the environment never reach the journal, logs or MLflow."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import check_journal, cli, write_config

from ecotune.testing.faults import MODEL, FaultServer


@pytest.mark.integration
def test_api_key_and_s3_secret_never_leak(tmp_path: Path, mlflow_server: str,
                                          s3_server: dict, counts) -> None:
    from mlflow.tracking import MlflowClient

    api_key = f"sk-rel-{uuid.uuid4().hex}"
    s3_secret = s3_server["secret_key"]
    budget = 1500
    with FaultServer(plan=["429"], retry_after="0") as srv:  # an error path is logged too
        cfg = write_config(tmp_path, engine={"base_url": srv.url, "model": MODEL,
                                             "api_key_env": "ECOTUNE_REL_KEY",
                                             "max_concurrency": 1},
                           max_trials=3, budget_tokens=budget,
                           tracking={"enabled": True, "tracking_uri": mlflow_server,
                                     "experiment": "rel-secrets"})
        env = {**os.environ, "ECOTUNE_REL_KEY": api_key, "OPENAI_API_KEY": api_key,
               "AWS_SECRET_ACCESS_KEY": s3_secret, "AWS_ACCESS_KEY_ID": s3_server["access_key"],
               "MLFLOW_S3_ENDPOINT_URL": s3_server["endpoint_url"]}
        r = cli("-v", "tune", "--config", str(cfg), "--plain", env=env, timeout=180)
        assert r.returncode == 0, r.stderr
        # the key was really used
        assert f"Bearer {api_key}" in srv.auth_headers
        counts["faults_injected"] += srv.faults_injected
    journal = tmp_path / "runs" / "rel" / "journal.jsonl"
    check_journal(__import__("ecotune.journal").journal.open_journal(journal).records(), budget)

    places = {"journal": journal.read_text(), "stdout": r.stdout, "stderr": r.stderr}
    for f in (tmp_path / "runs").rglob("*"):
        if f.is_file():
            places[f"file {f.name}"] = f.read_bytes().decode("utf-8", "replace")
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("rel-secrets")
    runs = client.search_runs([exp.experiment_id])
    assert runs
    for run in runs:
        d = run.data
        places[f"run {run.info.run_id} params/tags/metrics"] = repr(
            (d.params, d.tags, d.metrics))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(client.download_artifacts(run.info.run_id, "", tmp))
            for f in root.rglob("*"):
                if f.is_file():
                    places[f"artifact {f.name}"] = f.read_bytes().decode("utf-8", "replace")
    assert any(k.startswith("artifact") for k in places)
    for secret in (api_key, s3_secret):
        for where, text in places.items():
            counts["secrets_checked"] += 1
            assert secret not in text, f"secret leaked into {where}"
