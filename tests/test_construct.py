"""One construction path: the same study config and seed ask the same trials in
``ecotune tune`` and in the pipeline's components; the chart's study config is one model."""

import io

import pytest

from components.chart_config import ChartConfig, ChartConfigError
from components.control_budget import control_budget
from components.evaluate_trial import evaluate_trial
from components.sample_dataset import sample_dataset
from components.update_surrogate import update_surrogate
from ecotune.config import validate_study_config
from ecotune.construct import build_optimizer, study_space
from ecotune.journal import open_journal
from ecotune.study import run_tune
from ecotune.tasks import make_task

#: search space keys deliberately not in name order: a pipeline sees them sorted
SPACE = {"temperature": {"type": "float", "low": 0.0, "high": 1.0},
         "max_tokens": {"type": "int", "low": 2, "high": 6},
         "few_shot": {"type": "int", "low": 0, "high": 2}}
STUDY = {"name": "same", "task": {"name": "arithmetic", "n": 40}, "optimizer": "ecotune",
         "budget_tokens": 20_000, "r_min": 2, "r_max": 8, "seed": 3, "max_trials": 7,
         "search_space": SPACE}


def chart_config(**study) -> dict:
    """The chart's form of :data:`STUDY` (the components' input)."""
    return {"version": 1, "study": {**STUDY, "model": "fake-model", **study},
            "engine": {"type": "service", "base_url": "fake://",
                       "served_model_name": "fake-model"},
            "tracking": {"enabled": False}}


def asks(journal: str) -> list[dict]:
    return [r["trial"] for r in open_journal(journal).records() if r["type"] == "ask"]


def run_components(cfg: dict, tmp_path, rounds: int) -> str:
    """The pipeline's steps in order, one trial per round, as the pipeline runs them."""
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                     journal_uri=str(tmp_path / "pipe"), run_key="run-1")
    for i in range(rounds):
        for item in update_surrogate.python_func(study=cfg, journal_uri=out.journal_uri,
                                                 manifest_uri=out.manifest_uri, q=1):
            evaluate_trial.python_func(study=cfg, trial=item, engine_url="fake://")
        if control_budget.python_func(study=cfg, journal_uri=out.journal_uri, round_index=i,
                                      max_rounds=rounds) != "continue":
            break
    return out.journal_uri


def test_same_config_and_seed_ask_the_same_trials_in_tune_and_in_the_components(tmp_path):
    """HELM default first, then the same Sobol points over the same (sorted) space and the
    same acquisition choices, with the same token limits (exact prompt tokens from the same
    engine) and predictions."""
    cli = validate_study_config({**STUDY, "engine": {"base_url": "fake://",
                                                     "model": "fake-model"},
                                 "workdir": str(tmp_path / "runs")})
    run_tune(cli, stream=io.StringIO())
    tuned = asks(cli.journal_uri)
    piped = asks(run_components(chart_config(), tmp_path, rounds=7))
    # 7 trials: the initial design (HELM default + Sobol) and then the GP's own choices
    assert len(tuned) == 7 and piped == tuned
    assert tuned[0]["config"]["temperature"] == 0.0  # the HELM default (greedy) comes first
    # the cost prior the study started with is in both headers, and equal
    heads = [next(r for r in open_journal(j).records() if r["type"] == "study")
             for j in (cli.journal_uri, str(tmp_path / "pipe" / "run-1"))]
    assert heads[0]["prompt_tokens_hint"] == heads[1]["prompt_tokens_hint"] != 200.0


def test_a_rebuild_without_an_engine_keeps_the_recorded_cost_prior(tmp_path):
    """Steps that only replay (evaluator, controller) reach no engine; the header's prior
    makes them price the study as the step that counted it."""
    from ecotune.engines import FakeEngine

    cfg = validate_study_config({**STUDY, "journal": str(tmp_path / "j.jsonl")})
    task = make_task(cfg.task)
    counted = build_optimizer(cfg, task, engine=FakeEngine())
    again = build_optimizer(cfg, task)
    hint = counted.state.cost_model.prompt_hint
    assert hint != 200.0 and again.state.cost_model.prompt_hint == hint
    assert again.state.min_trial_cost() == counted.state.min_trial_cost()


