"""Warm start: reading an earlier study's journal, the space-mismatch case, prior data that
is never charged, identical replay of a resumed warm-started study, config validation."""

import json

import numpy as np
import pytest

from ecotune.config import StudyConfigError, validate_study_config
from ecotune.construct import build_optimizer
from ecotune.journal import JournalError, open_journal
from ecotune.optimizers import make_optimizer
from ecotune.space import SearchSpace
from ecotune.tasks import make_task
from ecotune.trial import TrialResult
from ecotune.warmstart import WarmStartError, clip_config, read_warm_start, study_identity

SPACE = {"temperature": {"type": "float", "low": 0.0, "high": 1.5},
         "top_p": {"type": "float", "low": 0.1, "high": 1.0},
         "max_tokens": {"type": "int", "low": 4, "high": 64}}


def score_of(config: dict) -> float:
    """A smooth landscape: best near temperature 0.3, top_p 0.8, max_tokens >= 16."""
    t, p, m = config.get("temperature", 0.0), config.get("top_p", 1.0), config["max_tokens"]
    return float(np.clip(0.9 - (t - 0.3) ** 2 - 0.5 * (p - 0.8) ** 2 - 0.3 * (m < 16), 0, 1))


def result_for(trial) -> TrialResult:
    n = trial.fidelity
    return TrialResult.for_trial(trial, score=round(score_of(trial.config) * n) / n,
                                 tokens=min(trial.token_limit, 30 * n), n_evaluated=n)


def run(opt, trials: int) -> list:
    asked = []
    for _ in range(trials):
        t = opt.ask()
        if t is None:
            break
        asked.append((t.id, t.config, t.fidelity))
        opt.tell(t, result_for(t))
    return asked


def study(tmp_path, name: str, **over) -> dict:
    return {"name": name, "task": {"name": "arithmetic", "n": 60}, "search_space": SPACE,
            "budget_tokens": 40_000, "r_min": 4, "r_max": 16, "seed": 0,
            "journal": str(tmp_path / name / "journal.jsonl"), **over}


def built(data: dict, model: str = "m1"):
    cfg = validate_study_config(data)
    return build_optimizer(cfg, make_task(cfg.task), model=model)


@pytest.fixture
def earlier(tmp_path):
    """A finished earlier study of 12 trials; returns its journal."""
    opt = built(study(tmp_path, "week1"))
    run(opt, 12)
    return str(tmp_path / "week1" / "journal.jsonl")


def test_reading_a_previous_journal_takes_its_champion_and_observations(tmp_path, earlier):
    opt = built(study(tmp_path, "week2"))  # only for its header: same task, model and space
    head = opt.state.journal.records()[0]
    ws = read_warm_start(earlier, space=opt.space, identity=study_identity(head), top_k=3,
                         r_max=16)
    champion, score = built(study(tmp_path, "week1")).best()
    assert ws.matched and ws.configs[0] == champion
    assert len(ws.configs) == 3 and len({json.dumps(c, sort_keys=True) for c in ws.configs}) == 3
    told = [r for r in open_journal(earlier).records() if r["type"] == "tell"]
    assert len(ws.observations) == len(told) == 12
    assert {"config", "n", "score", "prompt_tokens", "completion_tokens"} <= set(ws.observations[0])
    with pytest.raises(WarmStartError, match="no study journal"):
        read_warm_start(str(tmp_path / "nothing.jsonl"), space=opt.space, identity={})


def test_a_different_space_takes_only_the_configs_clipped_into_it(tmp_path, earlier):
    narrow = {"temperature": {"type": "float", "low": 0.0, "high": 0.2},
              "max_tokens": {"type": "int", "low": 8, "high": 32},
              "top_k": {"type": "int", "low": 1, "high": 100}}
    opt = built(study(tmp_path, "narrow", search_space=narrow,
                      warm_start={"journal": earlier, "top_k": 4}))
    ws = opt.state.warm_start
    assert not ws["matched"] and ws["observations"] == [] and "space differs" in ws["reason"]
    space = opt.space
    for c in ws["configs"]:
        assert set(c) <= set(space.params) and "top_p" not in c
        assert 0.0 <= c["temperature"] <= 0.2 and 8 <= c["max_tokens"] <= 32
        assert c == space.canonical(space.validate_config(c))
    # the warm configs run first, then the HELM default; no prior data reaches the GP
    assert opt.initial_configs[:len(ws["configs"])] == ws["configs"]
    assert opt.state.observations()[0].shape == (0, space.dim)
    # another model: configs only as well
    other = built(study(tmp_path, "other-model", warm_start={"journal": earlier}), model="m2")
    assert other.state.warm_start["reason"] == "configs only: the model differs"


