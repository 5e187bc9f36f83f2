"""MLflow tracking and promotion against a real ``mlflow server`` (artifacts in SeaweedFS
S3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecotune.decoding import SamplingParams
from ecotune.journal import open_journal
from ecotune.tracking import report
from ecotune.trial import Trial, TrialResult

pytestmark = pytest.mark.integration
SECRET = "sk-integration-secret-98765"
STUDY = "qwen-mmlu-it"
S3: dict[str, Any] = {}  # the S3 server behind the artifact store, when there is one


@pytest.fixture(scope="module")
def mlflow_uri(mlflow_server: str, s3_server: dict[str, Any]) -> Iterator[str]:
    """The session's MLflow server (artifacts on the session's S3 server)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", SECRET)
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mp.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server["endpoint_url"])
    S3.update(s3_server)
    try:
        yield mlflow_server
    finally:
        mp.undo()


def _study() -> list[tuple[Trial, TrialResult]]:
    out = []
    for i, (fid, score) in enumerate([(2, 0.5), (2, 1.0), (4, 0.25), (4, 0.75),
                                      (8, 0.5), (8, 0.625)]):
        cfg = {"temperature": round(0.1 * i, 2), "top_p": 0.9, "few_shot": i % 3}
        out.append((Trial(i, cfg, fid, 4000, 100.0 * fid),
                    TrialResult(score, 50 * fid, 10 * fid, fid, wall_time_s=0.1 * i)))
    return out


SPEC = {"r_max": 8, "budget_tokens": 20000, "optimizer": {"name": "token_bo", "seed": 0},
        "space": {"temperature": {"low": 0.0, "high": 1.5}, "top_p": {"low": 0.5, "high": 1}},
        "engine": {"base_url": "http://vllm:8000", "model": "qwen", "api_key": SECRET}}
TAGS = {"ecotune.model": "qwen", "ecotune.task": "mmlu", "ecotune.optimizer": "token_bo"}


def _run_study(tracker: Any, name: str) -> list[dict[str, Any]]:
    tracker.on_study_start(name, SPEC, TAGS)
    items = [{"trial": t.to_dict(), "result": r.to_dict()} for t, r in _study()]
    rows = report.trial_rows(items)
    for (t, r), row in zip(_study(), rows, strict=True):
        tracker.on_trial_end(t, r, row["cumulative_tokens"], row["best_score"])
    tracker.on_study_end({"best_score": 0.625, "total_tokens": rows[-1]["cumulative_tokens"],
                          "n_trials": 6, "r_max": 8}, items)
    return rows


@pytest.fixture(scope="module")
def study(mlflow_uri: str) -> Any:
    from ecotune.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(experiment="ecotune-it")
    assert tracker.tracking_uri == mlflow_uri
    _run_study(tracker, STUDY)
    assert not tracker.dirty
    return tracker


def _children(tracker: Any) -> list[Any]:
    return tracker.client.search_runs(
        [tracker._experiment()], f"tags.`mlflow.parentRunId` = '{tracker.parent_run_id}'")


