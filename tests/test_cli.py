"""The ``ecotune`` command: exit codes and one-line errors (FakeEngine, no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecotune.cli import main
from ecotune.journal import open_journal

FAKE = {"base_url": "fake://", "model": "fake"}


def cfg(tmp_path: Path, **kw: Any) -> Path:
    d: dict[str, Any] = {
        "name": "c", "task": {"name": "arithmetic", "n": 60}, "engine": FAKE,
        "search_space": {"temperature": {"type": "float", "low": 0.0, "high": 1.0}},
        "fixed": {"max_tokens": 3, "few_shot": 1},
        "budget_tokens": 1500, "r_min": 2, "r_max": 8, "optimizer": "random", "max_trials": 4,
        "workdir": str(tmp_path / "runs"),
    }
    d.update(kw)
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_tune_then_refuse_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = cfg(tmp_path)
    rc, out, _ = run(capsys, "tune", "--config", str(p), "--plain")
    assert rc == 0 and "stop reason" in out
    rc, _, err = run(capsys, "tune", "--config", str(p))
    assert rc == 2 and "ecotune resume" in one_error_line(err)
    rc, out, _ = run(capsys, "resume", "--config", str(p), "--plain")
    assert rc == 0 and "resuming" in out
    journal = tmp_path / "runs" / "c" / "journal.jsonl"
    rc, out, _ = run(capsys, "resume", "--journal", str(journal), "--plain")
    assert rc == 0
    recs = open_journal(journal).records()
    tells = [r for r in recs if r["type"] == "tell"]
    assert len(tells) == 4
    assert sum(r["result"]["tokens"] for r in tells) <= 1500


def test_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = cfg(tmp_path)
    rc, _, _ = run(capsys, "tune", "--config", str(p), "--optimizer", "qmc", "--budget", "900",
                   "--seed", "3", "--name", "c2", "--plain")
    assert rc == 0
    head = open_journal(tmp_path / "runs" / "c2" / "journal.jsonl").records()[0]
    assert (head["optimizer"], head["budget_tokens"], head["seed"]) == ("qmc", 900, 3)


@pytest.mark.parametrize("change, needle", [
    ({"r_min": 9, "r_max": 8}, "r_min (9) must be <= r_max (8)"),
    ({"init_fidelity": 1000}, "init_fidelity (1000) must be within r_min"),
    ({"optimizer": "nope"}, "unknown optimizer 'nope'"),
    ({"noise": "gaussian"}, "noise: Input should be 'auto', 'binomial', 'scaled', 'shared' or 'adjusted'"),
    ({"task": {"name": "chess"}}, "unknown task 'chess'"),
    ({"budget_tokens": 3}, "below the worst case of a single instance"),
    ({"r_max": 500}, "r_max (500) is larger than task"),
])
def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              change: dict, needle: str) -> None:
    rc, _, err = run(capsys, "tune", "--config", str(cfg(tmp_path, **change)))
    assert rc == 2
    assert needle in one_error_line(err)


def test_bad_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  task: : [\n")
    rc, _, err = run(capsys, "tune", "--config", str(bad))
    assert rc == 2 and "YAML does not parse at line" in one_error_line(err)
    rc, _, err = run(capsys, "tune", "--config", str(tmp_path / "none.yaml"))
    assert rc == 2 and "config file not found" in one_error_line(err)
    rc, _, err = run(capsys, "resume", "--journal", str(tmp_path / "none.jsonl"))
    assert rc == 2 and "no study journal" in one_error_line(err)


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "tune")
    assert rc == 2 and "--config" in one_error_line(err)
    rc, _, err = run(capsys, "frobnicate")
    assert rc == 2 and "invalid choice" in one_error_line(err)
    rc, _, _ = run(capsys)
    assert rc == 2
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "tune" in out


def test_unreachable_engine_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = cfg(tmp_path, engine={"base_url": "http://127.0.0.1:9", "model": "m", "max_retries": 0})
    rc, _, err = run(capsys, "tune", "--config", str(p))
    assert rc == 1 and "unreachable" in one_error_line(err)


def test_score_delegates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecotune.tasks import make_task

    task = make_task({"name": "arithmetic", "n": 5})
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"id": i.id, "completion": f" {i.reference}"}) + "\n"
                               for i in task.instances()))
    rc = main(["score", "--task", "arithmetic", "--samples", str(samples)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.strip() == "accuracy: 1.000  (n=5)"
    # half the answers wrong: the score says so
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    for r in rows[:2]:
        r["completion"] = " -1"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["score", "--task", "arithmetic", "--samples", str(samples), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["score"] == pytest.approx(3 / 5)
    # an id the task does not have: a clear error and exit 2
    samples.write_text(json.dumps({"id": "nope", "completion": "1"}) + "\n")
    rc = main(["score", "--task", "arithmetic", "--samples", str(samples)])
    _, err = capsys.readouterr()
    assert rc == 2 and "unknown id 'nope'" in err and "Traceback" not in err


def test_bench_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--help"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "collect" in out and "run" in out


def test_interrupt_exit_130(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ecotune import trial_runner as runner

    calls = {"n": 0}
    real = runner.EngineEvaluator.evaluate

    def evaluate(self, trial):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, trial)

    monkeypatch.setattr(runner.EngineEvaluator, "evaluate", evaluate)
    p = cfg(tmp_path)
    rc, _, err = run(capsys, "tune", "--config", str(p), "--plain")
    assert rc == 130 and "ecotune resume --config" in err and "Traceback" not in err
    monkeypatch.setattr(runner.EngineEvaluator, "evaluate", real)
    rc, _, _ = run(capsys, "resume", "--config", str(p), "--plain")
    assert rc == 0
    recs = open_journal(tmp_path / "runs" / "c" / "journal.jsonl").records()
    assert sorted(r["trial_id"] for r in recs if r["type"] == "tell") == [0, 1, 2, 3]