def test_clip_config_drops_foreign_settings_and_bad_values():
    space = SearchSpace.from_dict({
        "decoding": {"type": "categorical", "choices": ["greedy", "sample"]},
        "temperature": {"type": "float", "low": 0.1, "high": 1.0,
                        "condition": {"param": "decoding", "values": ["sample"]}}})
    assert clip_config(space, {"decoding": "beam", "temperature": 0.5, "seed": 3}) == \
        {"decoding": "greedy"}
    assert clip_config(space, {"decoding": "sample", "temperature": "hot"}) == \
        {"decoding": "sample", "temperature": space.params["temperature"].neutral()}
    assert clip_config(space, {"decoding": "sample", "temperature": 9.0})["temperature"] == 1.0


def test_prior_observations_are_not_charged_and_are_not_results(tmp_path, earlier):
    opt = built(study(tmp_path, "warm", warm_start={"journal": earlier, "top_k": 2}))
    st = opt.state
    assert st.tokens_used == 0 and st.budget.remain == 40_000 and st.results == {}
    assert opt.best() == (None, None) and st.n_asked == 0
    X, n, y = st.observations()
    assert len(y) == 12 and n.max() <= 16
    assert len(st.cost_model.obs) == 12  # the cost model learned from their token counts
    first = opt.ask()
    assert first.config == st.warm_start["configs"][0]  # the champion runs first
    assert first.token_limit <= 40_000
    opt.tell(first, result_for(first))
    assert st.tokens_used == st.results[first.id].tokens  # only this study's trial is charged
    # warm configs first, then the HELM default, then the GP straight away: no
    # space-filling initial design
    run(opt, 4)
    phases = [r["meta"].get("phase") for r in st.journal.records() if r["type"] == "ask"]
    n_initial = len(opt.initial_configs)
    assert n_initial == 3 and phases[:n_initial] == ["init"] * n_initial
    assert "init" not in phases[n_initial:]


def test_a_resumed_warm_started_study_replays_identically(tmp_path, earlier):
    data = study(tmp_path, "resumed", warm_start={"journal": earlier, "top_k": 3})
    straight = run(built({**data, "journal": str(tmp_path / "straight.jsonl")}), 9)
    first = run(built(data), 5)
    # the source changes (a later run of the earlier study, or it is gone): the resumed
    # study uses the warm start its journal header recorded
    open_journal(earlier).append({"type": "tell", "key": "tell:999", "trial_id": 999,
                                  "result": {}})
    (tmp_path / "week1" / "journal.jsonl").rename(tmp_path / "week1" / "moved.jsonl")
    resumed = built(data)
    assert resumed.state.n_asked == 5
    rest = run(resumed, 4)
    assert first + rest == straight


def test_resuming_with_another_warm_start_is_refused(tmp_path, earlier):
    space = SearchSpace.from_dict(SPACE)
    path = str(tmp_path / "j.jsonl")
    make_optimizer("random", space=space, budget_tokens=1000, r_min=1, r_max=4, journal=path,
                   warm_start={"source": earlier, "configs": [], "observations": []})
    with pytest.raises(JournalError, match="warm-started otherwise"):
        make_optimizer("random", space=space, budget_tokens=1000, r_min=1, r_max=4,
                       journal=path)


def test_previous_without_a_previous_run_starts_cold(tmp_path):
    opt = built(study(tmp_path, "cold", warm_start={"journal": "previous"}))
    assert opt.state.warm_start is None and "warm_start" not in opt.state.journal.records()[0]


