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