def test_space_is_in_name_order_and_max_tokens_pinned():
    cfg = validate_study_config({**STUDY, "search_space": {
        "temperature": SPACE["temperature"], "few_shot": SPACE["few_shot"]}})
    task = make_task(cfg.task)
    space, fixed = study_space(cfg, task)
    assert list(space.names) == sorted(space.names) == ["few_shot", "temperature"]
    assert fixed == {"max_tokens": task.default_max_tokens}


def test_chart_config_reads_back_what_kfp_hands_over():
    """A KFP Struct turns integers into floats and cannot hold nulls: dump() has none and
    of() reads floats back as the integers they were."""
    c = ChartConfig.of(chart_config(max_failed_trials=None))
    assert "max_failed_trials" not in c.dump()["study"]
    struct = {**c.dump(), "study": {**c.dump()["study"], "r_min": 2.0, "r_max": 8.0,
                                    "seed": 3.0, "budget_tokens": 20000.0}}
    back = ChartConfig.of(struct)
    assert (back.study.r_min, back.study.seed, back.study.budget_tokens) == (2, 3, 20000)
    assert back.study_config("j").model_dump() == c.study_config("j").model_dump()


@pytest.mark.parametrize("change, message", [
    ({"version": 2}, "not a version 1"),
    ({"study": {**chart_config()["study"], "colour": "red"}}, "study.colour: unknown field"),
    ({"study": {**chart_config()["study"], "r_min": 9}}, r"r_min \(9\) must be <= r_max"),
    ({"study": {**chart_config()["study"], "fixed": {"temp": 1}}}, "unknown setting"),
    ({"study": {**chart_config()["study"], "task": "nope"}}, "nope"),
    ({"engine": {"type": "service", "base_url": ""}}, "needs engine.base_url"),
    ({"storage": {"enabled": True}}, "storage.enabled needs storage.journal_uri"),
])
def test_chart_config_errors_name_the_field(change, message):
    with pytest.raises(ChartConfigError, match=message):
        ChartConfig.of({**chart_config(), **change})


def test_ecotune_only_settings_do_not_reach_other_optimizers():
    """The chart's defaults (tau, ...) apply to every study; only EcoTune takes them."""
    c = ChartConfig.of(chart_config(optimizer="random", tau=0.5, acquisition="paper"))
    s = c.study_config("j")
    assert s.optimizer == "random" and s.tau is None and s.acquisition is None


@pytest.mark.parametrize("key,value,attr", [("completion_cost", False, "completion_cost"),
                                            ("early_stopping", False, "early_stopping"),
                                            ("acquisition", "paper", "acquisition"),
                                            ("screen_value", "finish", "screen_value"),
                                            ("init_share", 0.25, "init_share"),
                                            ("init_fidelity", 7, "init_fidelity"),
                                            ("noise", "scaled", "noise"),
                                            ("noise", "adjusted", "noise"),
                                            ("final_trial", "last", "final_trial"),
                                            ("final_trial", "rung", "final_trial"),
                                            ("final_trial", "auto", "final_trial")])
def test_ecotune_only_settings_reach_the_optimizer_from_both_configs(tmp_path, key, value,
                                                                     attr):
    cfg = validate_study_config({**STUDY, key: value, "journal": str(tmp_path / "j.jsonl")})
    opt = build_optimizer(cfg, make_task(cfg.task))
    assert getattr(opt, attr) == value and opt._options[attr] == value
    ChartConfig.of(chart_config(**{key: value}))  # the chart's model takes it too
    with pytest.raises(ValueError, match=f"{key} applies only to optimizer 'ecotune'"):
        validate_study_config({**STUDY, key: value, "optimizer": "random"})
