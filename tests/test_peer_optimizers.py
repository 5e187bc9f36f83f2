"""The peers through their own libraries (Syne Tune, SMAC3, DEHB, BoTorch): each climbs its
own rungs paying only new instances, runs reproducibly, and fails loudly where it must."""

import json

import numpy as np
import pytest
from optimizer_kit import LAND, SPACE, make_opt, smooth_score, tell

from ecotune.bench.synthetic import SyntheticEvaluator
from ecotune.journal import open_journal
from ecotune.optimizers import make_optimizer


@pytest.mark.parametrize("name", ["bohb", "asha"])
def test_syne_tune_peers_climb_its_rungs_paying_only_new_instances(name):
    """Syne Tune's own BOHB/ASHA decide which configs go on: each continuation asks the same
    config at the next rung (r_min·3^k, then r_max), and the replay keeps what it measured."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 30, seed=2), 40)
    opt = make_opt(name, budget=40_000)
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
        opt, ev, asked = make_opt(name, budget=60_000), ReplayEvaluator(table), []
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
        opt, ev, asked = make_opt("mfkg", max_trials=7), SyntheticEvaluator(LAND), []
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
    opt, ev = make_opt("mfkg", journal=journal, max_trials=6, n_init=2), SyntheticEvaluator(LAND)
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
    assert make_opt("mfkg", journal=journal, max_trials=6, n_init=2).fallbacks == 3

    def wrong(acqf, *args, **kwargs):
        raise RuntimeError("The size of tensor a (3) must match the size of tensor b (4)")

    monkeypatch.setattr(botorch.optim, "optimize_acqf", wrong)
    opt = make_opt("mfkg", max_trials=6, n_init=2)
    with pytest.raises(RuntimeError, match="must match"):
        for _ in range(3):
            t = opt.ask()
            opt.tell(t, ev.evaluate(t))


def test_smac_bohb_runs_hyperband_brackets_paying_only_new_instances():
    """SMAC3's own Hyperband decides which configs go on: a config asked again comes at a
    larger budget, and the replay keeps what its lower budget measured."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import ReplayEvaluator, Table

    table = Table.from_landscape(LAND, SPACE, sobol_configs(SPACE, 30, seed=2), 40)
    opt = make_opt("smac_bohb", budget=40_000)
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
        make_opt("dehb")


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
        opt = make_opt(method, budget=80_000, noise=noise, max_trials=8)
        ev = SyntheticEvaluator(LAND)
        while (t := opt.ask()) is not None:
            if bare:
                tell(opt, t, score=smooth_score(opt, t), tokens=30 * t.fidelity)
            else:
                opt.tell(t, ev.evaluate(t))
        assert seen and set(seen) == {want}, (bare, noise, seen)
        assert opt._options["noise"] == noise
    with pytest.raises(ValueError, match="noise"):
        make_opt(method, noise="gaussian")


@pytest.mark.parametrize("name", ["botorch", "eipu"])
def test_botorch_peers_resumed_every_few_asks_ask_what_one_process_asks(tmp_path, name):
    """Each BoTorch peer (``mfkg`` shares the code) warm-starts its GP fit from the last
    one: the hyperparameters are journalled with each ask (``meta["model"]``), so a study
    rebuilt from its journal every few asks (the pipeline) asks the trials one process
    asks (without them, both part from it by the 13th ask here)."""
    def study(journal, every=None):
        opt = make_opt(name, journal=journal, budget=60_000)
        asked = []
        while (t := opt.ask()) is not None:
            asked.append((t.config, t.fidelity))
            tell(opt, t, score=smooth_score(opt, t),
                 tokens=min(t.token_limit, 300 + 60 * t.fidelity))
            if every and len(asked) % every == 0:
                opt = make_opt(name, journal=journal, budget=60_000)
        return asked

    asked = study(tmp_path / "one.jsonl")
    assert len(asked) > 15 and study(tmp_path / "many.jsonl", every=3) == asked
    models = [r["meta"].get("model") for r in open_journal(tmp_path / "one.jsonl").records()
              if r["type"] == "ask"]
    assert any(m and m["hyper"] for m in models)
