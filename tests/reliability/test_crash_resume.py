"""SIGKILL the study at random points, resume, and check nothing is lost or counted twice."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import PY, ROOT, check_bill, check_journal, cli, raw_records, write_config

from ecotune.journal import open_journal
from ecotune.testing.faults import MODEL, FaultServer

BUDGET = 2500


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PY, "-m", "ecotune.cli", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _journal_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_tune_and_resume_loses_nothing(tmp_path: Path, counts) -> None:
    """`ecotune tune`, then `ecotune resume` killed with SIGKILL at random points, many
    times, against a faulty, slow OpenAI-compatible server that bills every token it
    generates (also for requests cut off by a kill, and for answers lost to a 500 or a
    dropped connection). The server's true bill stays within the budget, and the journal
    charges at least as much as the server billed."""
    rng = random.Random(7)
    kills_target = 15
    with FaultServer(random_rate=0.08, random_faults=["429", "503", "500", "drop"],
                     retry_after="0", latency_s=0.02, seed=3) as srv:
        cfg = write_config(tmp_path, engine={"base_url": srv.url, "model": MODEL,
                                             "max_concurrency": 2, "timeout_s": 5},
                           budget_tokens=BUDGET, optimizer="random")
        journal = tmp_path / "runs" / "rel" / "journal.jsonl"
        kills, attempts = 0, 0
        cmd = ("tune", "--config", str(cfg), "--plain")
        finished = False
        while kills < kills_target and attempts < kills_target * 3:
            attempts += 1
            p = _spawn(*cmd)
            before = _journal_lines(journal)
            # wait until the study is writing (past start-up), then a random extra delay
            deadline = time.monotonic() + 20
            while _journal_lines(journal) <= before and p.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                counts["kills_survived"] += 1
                # a torn tail is possible; the next resume must cope
            else:
                err = p.stderr.read().decode() if p.stderr else ""
                assert p.returncode == 0, err
                finished = True
                break
            if journal.exists():
                cmd = ("resume", "--config", str(cfg), "--plain")
        # finish the study without interruption
        if not finished:
            r = cli("resume", "--config", str(cfg), "--plain", timeout=180)
            assert r.returncode == 0, r.stderr
        counts["faults_injected"] += srv.faults_injected
        billed = srv.stats["billed_tokens"]
        recs = open_journal(journal).records()
        tot = check_journal(recs, BUDGET, raw=raw_records(journal))
        # the study is over: resuming again neither asks nor spends anything
        r = cli("resume", "--config", str(cfg), "--plain", timeout=120)
        assert r.returncode == 0, r.stderr
        assert srv.stats["billed_tokens"] == billed
    assert kills >= 10, f"only {kills} kills landed"
    assert tot["tells"] >= 5
    # answered instances were all billed; requests in flight at a kill were billed too, and
    # the journal still charges them (their holds were written before they were sent)
    assert tot["usage"] <= billed
    check_bill(tot["tokens"], billed, BUDGET)
    again = open_journal(journal).records()
    assert [x for x in again if x["type"] in ("ask", "tell", "instance")] == \
        [x for x in recs if x["type"] in ("ask", "tell", "instance")]


def test_torn_last_line_is_tolerated_and_repaired(tmp_path: Path, counts) -> None:
    """A kill mid-write leaves half a line: reads ignore it, the next append repairs it,
    and `ecotune resume` continues the study."""
    cfg = write_config(tmp_path, max_trials=6, budget_tokens=BUDGET)
    r = cli("tune", "--config", str(cfg), "--plain", "--optimizer", "random")
    assert r.returncode == 0, r.stderr
    journal = tmp_path / "runs" / "rel" / "journal.jsonl"
    data = journal.read_bytes()
    lines = data.splitlines(keepends=True)
    # drop the last tell and tear the line before it in half
    cut = len(data) - len(lines[-1]) - len(lines[-2]) // 2
    journal.write_bytes(data[:cut])
    counts["kills_survived"] += 1
    recs = open_journal(journal).records()
    assert len(recs) == len(lines) - 2
    r = cli("resume", "--config", str(cfg), "--plain")
    assert r.returncode == 0, r.stderr
    after = journal.read_bytes()
    intact = data[:cut].rfind(b"\n") + 1  # the torn half-line starts here
    assert after[:intact] == data[:intact]  # nothing before it was touched
    assert after[intact:].startswith(b"{") and after.endswith(b"\n")
    # every line now parses (the torn tail was truncated away before the append)
    raw = raw_records(journal)
    assert len(raw) == after.count(b"\n")
    check_journal(open_journal(journal).records(), BUDGET, raw=raw)


STEPS = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from components.control_budget import control_budget
    from components.evaluate_trial import evaluate_trial
    from components.sample_dataset import sample_dataset
    from components.update_surrogate import update_surrogate
    from components._common import rounds
    from ecotune.journal import open_journal
    from ecotune.testing.faults import MODEL
    study = {{"version": 1,
             "study": {{"name": "kfp", "model": MODEL,
                       "task": {{"name": "arithmetic", "n": 40}}, "optimizer": "random",
                       "budget_tokens": {budget}, "r_min": 2, "r_max": 6, "seed": 0,
                       "max_trials": 12, "search_space": None,
                       "fixed": {{"few_shot": 1, "max_tokens": 3}}}},
             "engine": {{"type": "service", "base_url": {url!r},
                        "served_model_name": MODEL, "max_concurrency": 1}},
             "tracking": {{"enabled": False}}}}
    url = {url!r}
    out = sample_dataset.python_func(study=study, subsets_uri={store!r},
                                     journal_uri={journal!r}, run_key="run", engine_url=url)
    while True:
        recs = open_journal(out.journal_uri).records()
        i = len(rounds(recs))
        if i and rounds(recs)[-1]["decision"] == "stop":
            print("DONE", flush=True)
            break
        for item in update_surrogate.python_func(study=study, journal_uri=out.journal_uri,
                                                 manifest_uri=out.manifest_uri, q=2,
                                                 engine_url=url):
            evaluate_trial.python_func(study=study, trial=item, engine_url=url)
        control_budget.python_func(study=study, journal_uri=out.journal_uri,
                                   round_index=i, max_rounds=8)
""")


