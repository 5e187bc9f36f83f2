"""A scheduled study spends its budget to the end: a run that stopped only for want of
compiled rounds is continued by the next run on the same journal (ecotune.continuation),
each run keeping its own rounds; a finished study is followed by a new one, which
``warm_start: previous`` starts from it. The submitter names the previous run."""

import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from components._common import rounds
from components.finalize_study import finalize_study
from components.sample_dataset import sample_dataset
from components.testing import final_status, run_rounds, study_config
from ecotune.continuation import continuation_uri, previous_journal, run_journal, stopped_for_rounds
from ecotune.journal import open_journal, split_uri, with_params
from ecotune.testing.http import JsonHandler
from pipelines import submit as submit_mod


def test_a_run_view_keeps_its_rounds_and_shares_the_study(tmp_path):
    path = str(tmp_path / "j.jsonl")
    first = open_journal(path)
    first.append({"type": "study", "key": "study"})
    first.append({"type": "round", "key": "round:0", "decision": "stop"})
    second = open_journal(with_params(path, run="r2"))
    assert [r["key"] for r in second.records()] == ["study"]
    stored = second.append({"type": "round", "key": "round:0", "decision": "continue"})
    second.append({"type": "ask", "key": "ask:0"})
    assert stored["key"] == "round:0"
    assert [(r["key"], r.get("decision")) for r in second.records()] == [
        ("study", None), ("round:0", "continue"), ("ask:0", None)]
    # the plain journal holds both runs' records; the shared ones once
    assert [r["key"] for r in first.records()] == ["study", "round:0", "round:0@r2", "ask:0"]
    assert second.first()["type"] == "study"


def test_journal_uris_carry_run_and_after_but_a_plain_hash_is_a_path():
    assert split_uri("s3://b/j/k#run=r-2") == ("s3://b/j/k", {"run": "r-2"})
    assert split_uri("s3://b/j#after=a1&run=r2") == ("s3://b/j", {"after": "a1", "run": "r2"})
    assert split_uri("runs/a#b/journal.jsonl") == ("runs/a#b/journal.jsonl", {})
    assert with_params("s3://b/j", after=None) == "s3://b/j"
    with pytest.raises(ValueError):
        with_params("s3://b/j", run="bad key")


def _journal(path, *rounds_):
    j = open_journal(path)
    j.append({"type": "study", "key": "study"})
    for i, reason in enumerate(rounds_):
        j.append({"type": "round", "key": f"round:{i}", "round": i,
                  "decision": "stop" if reason else "continue", "stop_reason": reason})


def test_run_journal_continues_only_a_study_that_ran_out_of_rounds(tmp_path):
    base = str(tmp_path / "journal")
    assert run_journal(base, "r1") == f"{base}/r1"            # no previous run
    assert run_journal(base, "") == base
    _journal(f"{base}/r1", None, "max_rounds")
    uri = continuation_uri(base, "r1")
    cont = run_journal(uri, "r2")
    assert cont == f"{base}/r1#run=r2"
    assert run_journal(uri, "r2") == cont                      # decided once, recorded
    assert open_journal(f"{base}/r2").first()["journal"] == f"{base}/r1"
    # the continuation stops on budget: the next run starts a study of its own, whose
    # previous journal is the one the continuation used
    open_journal(cont).append({"type": "round", "key": "round:0", "round": 0,
                               "decision": "stop", "stop_reason": "budget"})
    fresh = run_journal(continuation_uri(base, "r2"), "r3")
    assert fresh == f"{base}/r3#after=r2"
    assert previous_journal(fresh) == f"{base}/r1"
    assert previous_journal(f"{base}/r3") is None
    # a previous run that wrote nothing (it failed first): a new study, nothing before it
    assert run_journal(continuation_uri(base, "gone"), "r4") == f"{base}/r4#after=gone"
    assert previous_journal(f"{base}/r4#after=gone") is None


