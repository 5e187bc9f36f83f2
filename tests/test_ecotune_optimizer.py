"""EcoTune's own optimizer: incremental promotion and pruning, its initial design, its
noise model, and the multi-fidelity problems where it once looped."""

import numpy as np
import pytest
from optimizer_kit import LAND, SPACE, make_opt, smooth_score, tell

from ecotune.bench.synthetic import SyntheticEvaluator
from ecotune.journal import open_journal
from ecotune.optimizers import make_optimizer
from ecotune.surrogate import NOISE_SCALES


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
    opt = make_opt("ecotune", budget=60_000, max_trials=40, completion_cost=completion_cost)
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


def test_ecotune_init_share_spends_that_share_of_the_budget_on_the_initial_design(tmp_path):
    """With ``init_share`` the Sobol design goes on past ``n_init`` until that share of the
    budget is spent, then the search starts and the design never resumes; a resumed study
    knows the search has started."""
    journal = tmp_path / "j.jsonl"
    opt = make_opt("ecotune", journal=journal, budget=40_000, init_share=0.25)
    ev = SyntheticEvaluator(LAND)
    spent_at_ask = []
    while (t := opt.ask()) is not None:
        spent_at_ask.append(opt.tokens_used)
        opt.tell(t, ev.evaluate(t))
    phases = [r["meta"]["phase"] for r in open_journal(journal).records() if r["type"] == "ask"]
    first = next(i for i, p in enumerate(phases) if p != "init")
    assert "init" not in phases[first:] and first > opt.n_init
    assert spent_at_ask[first - 1] < 10_000 <= spent_at_ask[first]
    assert make_opt("ecotune", journal=journal, budget=40_000, init_share=0.25)._searching
    # with max_trials, the design also stops at that share of the trials: the search (and
    # the final trial at r_max) always get the rest
    capped = tmp_path / "capped.jsonl"
    opt = make_opt("ecotune", journal=capped, budget=10**7, max_trials=40, init_share=0.25)
    while (t := opt.ask()) is not None:
        opt.tell(t, ev.evaluate(t))
    phases = [r["meta"]["phase"] for r in open_journal(capped).records() if r["type"] == "ask"]
    assert phases[:10] == ["init"] * 10 and "init" not in phases[10:] and len(phases) == 40
    assert any(r.n_evaluated >= opt.r_max for r in opt.state.results.values())
    with pytest.raises(ValueError, match="init_share"):
        make_opt("ecotune", init_share=1.0)


def test_ecotune_initial_design_runs_at_init_fidelity(tmp_path):
    """Every config of the initial design is scored on ``init_fidelity`` instances; a level
    outside [r_min, r_max] is refused."""
    journal = tmp_path / "j.jsonl"
    opt = make_opt("ecotune", journal=journal, budget=40_000, init_fidelity=13)
    ev = SyntheticEvaluator(LAND)
    while (t := opt.ask()) is not None:
        opt.tell(t, ev.evaluate(t))
    asks = [r for r in open_journal(journal).records() if r["type"] == "ask"]
    init = [r["trial"]["fidelity"] for r in asks if r["meta"]["phase"] == "init"]
    assert len(init) >= opt.n_init and set(init) == {13} and opt._options["init_fidelity"] == 13
    assert make_opt("ecotune").init_fidelity == opt.r_min == 5  # the default: the first rung
    for bad in (4, 41):
        with pytest.raises(ValueError, match="init_fidelity"):
            make_opt("ecotune", init_fidelity=bad)


def test_final_trial_last_spends_the_rest_of_the_budget_before_the_final_trial(tmp_path):
    """``final_trial="last"``: the final full trial of eq. 8 is asked once the step chosen
    otherwise would leave less than the final's expected tokens, later than the paper's
    T̂ ≤ 1 (same seed); ``paper`` asks it once T̂ ≤ 1 (or two worst cases no longer fit)."""
    spent = {}
    for final in ("paper", "last"):
        journal = tmp_path / f"{final}.jsonl"
        opt = make_opt("ecotune", journal=journal, budget=30_000, final_trial=final)
        ev = SyntheticEvaluator(LAND)
        while (t := opt.ask()) is not None:
            if opt.last_decision.get("phase") == "final" and final not in spent:
                d, budget = opt.last_decision, opt.state.budget
                spent[final] = opt.tokens_used
                if final == "last":
                    assert budget.remain - d["step_tokens"] < d["expected"] <= budget.remain
                else:
                    worst = opt.r_max * opt.state.cost_model.worst_case_per_instance(
                        opt.state.max_completion(t.config))
                    assert d["t_hat"] <= 1 or budget.available < 2 * worst
            opt.tell(t, ev.evaluate(t))
        assert opt._options["final_trial"] == final
        asks = [r for r in open_journal(journal).records() if r["type"] == "ask"]
        assert sum(r["meta"].get("phase") == "final" for r in asks) == 1
    assert spent["paper"] < spent["last"]
    with pytest.raises(ValueError, match="final_trial must be one of"):
        make_opt("ecotune", final_trial="first")