def test_sigkill_between_and_inside_pipeline_steps(tmp_path: Path, counts) -> None:
    """The KFP components (``python_func``) killed mid-step and re-run: idempotent."""
    rng = random.Random(11)
    budget = 3000
    with FaultServer(latency_s=0.03) as srv:
        script = tmp_path / "steps.py"
        script.write_text(STEPS.format(root=str(ROOT), budget=budget, url=srv.url,
                                       store=str(tmp_path / "store"),
                                       journal=str(tmp_path / "journal")))
        journal = tmp_path / "journal" / "run"
        kills, done = 0, False
        for _ in range(8):
            p = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.6, 2.2))  # imports take ~0.5 s; then steps run
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                counts["kills_survived"] += 1
            else:
                out, err = p.communicate()
                assert p.returncode == 0, err
                done = "DONE" in out
                if done:
                    break
        if not done:
            p = subprocess.run([sys.executable, str(script)], cwd=ROOT, text=True,
                               capture_output=True, timeout=180)
            assert p.returncode == 0 and "DONE" in p.stdout, p.stderr
        billed = srv.stats["billed_tokens"]
    recs = open_journal(journal).records()
    tot = check_journal(recs, budget, raw=raw_records(journal / "journal.jsonl")
                        if (journal / "journal.jsonl").exists() else None)
    rr = [r for r in recs if r["type"] == "round"]
    assert [r["round"] for r in rr] == list(range(len(rr)))
    assert tot["usage"] <= billed
    check_bill(tot["tokens"], billed, budget)
    assert kills >= 3, f"only {kills} kills landed"