def test_stopped_for_rounds_reads_the_last_round_of_any_run():
    r = [{"type": "round", "ts": 1, "decision": "stop", "stop_reason": "max_rounds"}]
    assert stopped_for_rounds(r)
    assert not stopped_for_rounds(r + [{"type": "round", "ts": 2, "decision": "stop",
                                        "stop_reason": "budget", "run": "r2"}])
    assert not stopped_for_rounds([])


def pipeline_run(cfg, tmp_path, run_key, after=None, max_rounds=2):
    """One pipeline run, step by step: sample, rounds, finalize (the exit handler)."""
    base = continuation_uri(str(tmp_path / "journal"), after)
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                     journal_uri=base, run_key=run_key)
    decisions = run_rounds(cfg, out.journal_uri, out.manifest_uri, max_rounds=max_rounds)
    summary = json.loads(finalize_study.python_func(study=cfg, journal_uri=base, engine_url="",
                                                    status=final_status(), run_key=run_key))
    return out.journal_uri, decisions, summary


def test_the_next_run_continues_a_study_that_ran_out_of_rounds(tmp_path):
    cfg = study_config(budget=6000)
    j1, d1, s1 = pipeline_run(cfg, tmp_path, "run-1")
    assert d1 == ["continue", "stop"] and s1["stop_reason"] == "max_rounds"
    assert s1["tokens_used"] < 6000
    j2, d2, s2 = pipeline_run(cfg, tmp_path, "run-2", after="run-1", max_rounds=20)
    assert j2 == f"{j1}#run=run-2"
    assert s2["stop_reason"] == "budget" and d2[-1] == "stop" and len(d2) > 1
    assert s2["tokens_used"] <= 6000 and s2["trials"] > s1["trials"]
    plain = open_journal(j1).records()
    # one study: trial ids go on, every ask told once, the budget charged across both runs
    asks = [r["trial"]["id"] for r in plain if r["type"] == "ask"]
    assert asks == list(range(len(asks))) and len(asks) == s2["trials"]
    # each run has its own rounds and summary
    own = open_journal(j2).records()
    assert [r["round"] for r in rounds(own)] == list(range(len(d2)))
    assert rounds(own)[0]["B_used"] >= s1["tokens_used"]
    finals = [r for r in plain if r["type"] == "final"]
    assert [f.get("run") for f in finals] == [None, "run-2"]
    # a third run: the study is spent; a new study starts on its own journal
    j3, d3, s3 = pipeline_run(cfg, tmp_path, "run-3", after="run-2")
    assert j3 == str(tmp_path / "journal" / "run-3") + "#after=run-2"
    assert s3["tokens_used"] > 0 and s3["trials"] < s2["trials"]


def test_a_new_scheduled_study_is_warm_started_from_the_previous_one(tmp_path):
    cfg = study_config(budget=6000, optimizer="ecotune", max_trials=4,
                       warm_start={"journal": "previous", "top_k": 2})
    j1, _, s1 = pipeline_run(cfg, tmp_path, "run-1")
    assert s1["stop_reason"] == "max_trials"
    head1 = open_journal(j1).first()
    assert "warm_start" not in head1                      # the first run had nothing before it
    j2, _, s2 = pipeline_run(cfg, tmp_path, "run-2", after="run-1")
    assert j2.startswith(str(tmp_path / "journal" / "run-2"))
    ws = open_journal(j2).first()["warm_start"]
    assert ws["source"] == j1 and ws["matched"] and len(ws["observations"]) == 4
    assert s2["tokens_used"] <= 6000                        # prior data cost nothing
    first_ask = next(r for r in open_journal(j2).records() if r["type"] == "ask")
    assert first_ask["trial"]["config"] == ws["configs"][0]