def test_final_trial_rung_finishes_the_best_of_a_rung_and_resumes_it(tmp_path):
    """``final_trial="rung"``: when eq. 8 would send the final full trial, the best configs
    by the GP's mean among those screened are first promoted to one level below r_max (one
    ask each), then the rung config with the best mean is finished at r_max, once. The
    plan is in the journal: a study resumed in the middle of the rung, or after its final,
    asks what the uninterrupted one asked."""
    from ecotune.optimizers.final_trial import RUNG_SIZE

    def run(journal, stop_after=None):
        opt = make_opt("ecotune", journal=journal, budget=30_000, final_trial="rung")
        ev, asked = SyntheticEvaluator(LAND), []
        while (t := opt.ask()) is not None:
            d = dict(opt.last_decision)
            res = ev.evaluate(t)
            asked.append((t.config, t.fidelity, d.get("phase"), res))
            opt.tell(t, res)
            if stop_after is not None and d.get("phase") == stop_after:
                return opt, asked
        return opt, asked

    opt, asked = run(tmp_path / "whole.jsonl")
    rung = [a for a in asked if a[2] == "rung"]
    finals = [a for a in asked if a[2] == "final"]
    assert 2 <= len(rung) <= RUNG_SIZE and len(finals) == 1
    first_rung = next(i for i, a in enumerate(asked) if a[2] == "rung")
    assert all(a[2] == "rung" for a in asked[first_rung:first_rung + len(rung)])
    level = rung[0][1]
    assert opt.r_min < level < opt.r_max and all(a[1] == level for a in rung)
    assert len({opt.space.encode(a[0]).tobytes() for a in rung}) == len(rung)
    for config, _, _, res in rung:  # promoted: each had a screen below the level
        assert res.n_evaluated == level
        assert any(a[0] == config and a[3].n_evaluated < level for a in asked[:first_rung])
    config, fidelity, _, res = finals[0]
    assert fidelity == opt.r_max and res.n_evaluated == opt.r_max  # not cut by the budget
    assert config in [a[0] for a in rung]
    asks = [r for r in open_journal(tmp_path / "whole.jsonl").records() if r["type"] == "ask"]
    final_meta = next(r["meta"] for r in asks if r["meta"].get("phase") == "final")
    rung_cfgs = [a[0] for a in rung]
    assert rung_cfgs[int(np.argmax(final_meta["rung_means"]))] == config

    for stop in ("rung", "final"):  # resumed mid-rung, and after the final (asked once)
        journal = tmp_path / f"resumed-{stop}.jsonl"
        _, before = run(journal, stop_after=stop)
        resumed = make_opt("ecotune", journal=journal, budget=30_000, final_trial="rung")
        ev, after = SyntheticEvaluator(LAND), []
        while (t := resumed.ask()) is not None:
            after.append((t.config, t.fidelity, resumed.last_decision.get("phase")))
            resumed.tell(t, ev.evaluate(t))
        assert [a[:3] for a in before] + after == [a[:3] for a in asked]


def test_rung_reserve_bounds_what_the_rung_may_spend():
    """``rung_reserve``: the rung spends only while that many times the final's expected
    tokens stay in hand. A smaller reserve lets it reach a level at least as high; one no
    budget leaves (100x) sends eq. 8's final at once; the final is never cut by the
    budget; a reserve below 1 (the final not kept whole) is refused."""
    def run(reserve):
        opt = make_opt("ecotune", budget=30_000, final_trial="rung", rung_reserve=reserve)
        ev, asked = SyntheticEvaluator(LAND), []
        while (t := opt.ask()) is not None:
            phase = opt.last_decision.get("phase")
            res = ev.evaluate(t)
            asked.append((phase, t.fidelity, res.n_evaluated))
            opt.tell(t, res)
        assert opt._options["rung_reserve"] == reserve
        finals = [a for a in asked if a[0] == "final"]
        assert len(finals) == 1 and finals[0][1] == finals[0][2] == opt.r_max
        return [a[1] for a in asked if a[0] == "rung"]

    once, margin, never = run(1.0), run(1.25), run(100.0)
    assert once and margin and not never
    assert once[0] >= margin[0]
    with pytest.raises(ValueError, match="rung_reserve must be >= 1"):
        make_opt("ecotune", rung_reserve=0.5)


