"""The whole pipeline under ``kfp.local.SubprocessRunner`` against real servers.

Embedded vLLM (``ECOTUNE_VLLM_URL`` or the session fixture), the session's SeaweedFS S3 for
the journal and subsets, the session's MLflow server for tracking and the registry. The same
study is then run in-process through the same components (``python_func``) on a local
journal, and the two runs' accounting is compared.

Kept small (2 rounds of 2 trials, a tiny budget): every step is a subprocess.
"""

import json
import os
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: round 0 (2 trials) spends well under half of it, so round 1 always runs (the If branch)
BUDGET = 3000
MAX_ROUNDS = 2
BATCH = 2


def study_config(mlflow_uri: str, tag: str, engine_url: str) -> dict:
    return {"version": 1,
            "study": {"name": f"pipeline-it-{tag}", "model": "smollm2-135m-instruct",
                      "task": {"name": "arithmetic", "n": 20}, "optimizer": "ecotune",
                      "budget_tokens": BUDGET, "r_min": 4, "r_max": 4, "seed": 3,
                      "max_trials": None, "fixed": {},
                      "search_space": {
                          "temperature": {"type": "float", "low": 0.0, "high": 1.0},
                          "max_tokens": {"type": "int", "low": 2, "high": 6},
                          "few_shot": {"type": "int", "low": 0, "high": 2}}},
            "engine": {"type": "service", "base_url": engine_url,
                       "served_model_name": "smollm2-135m-instruct",
                       "send_seed": False, "max_concurrency": 4, "timeout_s": 120},
            "tracking": {"enabled": True, "tracking_uri": mlflow_uri,
                         "experiment": f"pipeline-it-{tag}",
                         "registered_model": f"pipeline-it-model-{tag}"}}


def tells(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r["type"] == "tell"]


def tokens(recs: list[dict]) -> int:
    """Everything the told trials were charged (usage plus kept worst cases)."""
    return sum(r["result"]["tokens"] for r in tells(recs))


def check_accounting(recs: list[dict]) -> list[dict]:
    """Journal invariants shared by both runs; returns the round records."""
    from components._common import rounds

    rr = rounds(recs)
    spent = tokens(recs)
    assert spent == rr[-1]["B_used"] <= BUDGET
    assert rr[-1]["B_remain"] == BUDGET - spent
    asks = {r["trial"]["id"] for r in recs if r["type"] == "ask"}
    assert asks == {r["trial_id"] for r in tells(recs)} and asks
    for r in tells(recs):
        ask = next(a for a in recs if a.get("key") == f"ask:{r['trial_id']}")
        assert r["result"]["tokens"] <= ask["trial"]["token_limit"]
        inst = [i for i in recs if i["type"] == "instance" and i["trial_id"] == r["trial_id"]]
        assert r["result"]["n_evaluated"] == len(inst) > 0
        assert r["result"]["prompt_tokens"] == sum(i["prompt_tokens"] for i in inst)
        assert r["result"]["status"] != "failed", r["result"].get("error")
    return rr