def test_submit_names_the_studys_latest_run_to_a_kfp_api_server(tmp_path, monkeypatch):
    """A real kfp.Client against a loopback KFP v2beta1 API: the run it creates is told
    the study's most recent run (its journal may be continued)."""
    package = tmp_path / "loop.yaml"  # precompiled: kfp.pipeline_package
    package.write_text("pipelineInfo: {name: ecotune-loop}\nroot: {}\n")
    study = {"version": 1,
             "study": {"name": "llama", "model": "llama", "task": "mmlu",
                       "budget_tokens": 1000000, "r_min": 8, "r_max": 200},
             "engine": {"type": "service", "base_url": "http://vllm:8000"},
             "storage": {"enabled": True, "journal_uri": "s3://b/llama/journal"},
             "kfp": {"pipeline_package": str(package), "run_name_prefix": "ecotune-llama"}}
    runs = [{"run_id": "old", "display_name": "ecotune-llama-cron-1", "state": "SUCCEEDED",
             "created_at": "2026-01-05T04:00:00Z"},
            {"run_id": "latest", "display_name": "ecotune-llama-cron-2", "state": "SUCCEEDED",
             "created_at": "2026-01-12T04:00:00Z"},
            {"run_id": "other", "display_name": "ecotune-qwen-cron-3", "state": "SUCCEEDED",
             "created_at": "2026-01-19T04:00:00Z"}]
    posted: list[dict] = []

    class Api(JsonHandler):

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/apis/v2beta1/runs"):
                self.reply({"runs": runs, "total_size": len(runs)})
            else:
                self.reply({"experiments": [], "total_size": 0})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.path.startswith("/apis/v2beta1/experiments"):
                self.reply({"experiment_id": "exp-1", **body})
            else:
                posted.append(body)
                self.reply({"run_id": "new", "display_name": body.get("display_name")})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("KFP_BEARER_TOKEN", "t")
    monkeypatch.setenv("ECOTUNE_JOB_NAME", "cron-4")
    try:
        done = submit_mod.submit(study, submit_mod.make_client(study), max_rounds=2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert done == {"kind": "run", "name": "ecotune-llama-cron-4", "id": "new",
                    "after": "latest"}
    [body] = posted
    assert body["runtime_config"]["parameters"]["journal_uri"] == \
        "s3://b/llama/journal#after=latest"


def test_a_recurring_runs_runs_find_the_previous_run_themselves(tmp_path):
    """KFP recurring runs have fixed parameters (``#after=latest``): each run's first step
    finds the study's latest earlier run under the journal prefix, so a recurring schedule
    continues and warm-starts exactly as the CronJob's named runs do."""
    from ecotune.continuation import LATEST, latest_run_key

    cfg = study_config(budget=6000)
    j1, d1, s1 = pipeline_run(cfg, tmp_path, "run-1", after=LATEST)
    assert j1 == str(tmp_path / "journal" / "run-1")      # nothing before it: a new study
    assert s1["stop_reason"] == "max_rounds"
    j2, d2, s2 = pipeline_run(cfg, tmp_path, "run-2", after=LATEST, max_rounds=20)
    assert j2 == f"{j1}#run=run-2" and s2["stop_reason"] == "budget"   # continued
    j3, _, s3 = pipeline_run(cfg, tmp_path, "run-3", after=LATEST)
    assert j3 == str(tmp_path / "journal" / "run-3") + "#after=run-2"  # spent: a new study
    # every step of a run resolves the same previous run, also once newer runs exist
    prefix = str(tmp_path / "journal")
    assert run_journal(continuation_uri(prefix, LATEST), "run-2") == j2
    assert latest_run_key(prefix, "run-4") == "run-3"
    assert latest_run_key(str(tmp_path / "nothing"), "run-1") is None


def test_a_recurring_run_is_warm_started_from_the_previous_study(tmp_path):
    cfg = study_config(budget=6000, optimizer="ecotune", max_trials=4,
                       warm_start={"journal": "previous", "top_k": 2})
    j1, _, s1 = pipeline_run(cfg, tmp_path, "run-1", after="latest")
    assert s1["stop_reason"] == "max_trials"
    j2, _, _ = pipeline_run(cfg, tmp_path, "run-2", after="latest")
    ws = open_journal(j2).first()["warm_start"]
    assert ws["source"] == j1 and ws["matched"] and len(ws["observations"]) == 4