@pytest.mark.parametrize(("warm", "optimizer", "match"), [
    ({"journal": "x", "top_k": 0, "observations": False}, "ecotune", "takes nothing"),
    ({"journal": ""}, "ecotune", "warm_start.journal"),
    ({"journal": "x", "top_k": -1}, "ecotune", "warm_start.top_k"),
    ({"journal": "x", "top": 3}, "ecotune", "warm_start.top: unknown field"),
    ({"journal": "x"}, "random", "warm_start applies only to optimizer 'ecotune'"),
    ({"journal": "runs/s/journal.jsonl"}, "ecotune", "own journal"),
])
def test_warm_start_config_errors_name_the_field(warm, optimizer, match):
    data = {"name": "s", "task": "arithmetic", "budget_tokens": 1000, "optimizer": optimizer,
            "warm_start": warm}
    with pytest.raises(StudyConfigError, match=match):
        validate_study_config(data)


def test_the_warm_start_benchmark_measures_tokens_to_the_first_studys_score(tmp_path):
    from ecotune.bench.warmstart import VARIANTS, warmstart_gain

    seen = []
    res = warmstart_gain("synthetic", seeds=1, budget=5000, workdir=str(tmp_path),
                         on_seed=seen.append)
    [row] = res["runs"]
    assert len(seen) == 1 and set(VARIANTS) <= set(row)
    assert row["cold"]["prior_observations"] == row["configs"]["prior_observations"] == 0
    assert row["warm"]["prior_observations"] > 0
    for v in VARIANTS:  # prior data is never charged: every second study within its budget
        assert 0 < row[v]["tokens_used"] <= 5000
    assert set(res["summary"]) >= {"cold", "configs", "warm", "warm_median_saving"}
    assert (tmp_path / "synthetic-first-0.jsonl").exists()


def test_prior_observations_reach_a_study_without_a_journal(earlier, tmp_path):
    ws = read_warm_start(earlier, space=SearchSpace.from_dict(SPACE), identity={}, top_k=1)
    prior = {**ws.to_dict(), "observations": [
        {"config": {"temperature": 0.3, "top_p": 0.8, "max_tokens": 32}, "n": 40,
         "score": 0.9, "prompt_tokens": 400, "completion_tokens": 80}]}
    opt = make_optimizer("ecotune", space=SearchSpace.from_dict(SPACE), budget_tokens=5000,
                         r_min=4, r_max=16, warm_start=prior)
    X, n, y = opt.state.observations()
    assert list(n) == [16.0] and list(y) == [0.9] and opt.tokens_used == 0


def test_bench_warmstart_command(tmp_path, capsys):
    from ecotune.bench.cli import main

    out = tmp_path / "ws.json"
    assert main(["warmstart", "--seeds", "1", "--budget", "4000", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["runs"]) == 1 and "warm_median_saving" in res["summary"]
    assert main(["warmstart", "--problem", "no-such-problem", "--seeds", "1"]) == 2
    assert "no-such-problem" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["warmstart", "--seeds", "0"])
    assert e.value.code == 2


def test_the_final_trial_can_confirm_a_prior_champion():
    """A champion measured on r_max by the earlier study only is measured again here (the
    study's answer counts only its own trials), rather than losing to a worse config."""
    space = SearchSpace.from_dict(SPACE)
    champion = {"temperature": 0.3, "top_p": 0.8, "max_tokens": 32}
    others = [{"temperature": t, "top_p": 0.4, "max_tokens": 8} for t in (0.1, 0.7, 1.2)]
    prior = {"source": "earlier", "matched": True, "configs": [], "observations": [
        {"config": c, "n": 16, "score": s, "prompt_tokens": 16 * 20, "completion_tokens": 16 * 10}
        for c, s in [(champion, 0.9)] + [(c, 0.1) for c in others]]}
    opt = make_optimizer("ecotune", space=space, budget_tokens=6000, r_min=4, r_max=16,
                         seed=0, warm_start=prior)
    key = tuple(space.encode(champion))

    def result(trial) -> TrialResult:
        s = 0.9 if np.allclose(space.encode(trial.config), key) else 0.1
        return TrialResult.for_trial(trial, score=s, tokens=min(trial.token_limit, 30 * trial.fidelity),
                                     n_evaluated=trial.fidelity)

    while (t := opt.ask()) is not None:
        opt.tell(t, result(t))
    config, score = opt.best()
    assert score == 0.9 and np.allclose(space.encode(config), key)
