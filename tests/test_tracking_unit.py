"""MLflow tracking without a server: params hygiene, reports, journal replay, and the
tracker and registry against a local SQLite store."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecotune.journal import open_journal
from ecotune.tracking import report
from ecotune.tracking.params import REDACTED, flatten, is_secret_key, redact, to_params
from ecotune.tracking.replay import trial_events
from ecotune.trial import Trial, TrialResult, TrialStatus

SECRET = "sk-unit-test-secret-1234"


def test_import_does_not_load_mlflow() -> None:
    code = ("import sys, ecotune.tracking, ecotune.tracking.stats, ecotune.tracking.report, "
            "ecotune.tracking.replay; assert 'mlflow' not in sys.modules, 'mlflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("key,secret", [
    ("api_key", True), ("OPENAI_API_KEY", True), ("engine.password", True), ("hf_token", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("Authorization", True), ("key", True),
    ("token_limit", False), ("max_tokens", False), ("budget_tokens", False),
    ("api_key_env", False), ("top_k", False), ("author", False), ("few_shot", False),
])
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_to_params_flattens_redacts_truncates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_KEY", SECRET)
    p = to_params({"a": {"b": 1, "api_key": "x"}, "long": "y" * 900,
                   "url": f"http://h/?k={SECRET}", "lst": [1, 2]})
    assert p["a.b"] == "1" and p["a.api_key"] == REDACTED and p["lst"] == "[1, 2]"
    assert len(p["long"]) == 500 and p["long"].endswith("...")
    assert SECRET not in p["url"]
    assert flatten({"a": {}}) == {"a": {}}
    assert redact({"x": [f"{SECRET}!"], "password": 1}) == {"x": [f"{REDACTED}!"],
                                                            "password": REDACTED}


def _rows() -> list[dict]:
    out = []
    for i, (fid, score) in enumerate([(2, 0.9), (8, 0.3), (8, 0.5), (2, None), (8, 0.4)]):
        t = Trial(i, {"temperature": i / 10}, fid, 500)
        r = TrialResult(score, 10 * (i + 1), 5, fid,
                        TrialStatus.FAILED if score is None else TrialStatus.COMPLETE)
        out.append({"trial": t.to_dict(), "result": r.to_dict()})
    return out


def test_trial_rows_running_totals_and_csv() -> None:
    rows = report.trial_rows(reversed(_rows()))
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["cumulative_tokens"] for r in rows] == [15, 40, 75, 120, 175]
    # the incumbent as the optimizer defines it (ecotune.best): the 0.9 on 2 instances is
    # the best until a trial measured r_max instances; from then on only those count
    assert [r["best_score"] for r in rows] == [0.9, 0.3, 0.5, 0.5, 0.5]
    assert report.best_row(rows)["id"] == 2
    table = list(csv.DictReader(io.StringIO(report.trials_csv(rows))))
    assert table[0]["config.temperature"] == "0.0" and table[3]["score"] == ""
    for make in (report.best_vs_tokens_figure, report.score_vs_tokens_figure):
        fig = make(rows)
        assert fig.axes
        report.close(fig)


def test_trial_events_from_journal(tmp_path: Path) -> None:
    j = open_journal(tmp_path / "j.jsonl")
    j.append({"type": "study", "key": "study", "name": "s"})
    for item in _rows():
        tid = item["trial"]["id"]
        j.append({"type": "ask", "key": f"ask:{tid}", "trial": item["trial"]})
        if tid != 4:  # trial 4 asked but never told: not an event
            j.append({"type": "tell", "key": f"tell:{tid}", "trial_id": tid,
                      "result": item["result"]})
    evs = trial_events(j.records())
    assert [e.trial.id for e in evs] == [0, 1, 2, 3]
    assert [e.cumulative_tokens for e in evs] == [15, 40, 75, 120]
    assert [e.best_score for e in evs] == [0.9, 0.3, 0.5, 0.5]
    assert evs[3].result.status == TrialStatus.FAILED


# -- against a local SQLite store --------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-local")


def _tracker(store: Path, **kw):  # noqa: ANN202
    from ecotune.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(experiment="unit", local_dir=store, **kw)


def test_tracker_local_store_roundtrip(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    tr = _tracker(store)
    assert tr.tracking_uri.startswith("sqlite:///")
    spec = {"r_max": 8, "space": {"temperature": [0.0, 1.0]},
            "engine": {"base_url": "http://h", "api_key": SECRET}}
    tr.on_study_start("study-a", spec, {"ecotune.model": "m", "ecotune.task": "t"})
    rows = _rows()
    for item, ev in zip(rows, report.trial_rows(rows), strict=True):
        t, r = Trial.from_dict(item["trial"]), TrialResult(**{
            k: v for k, v in item["result"].items() if k != "tokens"})
        tr.on_trial_end(t, r, ev["cumulative_tokens"], ev["best_score"])
    tr.on_trial_end(Trial.from_dict(rows[0]["trial"]), TrialResult(0.9, 10, 5, 2), 15, None)
    tr.on_study_end({"best_score": 0.5, "total_tokens": 175, "r_max": 8}, rows)
    assert not tr.dirty
    c = tr.client
    parent = c.get_run(tr.parent_run_id)
    assert parent.data.tags["ecotune.study"] == "study-a"
    assert parent.data.params["engine.api_key"] == REDACTED
    assert parent.data.metrics["final.best_score"] == 0.5
    children = c.search_runs([tr._experiment()],
                             f"tags.`mlflow.parentRunId` = '{tr.parent_run_id}'")
    assert sorted(int(r.data.tags["ecotune.trial_id"]) for r in children) == [0, 1, 2, 3, 4]
    arts = {a.path for a in c.list_artifacts(tr.parent_run_id)}
    assert {"trials.csv", "best_vs_tokens.png", "score_vs_tokens.png",
            "best_config.yaml", "search_space.json"} <= arts
    assert SECRET in json.dumps(spec)  # sanity: the input had it ...
    for run in [parent, *children]:  # ... and nothing logged does
        assert SECRET not in json.dumps([run.data.params, run.data.tags])

    # resume: a new tracker finds the same parent and re-syncing writes nothing
    tr2 = _tracker(store)
    tr2.on_study_start("study-a", spec, {})
    assert tr2.parent_run_id == tr.parent_run_id
    j = [{"type": "ask", "key": "ask:0", "trial": rows[0]["trial"]},
         {"type": "tell", "key": "tell:0", "trial_id": 0, "result": rows[0]["result"]}]
    assert tr2.sync_from_journal(j) == 0


def test_tracker_survives_dead_server(tmp_path: Path) -> None:
    tr = _tracker(tmp_path, tracking_uri="http://127.0.0.1:9", probe_timeout_s=0.5)
    t0 = time.monotonic()
    tr.on_study_start("s", {}, {})
    tr.on_trial_end(Trial(0, {}, 1, 10), TrialResult(1.0, 1, 1, 1), 2, 1.0)
    tr.on_study_end({}, [])
    assert tr.sync_from_journal([]) is None
    assert tr.dirty and time.monotonic() - t0 < 10


def test_registry_helpers_and_local_promotion(store: Path) -> None:
    from ecotune.tracking.registry import _engine, promote, registered_model_name

    assert registered_model_name("Qwen/Qwen2.5-0.5B", "mmlu") == "ecotune-Qwen-Qwen2.5-0.5B-mmlu"
    assert registered_model_name("a b//c", "x:y") == "ecotune-a-b-c-x-y"
    with pytest.raises(ValueError):
        _engine({"base_url": "u", "model": "m", "api_key": "sk"})
    with pytest.raises(ValueError):
        _engine({"base_url": "u"})
    eng = {"base_url": "http://127.0.0.1:9", "model": "m", "api_key_env": "OPENAI_API_KEY"}
    kw = {"tracking_uri": f"sqlite:///{store}/mlflow.db", "local_dir": str(store)}
    first = promote("ecotune-unit", {"temperature": 0.2}, eng, [1, 0, 1], **kw)
    assert first.promoted and first.p_value is None and "first" in first.reason
    second = promote("ecotune-unit", {"temperature": 0.4}, eng, [1, 1, 1], None, **kw)
    assert not second.promoted and second.aliases == ["challenger"]


def test_pyfunc_helpers() -> None:
    import pandas as pd

    from ecotune.tracking.pyfunc_model import _prompts, completions_url

    assert completions_url("http://h:8000") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/completions"
    assert _prompts(pd.DataFrame({"x": [1], "prompt": ["p"]})) == ["p"]
    assert _prompts(pd.DataFrame({"q": ["a", "b"]})) == ["a", "b"]
    assert _prompts("s") == ["s"] and _prompts(["a"]) == ["a"] and _prompts({"prompt": "z"}) == ["z"]
