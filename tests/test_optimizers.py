"""One contract every optimizer passes, plus journal resume and the hard budget."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecotune.bench.synthetic import SyntheticEvaluator, SyntheticLandscape, synthetic_space
from ecotune.journal import JournalError, open_journal
from ecotune.optimizers import OPTIMIZERS, make_optimizer
from ecotune.study_loop import run_study
from ecotune.surrogate import NOISE_SCALES
from ecotune.trial import NOTHING_FIT, Trial, TrialResult, TrialStatus

LAND = SyntheticLandscape(120, seed=3)
SPACE = synthetic_space()


def tell(opt, trial, **fields):
    """Tell ``trial`` a result built from a score and token counts."""
    opt.tell(trial, TrialResult.for_trial(trial, **fields))


#: optimizers whose every ask is an inner optimisation (one-shot KG: seconds per ask on
#: two cores): the contract is checked on fewer trials
SLOW = {"mfkg": {"max_trials": 8}}


def _make(name, journal=None, budget=30_000, **kw):
    kw = {**SLOW.get(name, {}), **kw}
    return make_optimizer(name, space=SPACE, budget_tokens=budget, r_min=5, r_max=40, seed=1,
                          journal=journal, **kw)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_contract(name):
    opt = _make(name)
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
    opt = _make("random")
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
    opt = _make(name, journal=path)
    for _ in range(6):
        t = opt.ask()
        if t is None:
            break
        res = ev.evaluate(t)
        opt.tell(t, result=res)
    pending = opt.ask()  # asked, then the process "dies" before tell
    used = opt.tokens_used
    del opt
    again = _make(name, journal=path)
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
    _make("random", journal=path)
    with pytest.raises(JournalError, match="another study"):
        _make("qmc", journal=path)


def test_torn_journal_tail_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "j.jsonl"
    opt = _make("random", journal=path)
    t = opt.ask()
    tell(opt, t, score=0.5, tokens=100, n_evaluated=t.fidelity)
    with open(path, "ab") as f:
        f.write(b'{"type": "tell", "key": "tell:1", "trial_')  # crash mid-write
    again = _make("random", journal=path)
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
    opt = _make("ecotune", initial_configs=[default])
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
    opt = _make(name, candidates=cands)
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
    opt = _make("random", budget=10**7, candidates=cands)
    seen = []
    while (t := opt.ask()) is not None:
        seen.append(_key(t.config))
        tell(opt, t, score=0.5, tokens=100, n_evaluated=t.fidelity)
    assert sorted(seen) == sorted(_key(SPACE.validate_config(c)) for c in cands)
    assert opt.stop_reason == "exhausted"


def test_bad_candidates_are_refused_with_the_culprit_named():
    good = _candidates(2)
    with pytest.raises(ValueError, match="at least one config"):
        _make("ecotune", candidates=[])
    with pytest.raises(ValueError, match=r"candidate 1: unknown parameter\(s\) colour"):
        _make("ecotune", candidates=[good[0], {**good[1], "colour": "red"}])
    with pytest.raises(ValueError, match="candidate 0: temperature=7.0 is outside the space"):
        _make("qmc", candidates=[{**good[0], "temperature": 7.0}])


def test_resume_with_candidates(tmp_path):
    cands = _candidates()
    path = tmp_path / "j.jsonl"
    ev = SyntheticEvaluator(LAND)
    opt = _make("ecotune", journal=path, candidates=cands)
    for _ in range(7):
        t = opt.ask()
        opt.tell(t, result=ev.evaluate(t))
    again = _make("ecotune", journal=path, candidates=cands)
    assert again.tokens_used == opt.tokens_used and len(again.state.results) == 7
    run_study(again, ev)
    assert again.tokens_used <= 30_000


@pytest.mark.parametrize("completion_cost", [True, False], ids=["default", "increment"])
def test_ecotune_promotes_incrementally_and_prunes_against_the_incumbent(completion_cost):
    """The lookahead EcoTune climbs fidelities of configs it measured, each step paying only
    the new instances (the replay keeps what a config measured), and once a config is
    measured at r_max it asks every later trial to stop below its lower bound. Priced by
    their own instances only, screens are most trials; priced with what they commit to (the
    default), the configs left below r_max are the ones that screened worse."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table
    from ecotune.pruning import incumbent_floor

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 40, seed=2), 40)
    opt = _make("ecotune", budget=60_000, max_trials=40, completion_cost=completion_cost)
    ev = ReplayEvaluator(table)
    seen, promotions = {}, 0
    while (t := opt.ask()) is not None:
        res = ev.evaluate(t)
        k = ev.hits[-1]
        if k in seen and t.fidelity > seen[k]:
            promotions += 1
            assert res.reused_tokens > 0  # the first instances were kept, not bought again
        seen[k] = max(seen.get(k, 0), res.n_evaluated)
        full = [r for r in opt.state.results.values() if r.n_evaluated >= opt.r_max]
        if full:
            best = max(full, key=lambda r: r.score)
            assert t.prune_below == pytest.approx(incumbent_floor(best.instance_scores))
        else:
            assert t.prune_below is None
        opt.tell(t, result=res)
    assert promotions >= 1
    results = list(opt.state.results.values())
    below = [r.score for r in results if r.n_evaluated < opt.r_max and r.score is not None]
    full = [r.score for r in results if r.n_evaluated >= opt.r_max]
    if completion_cost:
        assert below and full and np.mean(below) < np.mean(full)
    else:
        assert len(below) > len(results) / 2
    assert opt.best()[0] is not None and opt.tokens_used <= 60_000