def test_pipeline_runs_rounds_within_budget(tmp_path, vllm_server, s3_server, mlflow_server,
                                            monkeypatch):
    import kfp.local
    from mlflow import MlflowClient

    from components._common import make_study_optimizer
    from components.control_budget import control_budget
    from components.evaluate_trial import evaluate_trial
    from components.sample_dataset import sample_dataset
    from components.update_surrogate import update_surrogate
    from ecotune.journal import open_journal
    from ecotune.s3 import S3Store
    from pipelines.ecotune_loop import PipelineOptions, build_pipeline
    from pipelines.submit import strip_nulls

    tag = uuid.uuid4().hex[:8]
    # the steps are subprocesses: they import the repo and reach S3 through the env that
    # the s3_server fixture set (AWS_*), inherited from this process
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.chdir(tmp_path)  # anything a step writes to a relative path stays here
    cfg = strip_nulls(study_config(mlflow_server, tag, vllm_server))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(tmp_path / "pipeline-root"))
    pipeline = build_pipeline(PipelineOptions(max_rounds=MAX_ROUNDS, parallelism=2,
                                              s3_secret=None))
    base = f"s3://{s3_server['bucket']}/pipeline-it-{tag}"
    pipeline(study=cfg, journal_uri=f"{base}/journal", subsets_uri=base,
             engine_url=vllm_server, batch_size=BATCH)

    keys = S3Store.from_uri(f"{base}/journal").list("")
    runs = {k.split("/")[0] for k in keys if k.endswith(".json")}
    assert len(runs) == 1, keys[:5]
    journal = f"{base}/journal/{runs.pop()}"
    recs = open_journal(journal).records()

    # which branch ran: round 0's controller said "continue", so the dsl.If branch ran
    # round 1, whose controller stopped at the last compiled round (or on the budget)
    rr = check_accounting(recs)
    assert [r["round"] for r in rr] == [0, 1]
    assert [r["decision"] for r in rr] == ["continue", "stop"]
    assert rr[0]["stop_reason"] is None
    assert rr[1]["stop_reason"] in ("max_rounds", "budget")
    # each round's trials were told before its controller ran: round 0 saw 2, round 1 all 4
    assert rr[0]["trials_told"] == BATCH and rr[0]["pending"] == []
    assert rr[1]["trials_told"] == len(tells(recs)) == 2 * BATCH and rr[1]["pending"] == []
    assert rr[0]["B_used"] == sum(r["result"]["tokens"] for r in tells(recs)
                                  if r["trial_id"] < BATCH)
    spent = tokens(recs)
    final = [r for r in recs if r["type"] == "final"]
    assert len(final) == 1 and final[0]["summary"]["state"] == "SUCCEEDED"
    assert final[0]["summary"]["tokens_used"] == spent <= BUDGET
    assert final[0]["summary"]["rounds"] == MAX_ROUNDS
    # the journal replays to the same budget in-process
    replay = make_study_optimizer(cfg, journal)
    assert replay.state.budget.used == spent and len(replay.state.results) == 2 * BATCH

    # MLflow: one trial run per told trial, tokens logged as in the journal
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(f"pipeline-it-{tag}")
    assert exp is not None
    trial_runs = client.search_runs([exp.experiment_id], "tags.`ecotune.role` = 'trial'",
                                    max_results=100)
    assert len(trial_runs) == 2 * BATCH

    # promotion happened on held-out instances (never tuned on); a second finalize (as the
    # next scheduled run's would) scores the champion on the same instances and compares
    (first,) = [r for r in recs if r["type"] == "promotion"]  # all trials ran at r_max
    assert first["n"] == 20 - 4 and first["aliases"][0] == "challenger"
    from kfp import dsl

    from components.finalize_study import finalize_study

    again = json.loads(finalize_study.python_func(
        study=cfg, journal_uri=journal, engine_url=vllm_server, run_key="",
        status=dsl.PipelineTaskFinalStatus(state="SUCCEEDED", pipeline_job_resource_name="j",
                                           pipeline_task_name="exit", error_code=None,
                                           error_message=None)))
    second = again["promotion"]
    assert second["champion_score"] is not None and second["n"] == first["n"]
    assert second["version"] != first["version"]

    # the same study in-process, same components and engine, on a local journal
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "local"),
                                     journal_uri=str(tmp_path / "journal.jsonl"))
    decisions = []
    for i in range(MAX_ROUNDS):
        for item in update_surrogate.python_func(study=cfg, journal_uri=out.journal_uri,
                                                 manifest_uri=out.manifest_uri, q=BATCH):
            evaluate_trial.python_func(study=cfg, trial=item, engine_url=vllm_server)
        decisions.append(control_budget.python_func(study=cfg, journal_uri=out.journal_uri,
                                                    round_index=i, max_rounds=MAX_ROUNDS))
        if decisions[-1] != "continue":
            break
    local = open_journal(out.journal_uri).records()
    lr = check_accounting(local)
    assert decisions == [r["decision"] for r in rr]
    assert [(r["round"], r["stop_reason"], r["trials_told"]) for r in lr] == \
           [(r["round"], r["stop_reason"], r["trials_told"]) for r in rr]
    # the trials depend only on the seed, and so do the prompts (same subset, same
    # few-shot examples): same asks and the same prompt tokens trial by trial
    def asked(rs):
        return [(r["trial"]["id"], r["trial"]["config"], r["trial"]["fidelity"],
                 r["trial"]["token_limit"]) for r in rs if r["type"] == "ask"]

    def prompt(rs):
        return {r["trial_id"]: (r["result"]["prompt_tokens"], r["result"]["n_evaluated"])
                for r in tells(rs)}

    assert asked(local) == asked(recs)
    assert prompt(local) == prompt(recs)
    print(f"pipeline: {len(rr)} rounds, {len(tells(recs))} trials, {spent} tokens; "
          f"in-process: {len(lr)} rounds, {tokens(local)} tokens")


