"""Study config validation and run_tune on the FakeEngine (no server needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecotune.config import (
    LocalEngine,
    StudyConfig,
    StudyConfigError,
    config_from_journal,
    load_study_config,
    validate_study_config,
)
from ecotune.journal import open_journal
from ecotune.study import best_from_journal, default_space, run_tune
from ecotune.tasks import make_task

FAKE = {"base_url": "fake://", "model": "fake"}


def base(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "t", "task": {"name": "arithmetic", "n": 60}, "engine": FAKE,
        "search_space": {"temperature": {"type": "float", "low": 0.0, "high": 1.0},
                         "max_tokens": {"type": "int", "low": 1, "high": 6}},
        "budget_tokens": 2000, "r_min": 2, "r_max": 10, "optimizer": "random",
        "max_trials": 6, "workdir": str(tmp_path / "runs"),
    }
    d.update(kw)
    return d


def write(tmp_path: Path, data: Any, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


# ------------------------------------------------------------------------ validation
def test_valid_config_and_defaults(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path, **{"lambda": 0.3}))
    assert cfg.lam == 0.3 and cfg.dump()["lambda"] == 0.3
    assert cfg.journal_uri == str(tmp_path / "runs" / "t" / "journal.jsonl")
    assert cfg.engine.base_url == "fake://"
    local = validate_study_config(base(tmp_path, engine="local"))
    assert isinstance(local.engine, LocalEngine)
    assert StudyConfig.model_validate(local.dump()).dump() == local.dump()
    s3 = validate_study_config(base(tmp_path, workdir="s3://b/p"))
    assert s3.journal_uri == "s3://b/p/t/journal"


@pytest.mark.parametrize("change, needle", [
    ({"r_min": 20, "r_max": 10}, "r_min (20) must be <= r_max (10)"),
    ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
    ({"task": {"name": "nope"}}, "unknown task 'nope'"),
    ({"budget_tokens": 0}, "budget_tokens"),
    ({"colour": "red"}, "colour: unknown field"),
    ({"engine": {"base_url": "http://x"}}, "engine.model"),
    ({"engine": 5}, "engine must be 'local'"),
    ({"fixed": {"temprature": 1}}, "unknown setting(s) ['temprature']"),
    ({"search_space": {"temperature": {"type": "float", "low": 2, "high": 1}}}, "search_space"),
    ({"tau": 0.1, "optimizer": "random"}, "tau applies only"),
    ({"max_failed_trials": 0}, "max_failed_trials: Input should be greater than or equal to 1"),
])
def test_invalid_configs(tmp_path: Path, change: dict, needle: str) -> None:
    with pytest.raises(StudyConfigError) as ei:
        validate_study_config(base(tmp_path, **change))
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError, match="config file not found"):
        load_study_config(tmp_path / "missing.yaml")
    bad = write(tmp_path, "name: x\ntask: [unclosed\n")
    with pytest.raises(StudyConfigError, match=r"YAML does not parse at line \d+"):
        load_study_config(bad)
    with pytest.raises(StudyConfigError, match="must be a mapping"):
        load_study_config(write(tmp_path, "- a\n- b\n", "l.yaml"))
    with pytest.raises(StudyConfigError, match="empty"):
        load_study_config(write(tmp_path, "", "e.yaml"))
    cfg = load_study_config(write(tmp_path, base(tmp_path)), budget_tokens=99, seed=None)
    assert cfg.budget_tokens == 99 and cfg.seed == 0


def test_default_space_fits_task() -> None:
    sp = default_space(make_task({"name": "arithmetic", "n": 10}))
    assert "few_shot" in sp.params and sp.params["few_shot"].high == 8
    assert sp.params["max_tokens"].low == 1 and sp.params["max_tokens"].high == 8


# ------------------------------------------------------------------------ run_tune
def test_r_max_above_task_size(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path, r_max=100))
    with pytest.raises(StudyConfigError, match=r"r_max \(100\) is larger than task"):
        run_tune(cfg, stream=io.StringIO())


def test_held_out_too_large(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path, promotion={"enabled": True, "held_out": 55}))
    with pytest.raises(StudyConfigError, match="held-out"):
        run_tune(cfg, stream=io.StringIO())


def test_budget_below_one_instance(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path, budget_tokens=5))
    with pytest.raises(StudyConfigError, match="below the worst case of a single instance"):
        run_tune(cfg, stream=io.StringIO())
    assert not Path(cfg.journal_uri).exists()  # nothing written


def test_run_tune_fake_engine_and_resume_guard(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path))
    out = io.StringIO()
    summary = run_tune(cfg, stream=out)
    assert summary["trials"] == 6 and summary["tokens_used"] <= 2000
    recs = open_journal(cfg.journal_uri).records()
    tells = [r for r in recs if r["type"] == "tell"]
    assert sum(r["result"]["tokens"] for r in tells) == summary["tokens_used"]
    inst = [r for r in recs if r["type"] == "instance"]
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in inst) == summary["tokens_used"]
    head = recs[0]
    assert head["type"] == "study" and head["study_config"]["name"] == "t"
    assert head["tags"]["ecotune.task"] == "arithmetic" and "spec" in head
    text = out.getvalue()
    assert "trial   0" in text and "stop reason" in text
    # a new study over the journal is refused; resume is allowed
    with pytest.raises(StudyConfigError, match="ecotune resume"):
        run_tune(cfg, stream=io.StringIO())
    again = run_tune(cfg, resume=True, stream=io.StringIO())
    assert again["trials"] == 6 and again["tokens_used"] == summary["tokens_used"]
    # resume from the journal alone
    assert config_from_journal(cfg.journal_uri).dump()["name"] == "t"
    assert best_from_journal(recs, cfg.r_max)[0] is not None


def test_resume_without_journal(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path))
    with pytest.raises(StudyConfigError, match="nothing to resume"):
        run_tune(cfg, resume=True, stream=io.StringIO())


def test_resume_with_changed_config_is_refused(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path))
    run_tune(cfg, stream=io.StringIO())
    other = validate_study_config(base(tmp_path, budget_tokens=3000))
    with pytest.raises(StudyConfigError, match="another study"):
        run_tune(other, resume=True, stream=io.StringIO())


def test_best_from_journal_prefers_top_fidelity() -> None:
    recs = [
        {"type": "ask", "trial": {"id": 0, "config": {"a": 0}, "fidelity": 2, "token_limit": 9}},
        {"type": "ask", "trial": {"id": 1, "config": {"a": 1}, "fidelity": 10, "token_limit": 9}},
        {"type": "tell", "trial_id": 0, "result": {"score": 0.9, "n_evaluated": 2,
                                                   "status": "complete"}},
        {"type": "tell", "trial_id": 1, "result": {"score": 0.5, "n_evaluated": 10,
                                                   "status": "complete"}},
    ]
    assert best_from_journal(recs, 10) == ({"a": 1}, 0.5)
    assert json.dumps(best_from_journal([], 10)) == "[null, null]"


def test_live_progress_display(tmp_path: Path) -> None:
    cfg = validate_study_config(base(tmp_path, max_trials=2))
    out = io.StringIO()
    run_tune(cfg, stream=out, live=True)
    text = out.getvalue()
    assert "tokens" in text and "best score" in text and "stop reason" in text


def test_study_over_presets(tmp_path: Path) -> None:
    presets = [{"temperature": 0.0, "max_tokens": 4}, {"temperature": 0.7, "max_tokens": 2},
               {"temperature": 0.3, "max_tokens": 6}]
    cfg = validate_study_config(base(tmp_path, optimizer="ecotune", candidates=presets,
                                     max_trials=8))
    run_tune(cfg, stream=io.StringIO())
    asked = [r["trial"]["config"] for r in open_journal(cfg.journal_uri).records()
             if r["type"] == "ask"]
    assert asked and all({k: c[k] for k in ("temperature", "max_tokens")} in presets
                         for c in asked)
    bad = validate_study_config(base(tmp_path / "b", candidates=[{"temperature": 3.0}]))
    with pytest.raises(StudyConfigError, match="candidate 0: temperature=3.0 is outside"):
        run_tune(bad, stream=io.StringIO())