@pytest.mark.parametrize("name", ["bohb", "asha"])
def test_syne_tune_peers_climb_its_rungs_paying_only_new_instances(name):
    """Syne Tune's own BOHB/ASHA decide which configs go on: each continuation asks the same
    config at the next rung (r_min·3^k, then r_max), and the replay keeps what it measured."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 30, seed=2), 40)
    opt = _make(name, budget=40_000)
    assert opt.rungs == [5, 15, 40]
    ev = ReplayEvaluator(table)
    climbs = 0
    while (t := opt.ask()) is not None:
        res = ev.evaluate(t)
        assert t.fidelity in opt.rungs
        if t.fidelity > opt.r_min:
            climbs += 1
            assert res.reused_tokens > 0  # the lower rung's instances were kept
        opt.tell(t, result=res)
    assert climbs >= 2 and opt.tokens_used <= 40_000


@pytest.mark.parametrize("name", ["bohb", "asha"])
def test_syne_tune_peers_are_reproducible_and_leave_the_global_rng_alone(name):
    """Syne Tune draws a new trial's bracket from NumPy's global RNG: one seed gave two
    different runs in one process. Each scheduler now has a global RNG of its own."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 30, seed=2), 40)

    def run(disturb: int) -> list[tuple[dict, int]]:
        np.random.seed(disturb)  # the caller's global RNG at another place each time
        opt, ev, asked = _make(name, budget=60_000), ReplayEvaluator(table), []
        while True:
            _, key, pos, *_ = np.random.get_state()
            if (t := opt.ask()) is None:
                break
            asked.append((t.config, t.fidelity))
            opt.tell(t, ev.evaluate(t))
            _, key2, pos2, *_ = np.random.get_state()
            assert pos2 == pos and (key2 == key).all()  # given back untouched
        return asked

    first = run(0)
    assert len(first) > 20 and run(12345) == first


def test_mfkg_does_not_depend_on_torch_global_rng():
    """One-shot KG's fantasies and restarts come from torch's global RNG; an mfkg run must
    ask the same whatever ran before it, and leave that RNG as it found it."""
    import torch

    def run(disturb: int) -> list[tuple[dict, int]]:
        torch.manual_seed(disturb)
        opt, ev, asked = _make("mfkg", max_trials=7), SyntheticEvaluator(LAND), []
        while True:
            before = torch.random.get_rng_state()
            if (t := opt.ask()) is None:
                break
            assert torch.equal(torch.random.get_rng_state(), before)
            asked.append((t.config, t.fidelity))
            opt.tell(t, ev.evaluate(t))
        return asked

    first = run(0)
    assert len(first) == 7 and run(777) == first


