"""A small real study end to end through the CLI: the ecotune optimizer on local vLLM, the
session's real MLflow server (artifacts on its S3), Ctrl-C, resume, promotion.

Run with ``ECOTUNE_VLLM_URL=http://127.0.0.1:8000`` to reuse a running server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ecotune.cli import main
from ecotune.journal import open_journal

pytestmark = pytest.mark.integration

# enough trials that the study is still running when Ctrl-C comes after the second (a warm
# vLLM answers a whole 8-trial study in a few seconds), and all of them fit the budget
MAX_TRIALS = 24
BUDGET = 60000
EXPERIMENT = f"e2e-{uuid.uuid4().hex[:8]}"


def _config(tmp_path: Path, base_url: str, mlflow_uri: str = "") -> Path:
    data = {
        "name": "e2e",
        "task": {"name": "arithmetic", "n": 60},
        "engine": {"base_url": base_url, "model": "smollm2-135m-instruct", "send_seed": False,
                   "max_concurrency": 4, "timeout_s": 120},
        "search_space": {
            "temperature": {"type": "float", "low": 0.0, "high": 1.0},
            "max_tokens": {"type": "int", "low": 3, "high": 6},
            "few_shot": {"type": "int", "low": 1, "high": 4},
        },
        "budget_tokens": BUDGET, "r_min": 3, "r_max": 10, "optimizer": "ecotune", "seed": 1,
        "max_trials": MAX_TRIALS,
        "workdir": str(tmp_path / "runs"),
        "tracking": ({"enabled": True, "experiment": EXPERIMENT, "tracking_uri": mlflow_uri}
                     if mlflow_uri else {"enabled": False}),
        "promotion": {"enabled": True, "held_out": 10},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _tells(journal: Path) -> list[dict]:
    return [r for r in open_journal(journal).records() if r["type"] == "tell"]


def test_tune_interrupt_resume(vllm_server: str, mlflow_server: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, vllm_server, mlflow_server)
    journal = tmp_path / "runs" / "e2e" / "journal.jsonl"
    env = dict(os.environ)  # AWS_* of the session's S3 server, for MLflow's artifacts

    # 1. start a study and interrupt it (Ctrl-C) after two trials
    # Ctrl-C at a terminal: SIGINT at its default in the child even when the tests run as a
    # background job (whose children inherit SIGINT ignored, so Python would never raise
    # KeyboardInterrupt and the study would run to its end)
    proc = subprocess.Popen([sys.executable, "-m", "ecotune.cli", "tune", "--config", str(cfg),
                             "--plain"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(_tells(journal)) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "ecotune resume --config" in err and "Traceback" not in err
    done_before = len(_tells(journal))
    assert 2 <= done_before < MAX_TRIALS

    # a new study over the same journal is refused with a pointer to resume
    assert main(["tune", "--config", str(cfg)]) == 2
    assert "ecotune resume" in capsys.readouterr().err

    # 2. resume to the end (in-process, through the CLI)
    assert main(["resume", "--config", str(cfg), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "stop reason" in out

    recs = open_journal(journal).records()
    tells = [r for r in recs if r["type"] == "tell"]
    asks = [r for r in recs if r["type"] == "ask"]
    assert len(tells) == len(asks) == MAX_TRIALS
    assert sorted(r["trial_id"] for r in tells) == list(range(MAX_TRIALS))
    used = sum(r["result"]["tokens"] for r in tells)
    assert 0 < used <= BUDGET
    inst = [r for r in recs if r["type"] == "instance"]
    # usage of every answered instance, plus the worst case of requests cut off by Ctrl-C
    kept = sum(r["result"]["unsettled_tokens"] for r in tells)
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in inst) + kept == used
    for t in tells:  # every trial within its own limit
        limit = next(a["trial"]["token_limit"] for a in asks if a["trial"]["id"] == t["trial_id"])
        assert t["result"]["tokens"] <= limit
    promo = [r for r in recs if r["type"] == "promotion"]
    assert promo and promo[-1]["n"] == 10

    # 3. MLflow: one parent run, one finished trial run per trial, final token count
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("ecotune.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("ecotune.role") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["ecotune.trial_id"]) for r in trials) == list(range(MAX_TRIALS))
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["final.tokens_used"] == used
    name = promo[-1]["model_name"]
    mv = client.get_model_version_by_alias(name, "challenger")
    assert str(mv.version) == str(promo[-1]["version"])

    # 4. promote again from the journal alone: the champion is now scored too
    assert main(["promote", "--config", str(cfg)]) == 0
    assert "promotion:" in capsys.readouterr().out
    promo = [r for r in open_journal(journal).records() if r["type"] == "promotion"]
    assert len(promo) == 2 and promo[-1]["champion_score"] is not None


def test_wrong_model_is_a_clear_error(vllm_server: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, vllm_server)
    data = yaml.safe_load(cfg.read_text())
    data["engine"]["model"] = "no-such-model"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["tune", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "engine check failed" in err and "not served" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "e2e" / "journal.jsonl").exists()


def test_greedy_answers_are_never_bought_twice(vllm_server: str, tmp_path: Path) -> None:
    """Two ecotune studies of the same model in one workdir, against real vLLM: within a
    study no (canonical config, instance) pair under greedy decoding is paid for twice, and
    the second study takes the first one's answers from the response cache."""
    from ecotune.bench.waste import waste

    def study(name: str, seed: int) -> list[dict]:
        data = {
            "name": name, "task": {"name": "arithmetic", "n": 40},
            "engine": {"base_url": vllm_server, "model": "smollm2-135m-instruct",
                       "send_seed": False, "max_concurrency": 4, "timeout_s": 120},
            "search_space": {
                "decoding": {"type": "categorical", "choices": ["greedy", "sample"]},
                "temperature": {"type": "float", "low": 0.1, "high": 1.0,
                                "condition": {"param": "decoding", "values": ["sample"]}},
                "max_tokens": {"type": "int", "low": 4, "high": 6},
                "few_shot": {"type": "int", "low": 1, "high": 2}},
            "budget_tokens": 4000, "r_min": 3, "r_max": 8, "optimizer": "ecotune",
            "seed": seed, "max_trials": 8, "workdir": str(tmp_path / "runs")}
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(data))
        assert main(["tune", "--config", str(p), "--plain"]) == 0
        return open_journal(tmp_path / "runs" / name / "journal.jsonl").records()

    first = waste(study("cache-a", 0))
    second_recs = study("cache-b", 0)
    second = waste(second_recs)
    assert first["remeasured_tokens"] == 0 and second["remeasured_tokens"] == 0
    cached = [r for r in second_recs if r["type"] == "instance" and r.get("source") == "cache"]
    assert cached and all(r["prompt_tokens"] == r["completion_tokens"] == 0 for r in cached)
    assert second["tokens_reused"] > 0
    assert (tmp_path / "runs" / "cache").is_dir()