def test_final_trial_auto_runs_the_rung_only_where_trials_tell_instance_scores():
    """``final_trial="auto"``: the rung before the final where every trial told its
    instance scores (a screen's error is sampling noise), eq. 8's final at once where trials
    tell a whole-evaluation score (a deterministic level: more instances only move along
    its bias)."""
    phases = {}
    for scored in ("instances", "whole"):
        opt = make_opt("ecotune", budget=30_000, final_trial="auto")
        ev, seen = SyntheticEvaluator(LAND), []
        while (t := opt.ask()) is not None:
            seen.append(opt.last_decision.get("phase"))
            if scored == "instances":
                opt.tell(t, ev.evaluate(t))
            else:
                tell(opt, t, score=smooth_score(opt, t), tokens=300 + 60 * t.fidelity)
        phases[scored] = seen
    assert "rung" in phases["instances"] and "rung" not in phases["whole"]
    assert phases["instances"].count("final") == phases["whole"].count("final") == 1


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


@pytest.mark.parametrize("noise", ["auto", "binomial"])
def test_ecotune_noise_is_binomial_with_instance_scores_and_fitted_without(noise):
    """``noise="auto"``: trials with per-instance scores (every LLM trial) keep the binomial
    noise exactly (κ = 1); scores told without them get κ by marginal likelihood, which
    is small for a deterministic score. ``binomial`` never scales."""
    with_inst = make_opt("ecotune", budget=20_000, noise=noise)
    ev = SyntheticEvaluator(LAND)
    while (t := with_inst.ask()) is not None:
        with_inst.tell(t, ev.evaluate(t))
    assert with_inst.noise_scale == 1.0 and with_inst._searching
    # calibrate off: the κ choice alone (a level map fitted to an unbiased deterministic
    # level is not exactly the identity, and its error reads as noise; test_calibration)
    bare = make_opt("ecotune", budget=20_000, noise=noise, calibrate=False)
    while (t := bare.ask()) is not None:
        tell(bare, t, score=smooth_score(bare, t), tokens=30 * t.fidelity)
    assert bare._searching and bare._options["noise"] == noise
    # a deterministic score: the likelihood rises as the noise shrinks
    assert bare.noise_scale == (min(NOISE_SCALES) if noise == "auto" else 1.0)
    if noise == "auto":  # the same scores as prefix means of coin flips, told bare
        rng = np.random.default_rng(0)
        coins = make_opt("ecotune", budget=20_000, noise=noise)
        while (t := coins.ask()) is not None:
            flips = rng.random(t.fidelity) < smooth_score(coins, t)
            tell(coins, t, score=float(flips.mean()), tokens=30 * t.fidelity)
        assert coins.noise_scale >= 0.1
    with pytest.raises(ValueError, match="noise"):
        make_opt("ecotune", noise="gaussian")


@pytest.mark.parametrize("scored", ["instances", "whole"])
def test_a_study_resumed_after_every_few_asks_asks_what_one_process_asks(tmp_path, scored):
    """The pipeline runs each ask in a fresh process over the journal: the model's state
    (warm-start hyperparameters, fitted noise scale, level maps, when it last refitted) is
    journalled with each ask, so a study resumed every few asks asks the trials one process
    asks, past the point where the fit stops refitting every ask, with instance scores
    (binomial noise, the rung) and with whole-evaluation scores (fitted κ, calibration)."""
    def answer(opt, t, ev):
        if scored == "instances":
            opt.tell(t, ev.evaluate(t))
        else:
            tell(opt, t, score=smooth_score(opt, t), tokens=300 + 60 * t.fidelity)

    def study(journal, every=None):
        opt = make_opt("ecotune", journal=journal, budget=80_000)
        ev, asked = SyntheticEvaluator(LAND), []
        while (t := opt.ask()) is not None:
            asked.append((t.config, t.fidelity))
            answer(opt, t, ev)
            if every and len(asked) % every == 0:
                opt = make_opt("ecotune", journal=journal, budget=80_000)
        return opt, asked

    whole, asked = study(tmp_path / "one.jsonl")
    _, resumed = study(tmp_path / "many.jsonl", every=7)
    assert len(asked) > 35 and resumed == asked
    assert whole._fitted_n >= 30  # the fit had stopped refitting on every ask
    if scored == "whole":
        assert whole.level_maps and whole.noise_scale != 1.0
