"""One contract every optimizer passes, plus journal resume and the hard budget."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimizer_kit import LAND, SPACE, make_opt, tell

from ecotune.bench.synthetic import SyntheticEvaluator
from ecotune.journal import JournalError, open_journal
from ecotune.optimizers import OPTIMIZERS, make_optimizer
from ecotune.study_loop import run_study
from ecotune.trial import NOTHING_FIT, Trial, TrialResult, TrialStatus


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_contract(name):
    opt = make_opt(name)
    ev = SyntheticEvaluator(LAND)
    n = 0
    while (trial := opt.ask()) is not None:
        assert isinstance(trial, Trial) and trial.id == n
        assert 5 <= trial.fidelity <= 40
        assert 0 < trial.token_limit <= opt.state.budget.budget_tokens
        # canonical: every active setting is there, no inactive (inert) one
        active = {k for k in SPACE.names if SPACE.is_active(k, trial.config)}
        assert active <= set(trial.config) and set(trial.config) <= set(SPACE.names)
        assert SPACE.canonical(trial.config) == trial.config
        res = ev.evaluate(trial)
        assert res.tokens <= trial.token_limit
        tell(opt, trial, score=res.score, tokens=res.tokens, n_evaluated=res.n_evaluated)
        n += 1
    assert opt.stop_reason in {"budget", "exhausted", "max_trials", "converged"}
    assert opt.tokens_used <= 30_000
    cfg, score = opt.best()
    assert cfg is not None and 0.0 <= score <= 1.0


def test_unknown_optimizer_and_bad_fidelities():
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        make_optimizer("nope", space=SPACE, budget_tokens=10, r_min=1, r_max=2)
    with pytest.raises(ValueError, match=r"r_min \(9\) must be <= r_max \(3\)"):
        make_optimizer("random", space=SPACE, budget_tokens=10, r_min=9, r_max=3)
    with pytest.raises(ValueError, match="budget_tokens must be positive"):
        make_optimizer("random", space=SPACE, budget_tokens=0, r_min=1, r_max=3)


def test_tell_validation():
    opt = make_opt("random")
    t = opt.ask()
    with pytest.raises(ValueError, match="n_evaluated"):
        tell(opt, t, score=0.5, tokens=10, n_evaluated=t.fidelity + 1)
    with pytest.raises(ValueError, match="finite"):
        tell(opt, t, score=float("nan"), tokens=10, n_evaluated=1)
    tell(opt, t, score=0.5, tokens=10, n_evaluated=1)
    with pytest.raises(ValueError, match="already told"):
        tell(opt, t, score=0.5, tokens=10, n_evaluated=1)
    with pytest.raises(ValueError, match="never asked"):
        opt.tell(99, TrialResult(score=0.5, prompt_tokens=10, completion_tokens=0,
                                 n_evaluated=1))
    with pytest.raises(TypeError, match="TrialResult"):
        opt.tell(99, {"score": 0.5, "tokens": 10})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_from_journal_loses_and_double_counts_nothing(name, tmp_path):
    path = tmp_path / "journal.jsonl"
    ev = SyntheticEvaluator(LAND)
    opt = make_opt(name, journal=path)
    for _ in range(6):
        t = opt.ask()
        if t is None:
            break
        res = ev.evaluate(t)
        opt.tell(t, result=res)
    pending = opt.ask()  # asked, then the process "dies" before tell
    used = opt.tokens_used
    del opt
    again = make_opt(name, journal=path)
    assert again.tokens_used == used
    if pending is not None:
        t = again.ask()
        assert t == pending  # the interrupted trial is handed out again, same id
        again.tell(t, result=ev.evaluate(t))
    run_study(again, ev)
    recs = open_journal(path).records()
    tells = [r for r in recs if r["type"] == "tell"]
    asks = [r for r in recs if r["type"] == "ask"]
    assert len({r["trial_id"] for r in tells}) == len(tells) == len(asks)
    assert sum(r["result"]["tokens"] for r in tells) == again.tokens_used <= 30_000


def test_journal_of_another_study_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    make_opt("random", journal=path)
    with pytest.raises(JournalError, match="another study"):
        make_opt("qmc", journal=path)


def test_torn_journal_tail_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "j.jsonl"
    opt = make_opt("random", journal=path)
    t = opt.ask()
    tell(opt, t, score=0.5, tokens=100, n_evaluated=t.fidelity)
    with open(path, "ab") as f:
        f.write(b'{"type": "tell", "key": "tell:1", "trial_')  # crash mid-write
    again = make_opt("random", journal=path)
    assert again.tokens_used == 100
    t2 = again.ask()
    tell(again, t2, score=0.1, tokens=5, n_evaluated=1)
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.integers(50, 40_000), seed=st.integers(0, 10_000),
       name=st.sampled_from(["random", "qmc", "cmaes", "bohb", "helm"]),
       r_min=st.integers(1, 10), span=st.integers(0, 60), overshoot=st.floats(0, 1))
def test_budget_is_never_exceeded(budget, seed, name, r_min, span, overshoot):
    """Random workloads: the evaluator spends anything up to each trial's worst case."""
    rng = np.random.default_rng(seed)
    opt = make_optimizer(name, space=SPACE, budget_tokens=budget, r_min=r_min,
                         r_max=r_min + span, seed=seed,
                         prompt_tokens_hint=float(rng.integers(5, 300)))
    while (t := opt.ask()) is not None:
        per = opt.state.cost_model.worst_case_per_instance(int(t.config["max_tokens"]))
        n = min(t.fidelity, int(t.token_limit // per))
        spent = int(min(t.token_limit, n * per * (0.2 + 0.8 * overshoot)))
        assert spent <= t.token_limit
        tell(opt, t, score=float(rng.random()), tokens=spent, n_evaluated=n)
        assert opt.tokens_used <= budget
    assert opt.tokens_used <= budget


def test_ecotune_budget_never_exceeded_over_seeds():
    for seed in range(2):
        for budget in (2_000, 12_000):
            opt = make_optimizer("ecotune", space=SPACE, budget_tokens=budget, r_min=3,
                                 r_max=30, seed=seed)
            run_study(opt, SyntheticEvaluator(LAND))
            assert opt.tokens_used <= budget


def test_core_imports_no_io_frameworks():
    code = ("import sys, ecotune, ecotune.optimizers, ecotune.journal, ecotune.study_loop;"
            "from ecotune.optimizers import make_optimizer;"
            "make_optimizer('ecotune', space=ecotune.default_llm_space(), budget_tokens=10**4,"
            " r_min=1, r_max=5);"
            "bad=[m for m in ('kfp','kubernetes','mlflow','boto3') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ecotune_runs_initial_configs_first():
    default = {"decoding": "greedy", "temperature": 0.0, "top_p": 1.0, "top_k": 100,
               "min_p": 0.0, "max_tokens": 8, "repetition_penalty": 1.0, "length_penalty": 1.0,
               "few_shot": 5}
    opt = make_opt("ecotune", initial_configs=[default])
    t = opt.ask()
    canonical = {k: v for k, v in default.items()
                 if k not in ("temperature", "top_p", "top_k", "min_p")}  # inert under greedy
    assert t.config == canonical and opt.r_min <= t.fidelity <= opt.r_max
    opt.tell(t, result=SyntheticEvaluator(LAND).evaluate(t))
    assert opt.ask().config != canonical


# -- a finite candidate set (presets, or a recorded benchmark table) ----------------------
def _candidates(k=12, seed=4):
    from ecotune.bench.collect import sobol_configs

    return sobol_configs(SPACE, k, seed=seed)


def _key(cfg):
    return json.dumps({n: cfg[n] for n in SPACE.names if n in cfg}, sort_keys=True)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "helm"])
def test_every_proposal_is_a_candidate(name):
    cands = _candidates()
    keys = {_key(SPACE.validate_config(c)) for c in cands}
    opt = make_opt(name, candidates=cands)
    ev = SyntheticEvaluator(LAND)
    measured: dict[str, int] = {}
    while (trial := opt.ask()) is not None:
        k = _key(trial.config)
        assert k in keys
        if opt.candidate_aware:  # the model-based and random ones never re-measure
            assert measured.get(k, 0) < trial.fidelity, (k, trial.fidelity)
        res = ev.evaluate(trial)
        opt.tell(trial, result=res)
        measured[k] = max(measured.get(k, 0), res.n_evaluated)
    assert _key(opt.best()[0]) in keys
    if name in ("random", "botorch"):  # single fidelity over 12 configs: done after 12
        assert opt.stop_reason in {"exhausted", "budget"}
        assert len(opt.state.results) <= len(cands)


def test_random_over_candidates_is_a_seeded_order_without_repeats():
    cands = _candidates(8)
    opt = make_opt("random", budget=10**7, candidates=cands)
    seen = []
    while (t := opt.ask()) is not None:
        seen.append(_key(t.config))
        tell(opt, t, score=0.5, tokens=100, n_evaluated=t.fidelity)
    assert sorted(seen) == sorted(_key(SPACE.validate_config(c)) for c in cands)
    assert opt.stop_reason == "exhausted"


def test_bad_candidates_are_refused_with_the_culprit_named():
    good = _candidates(2)
    with pytest.raises(ValueError, match="at least one config"):
        make_opt("ecotune", candidates=[])
    with pytest.raises(ValueError, match=r"candidate 1: unknown parameter\(s\) colour"):
        make_opt("ecotune", candidates=[good[0], {**good[1], "colour": "red"}])
    with pytest.raises(ValueError, match="candidate 0: temperature=7.0 is outside the space"):
        make_opt("qmc", candidates=[{**good[0], "temperature": 7.0}])


def test_resume_with_candidates(tmp_path):
    cands = _candidates()
    path = tmp_path / "j.jsonl"
    ev = SyntheticEvaluator(LAND)
    opt = make_opt("ecotune", journal=path, candidates=cands)
    for _ in range(7):
        t = opt.ask()
        opt.tell(t, result=ev.evaluate(t))
    again = make_opt("ecotune", journal=path, candidates=cands)
    assert again.tokens_used == opt.tokens_used and len(again.state.results) == 7
    run_study(again, ev)
    assert again.tokens_used <= 30_000


@pytest.mark.parametrize("name", ["random", "ecotune"])
def test_consecutive_failed_trials_stop_the_study_and_survive_a_resume(name, tmp_path):
    """K failed trials in a row stop the study (``failed_trials``); a trial that did not
    fail in between resets the count; a resumed optimizer replays the count from the
    journal."""
    journal = str(tmp_path / "j.jsonl")
    opt = make_opt(name, journal=journal, max_failed_trials=3)

    def fail(t):
        tell(opt, t, tokens=7, n_evaluated=0, status="failed", error="EngineError: down")

    for ok in (False, False, True, False, False):
        t = opt.ask()
        if ok:
            tell(opt, t, score=0.5, tokens=50, n_evaluated=t.fidelity)
        else:
            fail(t)
    assert opt.state.budget.failed_streak == 2 and opt.state.budget.stop_reason(1.0) is None
    resumed = make_opt(name, journal=journal, max_failed_trials=3)
    assert resumed.state.budget.failed_streak == 2
    opt = resumed
    fail(opt.ask())
    assert opt.ask() is None and opt.stop_reason == "failed_trials"
    assert opt.summary()["stop_reason"] == "failed_trials"
    assert len(opt.state.results) == 6 and not opt.state.pending
    with pytest.raises(ValueError, match="max_failed_trials"):
        make_opt(name, max_failed_trials=0)


def test_study_state_is_what_callers_read(tmp_path):
    """The study's accounting lives in ``opt.state`` (public: told or not, the cheapest
    trial's worst case, the mean cost), and a proposer is only ever built over one."""
    from ecotune.optimizers import StudyState
    from ecotune.optimizers.simple import RandomSearch

    opt = make_opt("random", journal=tmp_path / "j.jsonl")
    st = opt.state
    assert isinstance(st, StudyState) and st.n_asked == 0
    assert st.mean_trial_cost() == max(st.min_trial_cost(), 1.0) > 0
    t = opt.ask()
    assert st.n_asked == 1 and t.id in st.pending and not st.is_told(t.id)
    tell(opt, t, score=0.5, tokens=120, n_evaluated=t.fidelity)
    assert st.is_told(t.id) and st.mean_trial_cost() == 120 and opt.tokens_used == 120
    assert opt.summary() == st.summary("random")
    again = make_opt("random", journal=tmp_path / "j.jsonl")
    assert again.state.is_told(t.id) and again.state.n_asked == 1
    with pytest.raises(TypeError, match="StudyState"):
        RandomSearch(SPACE)


@pytest.mark.parametrize("name", ["ecotune", "random", "bohb"])
def test_a_trial_that_cannot_run_ends_the_study(name, tmp_path):
    """A trial whose limit admits not even its first instance spends nothing; asking such
    trials again would loop forever. The study learns the limit did not fit and stops
    (``budget``) while less than that is left; a resumed study knows it too."""
    budget = int(make_opt(name).state.min_trial_cost()) + 1  # a first trial fits, barely
    opt = make_opt(name, journal=tmp_path / "j.jsonl", budget=budget)
    t = opt.ask()
    assert t.token_limit == budget  # the whole budget: its worst case is more
    opt.tell(t, TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                            status=TrialStatus.FAILED, error=NOTHING_FIT))
    assert opt.state.unaffordable == budget + 1 and opt.state.min_trial_cost() > budget
    assert opt.ask() is None and opt.stop_reason == "budget" and opt.tokens_used == 0
    again = make_opt(name, journal=tmp_path / "j.jsonl", budget=budget)
    assert again.state.unaffordable == budget + 1 and again.ask() is None