def test_mfkg_falls_back_to_its_sobol_design_when_kg_breaks_down(tmp_path, monkeypatch, caplog):
    """A numerical breakdown of one-shot KG (seen: NotPSDError, NaN acquisition values on
    Branin) gives the next Sobol config, logged, counted and journalled (a resume counts it
    again); any other error is raised."""
    import logging

    import botorch.optim
    from linear_operator.utils.errors import NotPSDError

    # an earlier test's logging config (dictConfig) may have disabled existing loggers
    peers_log = logging.getLogger("ecotune.optimizers.botorch_peers")
    monkeypatch.setattr(peers_log, "disabled", False)
    caplog.set_level(logging.WARNING, logger=peers_log.name)
    journal = str(tmp_path / "j.jsonl")
    opt, ev = _make("mfkg", journal=journal, max_trials=6, n_init=2), SyntheticEvaluator(LAND)
    real = botorch.optim.optimize_acqf

    def broken(acqf, *args, **kwargs):
        if type(acqf).__name__ == "qMultiFidelityKnowledgeGradient":
            raise NotPSDError("Matrix not positive definite after repeatedly adding jitter")
        return real(acqf, *args, **kwargs)

    phases = []
    while (t := opt.ask()) is not None:
        phases.append(opt.state.journal.records()[-1]["meta"]["phase"])
        opt.tell(t, ev.evaluate(t))
        if len(phases) == 3:
            monkeypatch.setattr(botorch.optim, "optimize_acqf", broken)
    assert phases[:2] == ["init", "init"] and "bo" in phases[2:3]
    assert phases[3:] == ["fallback"] * 3 and opt.fallbacks == 3
    assert "the knowledge gradient failed (Matrix not positive definite" in caplog.text
    assert _make("mfkg", journal=journal, max_trials=6, n_init=2).fallbacks == 3

    def wrong(acqf, *args, **kwargs):
        raise RuntimeError("The size of tensor a (3) must match the size of tensor b (4)")

    monkeypatch.setattr(botorch.optim, "optimize_acqf", wrong)
    opt = _make("mfkg", max_trials=6, n_init=2)
    with pytest.raises(RuntimeError, match="must match"):
        for _ in range(3):
            t = opt.ask()
            opt.tell(t, ev.evaluate(t))


def test_ecotune_init_share_spends_that_share_of_the_budget_on_the_initial_design(tmp_path):
    """With ``init_share`` the Sobol design goes on past ``n_init`` until that share of the
    budget is spent, then the search starts and the design never resumes; a resumed study
    knows the search has started."""
    journal = tmp_path / "j.jsonl"
    opt = _make("ecotune", journal=journal, budget=40_000, init_share=0.25)
    ev = SyntheticEvaluator(LAND)
    spent_at_ask = []
    while (t := opt.ask()) is not None:
        spent_at_ask.append(opt.tokens_used)
        opt.tell(t, ev.evaluate(t))
    phases = [r["meta"]["phase"] for r in open_journal(journal).records() if r["type"] == "ask"]
    first = next(i for i, p in enumerate(phases) if p != "init")
    assert "init" not in phases[first:] and first > opt.n_init
    assert spent_at_ask[first - 1] < 10_000 <= spent_at_ask[first]
    assert _make("ecotune", journal=journal, budget=40_000, init_share=0.25)._searching
    # with max_trials, the design also stops at that share of the trials: the search (and
    # the final trial at r_max) always get the rest
    capped = tmp_path / "capped.jsonl"
    opt = _make("ecotune", journal=capped, budget=10**7, max_trials=40, init_share=0.25)
    while (t := opt.ask()) is not None:
        opt.tell(t, ev.evaluate(t))
    phases = [r["meta"]["phase"] for r in open_journal(capped).records() if r["type"] == "ask"]
    assert phases[:10] == ["init"] * 10 and "init" not in phases[10:] and len(phases) == 40
    assert any(r.n_evaluated >= opt.r_max for r in opt.state.results.values())
    with pytest.raises(ValueError, match="init_share"):
        _make("ecotune", init_share=1.0)


def test_ecotune_initial_design_runs_at_init_fidelity(tmp_path):
    """Every config of the initial design is scored on ``init_fidelity`` instances; a level
    outside [r_min, r_max] is refused."""
    journal = tmp_path / "j.jsonl"
    opt = _make("ecotune", journal=journal, budget=40_000, init_fidelity=13)
    ev = SyntheticEvaluator(LAND)
    while (t := opt.ask()) is not None:
        opt.tell(t, ev.evaluate(t))
    asks = [r for r in open_journal(journal).records() if r["type"] == "ask"]
    init = [r["trial"]["fidelity"] for r in asks if r["meta"]["phase"] == "init"]
    assert len(init) >= opt.n_init and set(init) == {13} and opt._options["init_fidelity"] == 13
    assert _make("ecotune").init_fidelity == opt.r_min == 5  # the default: the first rung
    for bad in (4, 41):
        with pytest.raises(ValueError, match="init_fidelity"):
            _make("ecotune", init_fidelity=bad)


