"""Engine, MLflow and S3 faults: retries within limits, tokens charged, studies go on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import check_journal, cli, dead_url, write_config

from ecotune.engines import EngineError, OpenAIEngine
from ecotune.journal import open_journal
from ecotune.sampling import SamplingParams
from ecotune.testing.faults import FAULTS, MODEL, FaultServer, TcpProxy


def _engine(url: str, **kw) -> OpenAIEngine:
    kw = {"timeout_s": 0.4, "max_retries": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
          "max_concurrency": 1, **kw}
    return OpenAIEngine(url, MODEL, **kw)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_then_succeeds(fault: str, counts) -> None:
    with FaultServer(plan=[fault] * 3, timeout_sleep_s=0.6) as srv:
        eng = _engine(srv.url)
        t0 = time.monotonic()
        [c] = eng.generate(["2 + 3 ="], SamplingParams(max_tokens=3))
        took = time.monotonic() - t0
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.faults_injected == 3
    assert c.text == "5" and c.prompt_tokens == 4 and c.completion_tokens == 1
    # 3 retries, each backoff <= 0.05 s; a timeout costs the 0.4 s client timeout
    assert took < 3 * (0.4 + 0.05) + 1.0


def test_retries_are_bounded_and_the_error_says_why(counts) -> None:
    with FaultServer(random_rate=1.0, random_faults=["500"]) as srv:
        eng = _engine(srv.url, max_retries=3)
        t0 = time.monotonic()
        with pytest.raises(EngineError, match=r"after 4 attempts.*HTTP 500"):
            eng.generate(["1 + 1 ="], SamplingParams(max_tokens=2))
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.stats["500"] == 4  # first attempt + max_retries, no more
    assert time.monotonic() - t0 < 2.0


def test_backoff_has_jitter_cap_and_honours_retry_after(counts) -> None:
    eng = OpenAIEngine("http://127.0.0.1:1", MODEL, backoff_base_s=0.5, backoff_max_s=8.0)
    for attempt in range(8):
        cap = min(8.0, 0.5 * 2 ** attempt)
        ds = [eng._delay(attempt, None) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in ds)
        assert len(set(ds)) > 40  # jitter: not one fixed delay
    assert eng._delay(0, "3") == 3.0 and eng._delay(0, "600") == 8.0  # capped
    # a Retry-After: 0 server is retried at once
    with FaultServer(plan=["429"] * 4, retry_after="0") as srv:
        e2 = OpenAIEngine(srv.url, MODEL, backoff_base_s=5.0, max_retries=5)
        t0 = time.monotonic()
        e2.generate(["1 + 2 ="], SamplingParams(max_tokens=2))
        assert time.monotonic() - t0 < 2.0
        e2.close()
        counts["faults_injected"] += srv.faults_injected


def _fault_engine(url: str, **kw) -> dict:
    return {"base_url": url, "model": MODEL, "max_concurrency": 1, "timeout_s": 0.5,
            "max_retries": 1, **kw}


def test_failed_trial_is_charged_and_the_study_goes_on(tmp_path: Path, counts) -> None:
    """3 instances succeed, then the engine fails past its retries: the trial is told as
    failed with its reason and every billed token; later trials run normally."""
    budget = 1500
    with FaultServer(plan=["ok"] * 3 + ["500"] * 2) as srv:
        cfg = write_config(tmp_path, engine=_fault_engine(srv.url), budget_tokens=budget,
                           max_trials=4, r_min=8, r_max=8)
        r = cli("tune", "--config", str(cfg), "--plain")
        assert r.returncode == 0, r.stderr
        billed = srv.stats["billed_tokens"]
        counts["faults_injected"] += srv.faults_injected
    recs = open_journal(tmp_path / "runs" / "rel" / "journal.jsonl").records()
    tot = check_journal(recs, budget)
    tells = sorted((r for r in recs if r["type"] == "tell"), key=lambda r: r["trial_id"])
    first = tells[0]["result"]
    assert first["status"] == "failed" and "HTTP 500" in first["error"]
    assert first["n_evaluated"] == 3 and first["prompt_tokens"] + first["completion_tokens"] > 0
    assert tot["tells"] == 4 and tot["failed"] == 1
    assert all(t["result"]["status"] != "failed" for t in tells[1:])
    # concurrency 1, no kills: what the server billed is exactly what the journal charges
    assert tot["tokens"] == billed


def test_fault_storm_study_completes_within_budget(tmp_path: Path, counts) -> None:
    """Random 429/500/503/timeouts/drops/malformed JSON/missing usage on 30% of requests."""
    budget = 900
    with FaultServer(random_rate=0.3, seed=5, timeout_sleep_s=0.6, retry_after="0") as srv:
        cfg = write_config(tmp_path, engine=_fault_engine(srv.url, max_retries=6,
                                                          max_concurrency=2),
                           budget_tokens=budget, max_trials=6)
        r = cli("tune", "--config", str(cfg), "--plain", timeout=240)
        assert r.returncode == 0, r.stderr
        billed = srv.stats["billed_tokens"]
        counts["faults_injected"] += srv.faults_injected
        assert srv.faults_injected >= 10
    tot = check_journal(open_journal(tmp_path / "runs" / "rel" / "journal.jsonl").records(),
                        budget)
    assert tot["tells"] >= 4
    assert tot["tokens"] <= billed <= budget + 200  # only cancelled in-flight requests differ


@pytest.mark.integration
def test_mlflow_outage_then_sync_loses_nothing(tmp_path: Path, mlflow_server: str,
                                               counts) -> None:
    """Tracking through a proxy that is down for the whole study: the study runs, then
    ``sync_from_journal`` against the live server re-creates every trial."""
    from mlflow.tracking import MlflowClient

    from ecotune.tracking import MlflowTracker

    budget = 1500
    with TcpProxy.for_url(mlflow_server) as proxy:
        proxy.down()
        counts["faults_injected"] += 1
        cfg = write_config(tmp_path, max_trials=5, budget_tokens=budget, fname="mlf",
                           tracking={"enabled": True, "tracking_uri": proxy.url,
                                     "experiment": "rel-outage"})
        t0 = time.monotonic()
        env = {**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        r = cli("tune", "--config", str(cfg), "--plain", timeout=240, env=env)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 < 180
        recs = open_journal(tmp_path / "runs" / "rel" / "journal.jsonl").records()
        tot = check_journal(recs, budget)
        proxy.up()  # MLflow is back
        tracker = MlflowTracker(experiment="rel-outage", tracking_uri=proxy.url)
        written = tracker.sync_from_journal(recs)
        assert written == tot["tells"]
        assert tracker.sync_from_journal(recs) == 0  # idempotent
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("rel-outage")
    runs = client.search_runs([exp.experiment_id], "tags.`ecotune.role` = 'trial'")
    assert len(runs) == tot["tells"]
    counts["records_lost"] += tot["tells"] - len(runs)


@pytest.mark.integration
def test_s3_outage_clear_error_then_journal_continues(tmp_path: Path, s3_server: dict,
                                                      counts) -> None:
    from ecotune.s3 import S3Error, S3Store

    t0 = time.monotonic()
    with pytest.raises(S3Error, match="cannot reach S3 endpoint"):
        S3Store("ecotune-test", "x/", endpoint_url=dead_url(), max_attempts=2).list("")
    assert time.monotonic() - t0 < 30
    counts["faults_injected"] += 1

    budget = 1500
    with TcpProxy.for_url(s3_server["endpoint_url"]) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url,
               "AWS_ACCESS_KEY_ID": s3_server["access_key"],
               "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2"}
        env.pop("ECOTUNE_S3_ENDPOINT_URL", None)
        env.pop("AWS_ENDPOINT_URL_S3", None)
        workdir = f"s3://{s3_server['bucket']}/rel-{os.getpid()}-{time.time_ns()}"
        cfg = write_config(tmp_path, max_trials=3, budget_tokens=budget, workdir=workdir)
        r = cli("tune", "--config", str(cfg), "--plain", env=env)
        assert r.returncode == 0, r.stderr
        proxy.down()
        counts["faults_injected"] += 1
        cfg2 = write_config(tmp_path, max_trials=6, budget_tokens=budget, workdir=workdir)
        t0 = time.monotonic()
        r = cli("resume", "--config", str(cfg2), "--plain", env=env, timeout=180)
        assert r.returncode == 1, r.stdout + r.stderr
        msg = r.stderr.strip().splitlines()[-1]
        assert msg.startswith("error: ") and ("S3" in msg or "s3://" in msg) and "Traceback" not in r.stderr, msg
        assert time.monotonic() - t0 < 120
        proxy.up()
        r = cli("resume", "--config", str(cfg2), "--plain", env=env)
        assert r.returncode == 0, r.stderr
        from ecotune.journal import StoreJournal
        from ecotune.s3 import S3Store as _S

        store = _S.from_uri(f"{workdir}/rel/journal", endpoint_url=proxy.url)
        recs = StoreJournal(store).records()
    tot = check_journal(recs, budget)
    assert tot["tells"] == 6
    json.dumps(tot)
