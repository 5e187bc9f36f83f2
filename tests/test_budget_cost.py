import math

import numpy as np
import pytest

from ecotune.budget import BudgetController
from ecotune.cost import TokenCostModel


def test_eta_update_follows_equation_9():
    b = BudgetController(1000, eta0=0.5, lam=0.2)
    eta = 0.5
    for tid, spent in enumerate([100, 250, 50, 300]):
        b.charge(tid, spent)
        eta *= math.exp(-0.2 * (1000 - b.used) / 1000)
        assert b.eta == pytest.approx(eta)
    assert b.used == 700 and b.remain == 300


def test_t_hat_is_floor_of_remaining_over_expected_cost():
    b = BudgetController(10_000)
    b.charge(0, 2_500)
    assert b.t_hat(1000) == 7
    assert b.t_hat(7501) == 0
    assert b.t_hat(333.3) == math.floor(7500 / 333.3)
    with pytest.raises(ValueError):
        b.t_hat(0)


def test_reservations_limit_what_new_trials_may_take():
    b = BudgetController(1000)
    b.reserve(0, 600)
    assert b.available == 400
    with pytest.raises(ValueError):
        b.reserve(1, 401)
    b.charge(0, 300)
    assert b.available == 700 and not b.reserved


def test_stop_reasons():
    assert BudgetController(1000, max_trials=2, patience=None).stop_reason(10) is None
    b = BudgetController(1000, max_trials=1)
    b.charge(0, 10)
    assert b.stop_reason(10) == "max_trials"
    b = BudgetController(1000)
    b.charge(0, 995)
    assert b.stop_reason(10) == "budget"
    b = BudgetController(10**6, patience=3, min_delta=0.01)
    for i, s in enumerate([0.5, 0.505, 0.509, 0.501]):
        b.charge(i, 1, full_fidelity_score=s)
    assert b.stop_reason(10) == "converged"


def test_cost_model_learns_alpha_and_beta():
    rng = np.random.default_rng(0)
    m = TokenCostModel(prompt_tokens_hint=50)
    for _ in range(40):
        x = rng.random(3)
        r = int(rng.integers(5, 50))
        prompt = int((100 + 200 * x[0]) * r)          # prompt grows with x0 (few-shot)
        comp = int((0.2 + 0.6 * x[1]) * 64 * r)       # completion fraction of max_tokens
        m.observe(x, r, prompt + 30, comp, 64)        # 30 tokens of fixed overhead
    x = np.array([[0.5, 0.5, 0.5]])
    want = (100 + 100) + 0.5 * 64
    assert m.alpha(x, [64])[0] == pytest.approx(want, rel=0.05)
    assert m.beta() == pytest.approx(30, abs=6)  # the fixed overhead, not smeared over α
    assert m.predict(x, [64], 20)[0] == pytest.approx(want * 20 + 30, rel=0.02)
    assert m.predict(x, [64], 5)[0] == pytest.approx(want * 5 + 30, rel=0.02)
    assert m.worst_case_per_instance(64) >= 300 + 64


def test_cost_model_prior_before_data():
    m = TokenCostModel(prompt_tokens_hint=200)
    assert m.predict(np.zeros((1, 2)), [100], 10)[0] == pytest.approx((200 + 50) * 10)


def test_exact_prompt_costs_set_the_worst_case_and_the_prediction():
    """With prompts counted before the trial, a trial's token limit is exactly its worst
    case (prompt tokens of its r instances + r × max_tokens) and the cost model predicts only
    completions; each few-shot count is tokenized once."""
    from ecotune.engines import FakeEngine
    from ecotune.optimizers import make_optimizer
    from ecotune.prompt_tokens import PromptTokens
    from ecotune.subsets import nested_order
    from ecotune.tasks import make_task

    task = make_task({"name": "arithmetic", "n": 40})
    order = nested_order(task.instances(), 0)[:20]
    eng = FakeEngine()
    counted: list[int] = []
    real = eng.count_prompt_tokens
    eng.count_prompt_tokens = lambda ps: counted.append(len(ps)) or real(ps)  # type: ignore
    pt = PromptTokens(task, eng, order)
    a, b = pt({"few_shot": 2, "temperature": 0.1}), pt({"few_shot": 2, "temperature": 0.9})
    assert (a == b).all() and counted == [20]
    want = [len(task.build_prompt(task.instance(i), {"few_shot": 2}).split()) for i in order]
    assert a.tolist() == want
    opt = make_optimizer("random", space={"few_shot": {"type": "int", "low": 0, "high": 4}},
                         budget_tokens=10**6, r_min=3, r_max=20, seed=0,
                         fixed={"max_tokens": 4}, prompt_tokens=pt)
    t = opt.ask()
    exact = int(pt(t.config)[:t.fidelity].sum())
    assert t.token_limit == exact + 4 * t.fidelity
    assert t.predicted_tokens == pytest.approx(exact + 0.5 * 4 * t.fidelity)  # prior: half


def test_failed_trials_in_a_row_stop_before_any_other_reason():
    b = BudgetController(1000, max_trials=10, max_failed_trials=2)
    b.charge(0, 10, failed=True)
    b.charge(1, 10)                      # a trial that did not fail resets the run
    b.charge(2, 10, failed=True)
    assert b.failed_streak == 1 and b.stop_reason(10) is None
    b.charge(3, 985, failed=True)        # budget spent too: the failures are the reason
    assert b.stop_reason(10) == "failed_trials"
    assert BudgetController(1000).stop_reason(10) is None
    with pytest.raises(ValueError, match="max_failed_trials"):
        BudgetController(1000, max_failed_trials=0)