def test_a_limit_too_small_for_one_instance_is_raised_not_repeated():
    """The cost model's per-instance worst case can miss a per-trial overhead (BoTorch's
    WingWeight levels cost 140 tokens at r = 1 where 100 instances cost 4,100): a trial
    that could not run its first instance makes the next limits at least twice its own,
    so the study goes on measuring instead of asking the same hopeless trial again."""
    opt = make_opt("random", budget=100_000)
    t = opt.ask()
    opt.tell(t, TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                            status=TrialStatus.PARTIAL))
    assert opt.state.unaffordable == t.token_limit + 1
    t2 = opt.ask()
    assert t2 is not None and t2.token_limit >= 2 * (t.token_limit + 1)


def test_nothing_fit_is_not_an_engine_error():
    ok = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                     status=TrialStatus.PARTIAL)
    down = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                       status=TrialStatus.FAILED, error="ConnectError: refused")
    billed = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                         status=TrialStatus.FAILED, error=NOTHING_FIT, unsettled_tokens=9)
    assert ok.nothing_fit and not down.nothing_fit and not billed.nothing_fit


def test_a_config_tried_before_is_asked_exactly_as_it_ran():
    """Proposers work on encoded points, and decode(encode(config)) can move a float's last
    bit; a config already tried is asked as that trial ran it, so the trial runner (which
    keeps measured instances by the exact config) finds what it measured."""
    from ecotune.trial_runner import config_identity

    rng = np.random.default_rng(0)
    config = next(c for c in map(SPACE.canonical, SPACE.sample(rng, 2000))
                  if SPACE.canonical(SPACE.decode(SPACE.encode(c))) != c)
    again = SPACE.decode(SPACE.encode(config))
    opt = make_opt("random")
    proposals = iter([(config, 5, {}), (again, 20, {})])
    opt._propose = lambda: next(proposals)
    first = opt.ask()
    tell(opt, first, score=0.5, tokens=500)
    promoted = opt.ask()
    assert promoted.fidelity == 20 and promoted.config == first.config
    assert config_identity(promoted.config) == config_identity(first.config)