def test_smac_bohb_runs_hyperband_brackets_paying_only_new_instances():
    """SMAC3's own Hyperband decides which configs go on: a config asked again comes at a
    larger budget, and the replay keeps what its lower budget measured."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 30, seed=2), 40)
    opt = _make("smac_bohb", budget=40_000)
    ev = ReplayEvaluator(table)
    seen: dict[str, int] = {}
    climbs = 0
    while (t := opt.ask()) is not None:
        res = ev.evaluate(t)
        key = json.dumps(t.config, sort_keys=True)
        if key in seen:
            assert t.fidelity > seen[key]
            assert res.reused_tokens > 0  # the lower budget's instances were kept
            climbs += 1
        seen[key] = t.fidelity
        opt.tell(t, result=res)
    assert climbs >= 2 and opt.tokens_used <= 40_000
    # SMAC's budgets run down from r_max by η (40, 13.3; 4.4 would be below r_min = 5)
    assert {t.fidelity for t in opt.state.trials.values()} == {13, 40}


def test_dehb_runs_its_brackets_in_its_own_environment_paying_only_new_instances():
    """DEHB (its own numpy < 2 environment, a child process) runs Hyperband rungs at
    200/3^k instances (rounded) and promotes configs up them; a promoted config pays only
    for its new instances."""
    from ecotune.bench.problems import PROBLEMS, ProblemEvaluator
    from ecotune.optimizers.dehb import DEHBOptimizer

    pb = PROBLEMS["noisy-branin"]()
    opt = make_optimizer("dehb", space=pb.space, budget_tokens=60_000, r_min=pb.r_min,
                         r_max=pb.r_max, seed=1)
    assert isinstance(opt, DEHBOptimizer) and opt.worker.version == "0.1.2"
    ev = ProblemEvaluator(pb)
    seen: dict[str, int] = {}
    climbs = 0
    while (t := opt.ask()) is not None:
        res = ev.evaluate(t)
        key = json.dumps(t.config, sort_keys=True)
        if key in seen and t.fidelity > seen[key] and res.n_evaluated == t.fidelity:
            U = pb.point(t.config)
            assert res.tokens == pb.cost(U, t.fidelity)[0] - pb.cost(U, seen[key])[0]
            assert res.reused_tokens > 0
            climbs += 1
        seen[key] = max(t.fidelity, seen.get(key, 0))
        opt.tell(t, result=res)
    assert climbs >= 2 and opt.tokens_used <= 60_000
    assert {t.fidelity for t in opt.state.trials.values()} <= {7, 22, 67, 200}


def test_dehb_without_its_environment_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("ECOTUNE_DEHB_PYTHON", "/nonexistent/python")
    with pytest.raises(RuntimeError, match="make install.*requirements/dehb.txt"):
        _make("dehb")


@pytest.mark.parametrize("name", ["random", "ecotune"])
def test_consecutive_failed_trials_stop_the_study_and_survive_a_resume(name, tmp_path):
    """K failed trials in a row stop the study (``failed_trials``); a trial that did not
    fail in between resets the count; a resumed optimizer replays the count from the
    journal."""
    journal = str(tmp_path / "j.jsonl")
    opt = _make(name, journal=journal, max_failed_trials=3)

    def fail(t):
        tell(opt, t, tokens=7, n_evaluated=0, status="failed", error="EngineError: down")

    for ok in (False, False, True, False, False):
        t = opt.ask()
        if ok:
            tell(opt, t, score=0.5, tokens=50, n_evaluated=t.fidelity)
        else:
            fail(t)
    assert opt.state.budget.failed_streak == 2 and opt.state.budget.stop_reason(1.0) is None
    resumed = _make(name, journal=journal, max_failed_trials=3)
    assert resumed.state.budget.failed_streak == 2
    opt = resumed
    fail(opt.ask())
    assert opt.ask() is None and opt.stop_reason == "failed_trials"
    assert opt.summary()["stop_reason"] == "failed_trials"
    assert len(opt.state.results) == 6 and not opt.state.pending
    with pytest.raises(ValueError, match="max_failed_trials"):
        _make(name, max_failed_trials=0)


def test_study_state_is_what_callers_read(tmp_path):
    """The study's accounting lives in ``opt.state`` (public: told or not, the cheapest
    trial's worst case, the mean cost), and a proposer is only ever built over one."""
    from ecotune.optimizers import StudyState
    from ecotune.optimizers.simple import RandomSearch

    opt = _make("random", journal=tmp_path / "j.jsonl")
    st = opt.state
    assert isinstance(st, StudyState) and st.n_asked == 0
    assert st.mean_trial_cost() == max(st.min_trial_cost(), 1.0) > 0
    t = opt.ask()
    assert st.n_asked == 1 and t.id in st.pending and not st.is_told(t.id)
    tell(opt, t, score=0.5, tokens=120, n_evaluated=t.fidelity)
    assert st.is_told(t.id) and st.mean_trial_cost() == 120 and opt.tokens_used == 120
    assert opt.summary() == st.summary("random")
    again = _make("random", journal=tmp_path / "j.jsonl")
    assert again.state.is_told(t.id) and again.state.n_asked == 1
    with pytest.raises(TypeError, match="StudyState"):
        RandomSearch(SPACE)