def test_pipeline_against_a_billing_server_stays_within_budget(tmp_path, s3_server,
                                                               monkeypatch):
    """The pipeline (ecotune optimizer) against a server that bills every token it generates,
    also for answers the client never sees (timeouts, 500s and drops after generation,
    unreadable 200s): the server's true bill stays within the budget and the journal
    charges at least as much."""
    import kfp.local

    from ecotune.journal import open_journal
    from ecotune.ledger import journal_charged
    from ecotune.s3 import S3Store
    from ecotune.testing.faults import MODEL, FaultServer
    from pipelines.ecotune_loop import PipelineOptions, build_pipeline
    from pipelines.submit import strip_nulls

    budget, tag = 1200, uuid.uuid4().hex[:8]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.chdir(tmp_path)

    def config(engine_url: str) -> dict:
        return strip_nulls({
            "version": 1,
            "study": {"name": f"billing-{tag}", "model": MODEL,
                      "task": {"name": "arithmetic", "n": 20}, "optimizer": "ecotune",
                      "budget_tokens": budget, "r_min": 2, "r_max": 6, "seed": 1,
                      # 3-instance screens: the 4 trials of 2 rounds send enough requests
                      # for the fault plan's first 12 (whatever the optimizer's default)
                      "init_fidelity": 3,
                      "fixed": {"few_shot": 1},
                      "search_space": {
                          "temperature": {"type": "float", "low": 0.0, "high": 1.0},
                          "max_tokens": {"type": "int", "low": 2, "high": 6}}},
            "engine": {"type": "service", "base_url": engine_url, "served_model_name": MODEL,
                       "max_concurrency": 2, "timeout_s": 0.5, "max_retries": 3},
            "tracking": {"enabled": False}})

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(tmp_path / "pipeline-root"))
    pipeline = build_pipeline(PipelineOptions(max_rounds=MAX_ROUNDS, parallelism=2,
                                              s3_secret=None))
    base = f"s3://{s3_server['bucket']}/billing-{tag}"
    # every billed fault early on (the first round's requests), then 20% at random
    plan = ["ok", "500", "ok", "timeout", "ok", "drop", "malformed", "ok", "nousage",
            "badchoice", "429", "503"]
    with FaultServer(plan=plan, random_rate=0.2, seed=2, timeout_sleep_s=0.8,
                     retry_after="0", random_faults=["429", "500", "timeout", "drop",
                                                     "malformed", "nousage"]) as srv:
        pipeline(study=config(srv.url), journal_uri=f"{base}/journal", subsets_uri=base,
                 engine_url=srv.url, batch_size=BATCH)
        billed = srv.stats["billed_tokens"]
        faults = srv.faults_injected
    keys = S3Store.from_uri(f"{base}/journal").list("")
    (run,) = {k.split("/")[0] for k in keys if k.endswith(".json")}
    recs = open_journal(f"{base}/journal/{run}").records()
    charged = journal_charged(recs)
    asks = {r["trial"]["id"] for r in recs if r["type"] == "ask"}
    assert asks == {r["trial_id"] for r in tells(recs)} and len(asks) >= BATCH
    assert 0 < billed <= budget, billed
    assert billed <= charged <= budget, (billed, charged)
    assert faults >= 6, faults
    print(f"billing pipeline: engine billed {billed}, journal charged {charged}, "
          f"budget {budget}, faults {faults}")
