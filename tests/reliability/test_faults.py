"""Engine, MLflow and S3 faults: retries within limits, tokens charged, studies go on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import check_bill, check_journal, cli, dead_url, write_config

from ecotune.decoding import SamplingParams
from ecotune.engines import EngineError, OpenAIEngine
from ecotune.journal import open_journal
from ecotune.ledger import OverLimit, TokenLedger
from ecotune.testing.faults import FAULTS, MODEL, FaultServer
from ecotune.testing.proxy import TcpProxy


def _engine(url: str, **kw) -> OpenAIEngine:
    kw = {"timeout_s": 0.4, "max_retries": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
          "max_concurrency": 1, **kw}
    return OpenAIEngine(url, MODEL, **kw)


RETRIED = [f for f in FAULTS if f != "badchoice"]


@pytest.mark.parametrize("fault", RETRIED)
def test_each_fault_is_retried_then_succeeds(fault: str, counts) -> None:
    """Three failed attempts, then an answer. Each attempt was authorized at its worst case
    (4 prompt + 3 completion tokens); a refusal (429/503) releases it, every other fault may
    have been billed and keeps it. The ledger never charges less than the server billed."""
    ledger = TokenLedger(limit=100)
    with FaultServer(plan=[fault] * 3, timeout_sleep_s=0.6) as srv:
        eng = _engine(srv.url)
        t0 = time.monotonic()
        c = eng.complete_one("2 + 3 =", SamplingParams(max_tokens=3), ledger=ledger,
                             prompt_tokens=4)
        took = time.monotonic() - t0
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.faults_injected == 3
        billed = srv.stats["billed_tokens"]
    assert c.text == "5" and c.prompt_tokens == 4 and c.completion_tokens == 1
    refused = fault in ("429", "503")
    assert billed == (5 if refused else 4 * 5)
    assert c.unsettled_tokens == ledger.kept == (0 if refused else 3 * 7)
    assert ledger.charged == c.tokens == 5 + ledger.kept >= billed
    counts["billed_not_charged"] += max(0, billed - ledger.charged)
    # 3 retries, each backoff <= 0.05 s; a timeout costs the 0.4 s client timeout
    assert took < 3 * (0.4 + 0.05) + 1.0


def test_a_billed_malformed_answer_is_charged_and_not_retried(counts) -> None:
    """A 200 that carries usage is final: charged as reported, the instance marked failed."""
    ledger = TokenLedger(limit=100)
    with FaultServer(plan=["badchoice"]) as srv:
        eng = _engine(srv.url)
        c = eng.complete_one("2 + 3 =", SamplingParams(max_tokens=3), ledger=ledger,
                             prompt_tokens=4)
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.stats["requests"] == 1 and srv.stats["billed_tokens"] == 5
    assert c.finish_reason == "error" and "malformed completion" in (c.error or "")
    assert (c.prompt_tokens, c.completion_tokens, ledger.charged, ledger.kept) == (4, 1, 5, 0)


def test_a_retry_that_would_not_fit_is_never_sent(counts) -> None:
    """Limit 15, worst case 7: the first attempt and one retry fit (both kept: a 500 may have
    been billed); a third would pass the limit, so it is not sent."""
    ledger = TokenLedger(limit=15)
    with FaultServer(plan=["500"] * 5) as srv:
        eng = _engine(srv.url, max_retries=4)
        with pytest.raises(OverLimit, match="would pass the trial's token limit"):
            eng.complete_one("2 + 3 =", SamplingParams(max_tokens=3), ledger=ledger,
                             prompt_tokens=4)
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.stats["500"] == 2 and srv.stats["billed_tokens"] == 10
    assert ledger.charged == ledger.kept == 14 <= 15


def test_retries_are_bounded_and_the_error_says_why(counts) -> None:
    with FaultServer(random_rate=1.0, random_faults=["500"]) as srv:
        eng = _engine(srv.url, max_retries=3)
        t0 = time.monotonic()
        with pytest.raises(EngineError, match=r"after 4 attempts.*HTTP 500"):
            eng.generate(["1 + 1 ="], SamplingParams(max_tokens=2))
        eng.close()
        counts["faults_injected"] += srv.faults_injected
        assert srv.stats["500"] == 4  # first attempt + max_retries, no more
        assert srv.stats["requests"] == 4  # one retry loop: never (retries + 1) squared
    assert time.monotonic() - t0 < 2.0


def test_retry_after_is_honoured(counts) -> None:
    """A ``Retry-After: 0`` server is retried at once although the backoff base is 5 s; a
    ``Retry-After: 1`` one is waited for (the jittered backoff alone would be <= 0.05 s)."""
    with FaultServer(plan=["429"] * 4, retry_after="0") as srv:
        e2 = OpenAIEngine(srv.url, MODEL, backoff_base_s=5.0, max_retries=5)
        t0 = time.monotonic()
        e2.generate(["1 + 2 ="], SamplingParams(max_tokens=2))
        assert time.monotonic() - t0 < 2.0
        e2.close()
        counts["faults_injected"] += srv.faults_injected
    with FaultServer(plan=["503"], retry_after="1") as srv:
        e3 = _engine(srv.url, backoff_max_s=2.0)  # the cap still bounds Retry-After
        t0 = time.monotonic()
        e3.generate(["1 + 2 ="], SamplingParams(max_tokens=2))
        assert 1.0 <= time.monotonic() - t0 < 3.0
        e3.close()
        counts["faults_injected"] += srv.faults_injected


def _fault_engine(url: str, **kw) -> dict:
    return {"base_url": url, "model": MODEL, "max_concurrency": 1, "timeout_s": 0.5,
            "max_retries": 1, **kw}


def test_failed_trial_is_charged_and_the_study_goes_on(tmp_path: Path, counts) -> None:
    """3 instances succeed, then the engine fails past its retries with 500s after
    generating: the trial is told as failed with its reason and charged the three answers'
    usage plus the worst case of both failed attempts (the server billed them; the client
    cannot know how much); later trials run normally."""
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
    holds = [r for r in recs if r["type"] == "hold" and r["trial_id"] == first_id(tells)]
    assert len(holds) == 5  # 3 answered + 2 failed attempts, each written before it was sent
    assert first["unsettled_tokens"] == sum(h["tokens"] for h in holds[3:]) > 0
    # concurrency 1, no kills: the journal exceeds the bill only by the two failed
    # attempts' worst case over what the server generated for them
    check_bill(tot["tokens"], billed, budget)
    assert tot["tokens"] - billed < first["unsettled_tokens"]


def first_id(tells: list[dict]) -> int:
    return int(tells[0]["trial_id"])


def test_fault_storm_study_completes_within_budget(tmp_path: Path, counts) -> None:
    """Random faults on 30% of requests, most of them billed by the server although the
    client never sees an answer: the engine's bill stays within the budget and the journal
    charges at least as much."""
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
    check_bill(tot["tokens"], billed, budget)


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
    assert tot["tells"] == 6 and tot["asks"] == 6
    assert 0 < tot["tokens"] <= budget