@pytest.mark.parametrize("name", ["ecotune", "random", "bohb"])
def test_a_trial_that_cannot_run_ends_the_study(name, tmp_path):
    """A trial whose limit admits not even its first instance spends nothing; asking such
    trials again would loop forever. The study learns the limit did not fit and stops
    (``budget``) while less than that is left; a resumed study knows it too."""
    budget = int(_make(name).state.min_trial_cost()) + 1  # a first trial fits, barely
    opt = _make(name, journal=tmp_path / "j.jsonl", budget=budget)
    t = opt.ask()
    assert t.token_limit == budget  # the whole budget: its worst case is more
    opt.tell(t, TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                            status=TrialStatus.FAILED, error=NOTHING_FIT))
    assert opt.state.unaffordable == budget + 1 and opt.state.min_trial_cost() > budget
    assert opt.ask() is None and opt.stop_reason == "budget" and opt.tokens_used == 0
    again = _make(name, journal=tmp_path / "j.jsonl", budget=budget)
    assert again.state.unaffordable == budget + 1 and again.ask() is None


def test_a_limit_too_small_for_one_instance_is_raised_not_repeated():
    """The cost model's per-instance worst case can miss a per-trial overhead (BoTorch's
    WingWeight levels cost 140 tokens at r = 1 where 100 instances cost 4,100): a trial
    that could not run its first instance makes the next limits at least twice its own,
    so the study goes on measuring instead of asking the same hopeless trial again."""
    opt = _make("random", budget=100_000)
    t = opt.ask()
    opt.tell(t, TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                            status=TrialStatus.PARTIAL))
    assert opt.state.unaffordable == t.token_limit + 1
    t2 = opt.ask()
    assert t2 is not None and t2.token_limit >= 2 * (t.token_limit + 1)


def test_borehole_study_ends():
    """BoTorch's Borehole levels cost more than the cost model's per-instance worst case
    at r = 1: EcoTune seed 1 once asked trials that could not run for ever."""
    from ecotune.bench.runs import load_bench, run_to_end
    from ecotune.bench.suite import problem_budget

    bench = load_bench("borehole")
    budget = problem_budget("borehole", bench)
    opt = make_optimizer("ecotune", space=bench.space, budget_tokens=budget, r_min=bench.r_min,
                         r_max=bench.r_max, seed=1, max_trials=500)
    run_to_end(opt, bench.make_evaluator(1), bench.true_score)
    assert opt.stop_reason == "budget" and len(opt.state.results) < 200
    assert sum(r.nothing_fit for r in opt.state.results.values()) <= 3


def test_wingweight_screens_at_r_min_run():
    """WingWeight's r = 1 costs more than the cost model's first guess: EcoTune's r_min
    screens there failed, spent nothing and were asked again for ever (seed 0)."""
    from ecotune.bench.runs import load_bench, run_to_end
    from ecotune.bench.suite import problem_budget

    bench = load_bench("wingweight")
    opt = make_optimizer("ecotune", space=bench.space, budget_tokens=problem_budget(
        "wingweight", bench), r_min=bench.r_min, r_max=bench.r_max, seed=0, max_trials=300)
    run_to_end(opt, bench.make_evaluator(0), bench.true_score)
    assert opt.stop_reason == "budget" and len(opt.state.results) < 300
    assert sum(r.nothing_fit for r in opt.state.results.values()) <= 3