def test_parent_run(study: Any) -> None:
    c = study.client
    runs = c.search_runs([study._experiment()], f"tags.`ecotune.study` = '{STUDY}' and "
                         "tags.`ecotune.role` = 'study'")
    assert [r.info.run_id for r in runs] == [study.parent_run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    for k, v in TAGS.items():
        assert run.data.tags[k] == v
    p = run.data.params
    assert p["r_max"] == "8" and p["optimizer.name"] == "token_bo"
    assert p["engine.api_key"] == "***REDACTED***" and "space.temperature.low" not in p
    # the incumbent as the optimizer defines it (ecotune.best): the best among the trials
    # that measured the most instances so far, r_max-only once a trial reached r_max
    hist = c.get_metric_history(run.info.run_id, "best_score")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [
        (0, 0.5), (1, 1.0), (2, 0.25), (3, 0.75), (4, 0.5), (5, 0.625)]
    cum = sorted(c.get_metric_history(run.info.run_id, "cumulative_tokens"), key=lambda m: m.step)
    assert [m.value for m in cum] == [120, 240, 480, 720, 1200, 1680]
    assert run.data.metrics["final.total_tokens"] == 1680


def test_child_runs(study: Any) -> None:
    kids = sorted(_children(study), key=lambda r: int(r.data.tags["ecotune.trial_id"]))
    assert len(kids) == 6
    for (t, r), run in zip(_study(), kids, strict=True):
        assert run.data.tags["ecotune.status"] == "complete" and run.info.status == "FINISHED"
        assert run.data.params["config.temperature"] == str(t.config["temperature"])
        assert run.data.params["fidelity"] == str(t.fidelity)
        assert run.data.params["token_limit"] == "4000"
        m = run.data.metrics
        assert m["score"] == r.score and m["tokens"] == r.tokens
        assert m["prompt_tokens"] == r.prompt_tokens and "wall_time_s" in m
    assert kids[-1].data.metrics["cumulative_tokens"] == 1680


def test_artifacts_and_no_secrets(study: Any, tmp_path: Path) -> None:
    c = study.client
    arts = {a.path for a in c.list_artifacts(study.parent_run_id)}
    assert {"trials.csv", "best_vs_tokens.png", "score_vs_tokens.png", "best_config.yaml",
            "search_space.json"} <= arts
    d = Path(c.download_artifacts(study.parent_run_id, "", str(tmp_path)))
    assert (d / "trials.csv").read_text().count("\n") == 7
    assert (d / "best_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    assert "temperature: 0.5" in (d / "best_config.yaml").read_text()
    assert json.loads((d / "search_space.json").read_text()) == SPEC["space"]
    blobs = [p.read_bytes() for p in d.rglob("*") if p.is_file()]
    for run in [c.get_run(study.parent_run_id), *_children(study)]:
        blobs.append(json.dumps([run.data.params, run.data.tags]).encode())
    assert not any(SECRET.encode() in b for b in blobs)


def test_artifacts_live_in_s3(study: Any) -> None:
    assert S3, "the mlflow_uri fixture records the S3 server behind the artifact store"
    import boto3

    s3 = boto3.client("s3", endpoint_url=S3["endpoint_url"], aws_access_key_id=S3["access_key"],
                      aws_secret_access_key=S3["secret_key"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=S3["bucket"], Prefix="mlflow/")
            .get("Contents", [])]
    assert any(k.endswith(f"{study.parent_run_id}/artifacts/trials.csv") for k in keys), keys


def test_resume_is_idempotent(study: Any) -> None:
    from ecotune.tracking.mlflow_tracker import MlflowTracker

    again = MlflowTracker(experiment="ecotune-it")
    _run_study(again, STUDY)  # a resumed runner replaying the same events
    assert again.parent_run_id == study.parent_run_id
    assert len(_children(study)) == 6


def test_sync_from_journal_after_outage(mlflow_uri: str, tmp_path: Path) -> None:
    from ecotune.tracking.mlflow_tracker import MlflowTracker

    name = "outage-study"
    dead = MlflowTracker(experiment="ecotune-it", tracking_uri="http://127.0.0.1:9",
                         probe_timeout_s=0.5)
    journal = open_journal(tmp_path / "journal.jsonl")
    journal.append({"type": "study", "key": "study", "name": name, "spec": SPEC, "tags": TAGS})
    _run_study(dead, name)  # every hook fails quietly
    assert dead.dirty
    for t, r in _study():
        journal.append({"type": "ask", "key": f"ask:{t.id}", "trial": t.to_dict()})
        journal.append({"type": "tell", "key": f"tell:{t.id}", "trial_id": t.id,
                        "result": r.to_dict()})

    live = MlflowTracker(experiment="ecotune-it")
    assert live.sync_from_journal(journal.records()) == 6  # study name from the journal
    assert live.sync_from_journal(journal.records()) == 0
    kids = _children(live)
    assert sorted(int(r.data.tags["ecotune.trial_id"]) for r in kids) == list(range(6))
    hist = live.client.get_metric_history(live.parent_run_id, "best_score")
    assert max(hist, key=lambda m: m.step).value == 0.625  # the final incumbent, at r_max
    assert live.client.get_run(live.parent_run_id).data.tags["ecotune.model"] == "qwen"


# -- registry ---------------------------------------------------------------------------
def test_promotion_flow_and_pyfunc(mlflow_uri: str, vllm_server: str) -> None:
    """Promotion in the real registry, and the promoted pyfunc answering through real vLLM
    with exactly the promoted settings."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from ecotune.engines import OpenAIEngine
    from ecotune.tracking.registry import get_alias, promote, registered_model_name

    name = registered_model_name("HuggingFaceTB/SmolLM2-135M-Instruct", "arithmetic")
    eng = {"base_url": vllm_server, "model": "smollm2-135m-instruct",
           "api_key_env": "OPENAI_API_KEY"}
    c = MlflowClient(mlflow_uri)
    champ_scores = [0] * 10 + [1] * 2

    v1 = promote(name, {"temperature": 0.0}, eng, champ_scores, None, tags={"ecotune.study": "a"})
    assert v1.promoted and v1.aliases == ["challenger", "champion"] and v1.p_value is None

    better = [1] * 3 + [0] * 7 + [1] * 2  # b=3, c=0: p=1/8, better but not significant
    v2 = promote(name, {"temperature": 0.3}, eng, better, champ_scores)
    assert not v2.promoted and v2.p_value == pytest.approx(0.125)
    assert get_alias(c, name, "champion").version == v1.version
    assert get_alias(c, name, "challenger").version == v2.version

    cfg = {"temperature": 0.7, "top_p": 0.85, "top_k": 40, "min_p": 0.05, "max_tokens": 64,
           "repetition_penalty": 1.1, "presence_penalty": 0.2, "frequency_penalty": 0.1,
           "few_shot": 3}
    v3 = promote(name, cfg, eng, [1] * 12, champ_scores)  # b=10, c=0: p=1/1024
    assert v3.promoted and v3.p_value == pytest.approx(1 / 1024)
    assert get_alias(c, name, "champion").version == v3.version
    tags = c.get_model_version(name, v3.version).tags
    assert tags["ecotune.test"] == "mcnemar" and tags["ecotune.n"] == "12"
    assert float(tags["ecotune.p_value"]) == pytest.approx(1 / 1024)
    assert float(tags["ecotune.challenger_score"]) == 1.0
    assert float(tags["ecotune.champion_score"]) == pytest.approx(2 / 12)
    assert tags["ecotune.promoted"] == "true" and tags["ecotune.champion_version"] == v1.version
    assert c.get_model_version(name, v2.version).tags["ecotune.promoted"] == "false"

    v4 = promote(name, {"temperature": 0.9}, eng, [0.9, 0.8, 0.95] * 10, [0.5, 0.6, 0.4] * 10,
                 test="bootstrap")
    assert v4.promoted and v4.test == "bootstrap" and v4.p_value < 0.05

    # the champion (greedy, 4 tokens) answers through vLLM exactly as a direct request with
    # the same settings does: the settings travelled into the artefact and are sent
    prompts = ["2 + 3 =", "What is the capital of France?"]
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    impl = model.unwrap_python_model()
    want = SamplingParams.from_config({"temperature": 0.9}).to_request()
    assert impl.sampling == want and impl.engine["model"] == "smollm2-135m-instruct"
    greedy = {"temperature": 0.0, "max_tokens": 4}
    v5 = promote(name, greedy, eng, [1.0] * 30, [0.5, 0.6, 0.4] * 10, test="bootstrap")
    assert v5.promoted
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    got = model.predict(pd.DataFrame({"prompt": prompts}))
    with OpenAIEngine(vllm_server, "smollm2-135m-instruct", send_seed=False) as direct:
        ref = [c.text for c in direct.generate(prompts, SamplingParams.from_config(greedy))]
    assert got == ref and all(isinstance(t, str) for t in got)

    v3_model = mlflow.pyfunc.load_model(f"models:/{name}/{v3.version}")
    body = v3_model.unwrap_python_model().request_body("q")
    for k in ("temperature", "top_p", "top_k", "min_p", "max_tokens", "repetition_penalty",
              "presence_penalty", "frequency_penalty"):
        assert body[k] == cfg[k], k
    for k in ("length_penalty", "n"):  # unset settings are still sent, with neutral values
        assert k in body
    assert "few_shot" not in body and body["model"] == "smollm2-135m-instruct"
    (text,) = v3_model.predict(["1 + 1 ="])  # sampled, through real vLLM
    assert isinstance(text, str)
    mv_files = json.dumps(c.get_model_version(name, v3.version).tags)
    assert SECRET not in mv_files
