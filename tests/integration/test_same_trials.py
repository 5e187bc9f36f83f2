"""Same study, same trials: ``ecotune tune`` and the compiled pipeline under
``kfp.local.SubprocessRunner`` ask the same first trials for the same config and seed.

Both run against the fake engine (``fake://``, in every step's own process), on local
paths: no server is needed, but every pipeline step is a subprocess, so it is slow. One
trial per round (``batch_size=1``), as ``ecotune tune`` asks them one at a time.
"""

import io
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 3


def test_tune_and_the_pipeline_ask_the_same_first_trials(tmp_path, monkeypatch):
    import kfp.local

    from components.chart_config import ChartConfig
    from ecotune.config import validate_study_config
    from ecotune.journal import open_journal
    from ecotune.study import run_tune
    from pipelines.ecotune_loop import PipelineOptions, build_pipeline
    from pipelines.submit import pipeline_arguments

    study = {"name": "same-trials", "task": {"name": "arithmetic", "n": 30},
             "optimizer": "ecotune", "budget_tokens": 20_000, "r_min": 2, "r_max": 6,
             "seed": 5, "max_trials": ROUNDS,
             "search_space": {"temperature": {"type": "float", "low": 0.0, "high": 1.0},
                              "max_tokens": {"type": "int", "low": 2, "high": 6},
                              "few_shot": {"type": "int", "low": 0, "high": 2}}}
    cli = validate_study_config({**study, "engine": {"base_url": "fake://", "model": "fm"},
                                 "workdir": str(tmp_path / "runs")})
    run_tune(cli, stream=io.StringIO())

    chart = ChartConfig.of({"version": 1, "study": {**study, "model": "fm"},
                            "engine": {"type": "service", "base_url": "fake://"}})
    args = pipeline_arguments(chart, batch_size=1)  # what the submitter hands the pipeline
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.chdir(tmp_path)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(tmp_path / "pipeline-root"))
    pipeline = build_pipeline(PipelineOptions(max_rounds=ROUNDS, parallelism=1,
                                              s3_secret=None))
    pipeline(**{**args, "journal_uri": str(tmp_path / "journal"),
                "subsets_uri": str(tmp_path / "store")})

    (run,) = [p for p in (tmp_path / "journal").iterdir()]
    piped = open_journal(str(run)).records()
    tuned = open_journal(cli.journal_uri).records()

    def asks(recs):
        return [r["trial"] for r in recs if r["type"] == "ask"]

    assert len(asks(tuned)) == ROUNDS
    assert asks(piped) == asks(tuned)
    head = [next(r for r in recs if r["type"] == "study") for recs in (piped, tuned)]
    assert head[0]["prompt_tokens_hint"] == head[1]["prompt_tokens_hint"]
    assert [r["type"] for r in piped].count("final") == 1