def test_nothing_fit_is_not_an_engine_error():
    ok = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                     status=TrialStatus.PARTIAL)
    down = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                       status=TrialStatus.FAILED, error="ConnectError: refused")
    billed = TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                         status=TrialStatus.FAILED, error=NOTHING_FIT, unsettled_tokens=9)
    assert ok.nothing_fit and not down.nothing_fit and not billed.nothing_fit


def _smooth(opt, trial):
    """A deterministic whole-evaluation score of the config (the same at every fidelity)."""
    u = opt.space.encode(trial.config)
    return float(0.2 + 0.6 * np.exp(-4.0 * np.sum((u - 0.3) ** 2)))


@pytest.mark.parametrize("noise", ["auto", "binomial"])
def test_ecotune_noise_is_binomial_with_instance_scores_and_fitted_without(noise):
    """``noise="auto"``: trials with per-instance scores (every LLM trial) keep the binomial
    noise exactly (κ = 1); scores told without them get κ by marginal likelihood, which
    is small for a deterministic score. ``binomial`` never scales."""
    with_inst = _make("ecotune", budget=20_000, noise=noise)
    ev = SyntheticEvaluator(LAND)
    while (t := with_inst.ask()) is not None:
        with_inst.tell(t, ev.evaluate(t))
    assert with_inst.noise_scale == 1.0 and with_inst._searching
    bare = _make("ecotune", budget=20_000, noise=noise)
    while (t := bare.ask()) is not None:
        tell(bare, t, score=_smooth(bare, t), tokens=30 * t.fidelity)
    assert bare._searching and bare._options["noise"] == noise
    # a deterministic score: the likelihood rises as the noise shrinks
    assert bare.noise_scale == (min(NOISE_SCALES) if noise == "auto" else 1.0)
    if noise == "auto":  # the same scores as prefix means of coin flips, told bare
        rng = np.random.default_rng(0)
        coins = _make("ecotune", budget=20_000, noise=noise)
        while (t := coins.ask()) is not None:
            flips = rng.random(t.fidelity) < _smooth(coins, t)
            tell(coins, t, score=float(flips.mean()), tokens=30 * t.fidelity)
        assert coins.noise_scale >= 0.1
    with pytest.raises(ValueError, match="noise"):
        _make("ecotune", noise="gaussian")


@pytest.mark.parametrize("method,fit", [
    ("botorch", "ecotune.optimizers.gp.fit_single_fidelity_gp"),
    ("eipu", "ecotune.optimizers.botorch_peers.fit_single_fidelity_gp"),
    ("mfkg", "ecotune.optimizers.botorch_peers.fit_multi_fidelity_gp")])
def test_botorch_peers_fit_their_noise_only_for_scores_told_without_instance_scores(
        method, fit, monkeypatch):
    """The BoTorch peers keep the binomial noise p(1 − p)/r for prefix means of instance
    scores (LLM trials), and fit one noise level, as BoTorch's tutorials do, for whole-
    evaluation scores (a deterministic function at a fidelity); ``noise`` overrides."""
    import importlib

    module_name, name = fit.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real, seen = getattr(module, name), []

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(type(model.likelihood).__name__)
        return model

    monkeypatch.setattr(module, name, spy)
    for bare, noise, want in [(False, "auto", "FixedNoiseGaussianLikelihood"),
                              (True, "auto", "GaussianLikelihood"),
                              (True, "binomial", "FixedNoiseGaussianLikelihood"),
                              (False, "inferred", "GaussianLikelihood")]:
        seen.clear()
        opt = _make(method, budget=80_000, noise=noise, max_trials=8)
        ev = SyntheticEvaluator(LAND)
        while (t := opt.ask()) is not None:
            if bare:
                tell(opt, t, score=_smooth(opt, t), tokens=30 * t.fidelity)
            else:
                opt.tell(t, ev.evaluate(t))
        assert seen and set(seen) == {want}, (bare, noise, seen)
        assert opt._options["noise"] == noise
    with pytest.raises(ValueError, match="noise"):
        _make(method, noise="gaussian")
