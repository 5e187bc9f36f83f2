"""EngineEvaluator on the FakeEngine: token limit, journaling, resume and failure accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecotune.engines import EngineError, FakeEngine
from ecotune.journal import open_journal
from ecotune.study_loop import run_study
from ecotune.subsets import nested_order
from ecotune.tasks import make_task
from ecotune.trial import Trial, TrialResult, TrialStatus
from ecotune.trial_runner import EngineEvaluator, TrialEvaluationError, sampling_params


def _task(n: int = 60):
    return make_task({"name": "arithmetic", "n": n})


def _right(task):
    """Fake answers: the correct sum for every question (so scores are 1)."""
    by_q = {task.render(i): i.reference for i in task.instances()}

    def answer(text: str, params) -> str:
        for q, ref in by_q.items():
            if text.endswith(q):
                return f"{ref} extra words here"
        return "?"

    return answer


def _order(task):
    return nested_order(task.instances(), 0)


def test_complete_trial_scores_and_counts() -> None:
    task = _task()
    eng = FakeEngine(_right(task))
    ev = EngineEvaluator(task, eng, _order(task))
    trial = Trial(0, {"max_tokens": 1, "few_shot": 2}, fidelity=10, token_limit=10**6)
    res = ev.evaluate(trial)
    assert res.status == TrialStatus.COMPLETE
    assert res.n_evaluated == 10 and res.score == 1.0
    assert res.instance_ids == _order(task)[:10]
    # word-count tokens: prompt words + 1 completion word (max_tokens=1) per instance
    prompts = [task.build_prompt(task.instance(i), trial.config) for i in res.instance_ids]
    assert res.prompt_tokens == sum(len(p.split()) for p in prompts)
    assert res.completion_tokens == 10
    assert len(eng.requests) == 10


def test_sampling_params_use_task_defaults() -> None:
    task = _task()
    p = sampling_params(task, {"temperature": 0.3, "few_shot": 1})
    assert p.max_tokens == task.default_max_tokens and p.stop == task.stop_sequences
    assert p.temperature == 0.3
    assert sampling_params(task, {"max_tokens": 7}).max_tokens == 7


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=st.integers(min_value=0, max_value=2500), r=st.integers(1, 40),
       max_tokens=st.integers(1, 12), few_shot=st.integers(0, 8),
       in_flight=st.integers(1, 16))
def test_never_exceeds_token_limit(limit: int, r: int, max_tokens: int, few_shot: int,
                                   in_flight: int) -> None:
    task = _task(50)
    eng = FakeEngine(lambda text, p: "w " * 20)  # always uses the whole max_tokens
    order = _order(task)
    ev = EngineEvaluator(task, eng, order, max_in_flight=in_flight)
    trial = Trial(1, {"max_tokens": max_tokens, "few_shot": few_shot}, fidelity=r,
                  token_limit=limit)
    res = ev.evaluate(trial)
    assert res.tokens <= limit
    # nested: the instances scored are a prefix of the order
    assert res.instance_ids == order[: res.n_evaluated]
    assert len(eng.requests) == res.n_evaluated
    # and it stopped only when the next instance's worst case did not fit
    if res.n_evaluated < r:
        nxt = task.build_prompt(task.instance(order[res.n_evaluated]), trial.config)
        assert res.tokens + len(nxt.split()) + max_tokens > limit
        assert res.status == TrialStatus.PARTIAL
    else:
        assert res.status == TrialStatus.COMPLETE


def test_short_answers_let_more_instances_fit() -> None:
    """Actual usage (not the worst case) is charged once an instance finishes."""
    task = _task()
    eng = FakeEngine(lambda text, p: "1")  # 1 completion token, max_tokens 50
    order = _order(task)
    ev = EngineEvaluator(task, eng, order, max_in_flight=1)
    cfg = {"max_tokens": 50, "few_shot": 0}
    per = len(task.build_prompt(task.instance(order[0]), cfg).split())
    res = ev.evaluate(Trial(2, cfg, fidelity=5, token_limit=4 * (per + 1) + per + 50))
    assert res.n_evaluated == 5 and res.tokens <= 4 * (per + 1) + per + 50


def test_instance_records_written_and_reused(tmp_path: Path) -> None:
    task = _task()
    jpath = tmp_path / "j.jsonl"
    order = _order(task)
    eng = FakeEngine(_right(task), fail_after=4)
    ev = EngineEvaluator(task, eng, order, journal=str(jpath), max_in_flight=1)
    trial = Trial(3, {"max_tokens": 2, "few_shot": 1}, fidelity=8, token_limit=10**6)
    with pytest.raises(TrialEvaluationError) as ei:
        ev.evaluate(trial)
    part = ei.value.partial_result
    assert part.status == TrialStatus.FAILED and part.n_evaluated == 4
    recs = [r for r in open_journal(jpath).records() if r["type"] == "instance"]
    assert [r["key"] for r in recs] == [f"inst:3:{i}" for i in order[:4]]
    usage = sum(r["prompt_tokens"] + r["completion_tokens"] for r in recs)
    assert usage == part.prompt_tokens + part.completion_tokens
    # the 5th request failed with its outcome unknown: its worst case stays charged
    fifth = len(task.build_prompt(task.instance(order[4]), trial.config).split()) + 2
    assert part.unsettled_tokens == fifth and part.tokens == usage + fifth
    holds = [r for r in open_journal(jpath).records() if r["type"] == "hold"]
    assert len(holds) == 5 and all(h["key"].startswith("hold:3:") for h in holds)

    # the same trial re-run (a resume) pays only for the 4 missing instances
    eng2 = FakeEngine(_right(task))
    ev2 = EngineEvaluator(task, eng2, order, journal=str(jpath), max_in_flight=3)
    res = ev2.evaluate(trial)
    assert res.status == TrialStatus.COMPLETE and res.n_evaluated == 8 and res.score == 1.0
    assert len(eng2.requests) == 4
    assert res.instance_ids == order[:8]
    recs = [r for r in open_journal(jpath).records() if r["type"] == "instance"]
    assert len(recs) == 8
    # the first run's failed request is still charged at its worst case (an orphan hold)
    assert res.tokens == sum(r["prompt_tokens"] + r["completion_tokens"] for r in recs) + fifth
    assert res.unsettled_tokens == fifth
    # a third run spends nothing
    eng3 = FakeEngine(_right(task))
    res3 = EngineEvaluator(task, eng3, order, journal=str(jpath)).evaluate(trial)
    assert eng3.requests == [] and res3.tokens == res.tokens and res3.score == res.score


def test_failure_charges_partial_tokens_in_run_study(tmp_path: Path) -> None:
    from ecotune.optimizers import make_optimizer

    task = _task()
    order = _order(task)
    space = {"temperature": {"type": "float", "low": 0.0, "high": 1.0}}
    opt = make_optimizer("random", space=space, budget_tokens=3000, r_min=5, r_max=5, seed=0,
                         journal=str(tmp_path / "j.jsonl"), max_trials=3,
                         fixed={"max_tokens": 2, "few_shot": 1})
    eng = FakeEngine(_right(task), fail_after=7)  # trial 0 ok, trial 1 fails at its 3rd
    ev = EngineEvaluator(task, eng, order, journal=str(tmp_path / "j.jsonl"), max_in_flight=1)
    run_study(opt, ev)
    res = [opt.state.results[i] for i in sorted(opt.state.results)]
    assert res[0].status == TrialStatus.COMPLETE
    assert res[1].status == TrialStatus.FAILED and res[1].n_evaluated == 2
    assert res[1].tokens > 0 and "fake engine failure" in (res[1].error or "")
    # a trial that failed on its first request is charged that request's worst case, not 0
    assert res[2].status == TrialStatus.FAILED and res[2].n_evaluated == 0
    assert res[2].tokens == res[2].unsettled_tokens > 0
    assert opt.tokens_used == sum(r.tokens for r in res)
    recs = open_journal(tmp_path / "j.jsonl").records()
    inst = [r for r in recs if r["type"] == "instance"]
    assert (sum(r["prompt_tokens"] + r["completion_tokens"] for r in inst)
            + sum(r.unsettled_tokens for r in res)) == opt.tokens_used


def test_nothing_fits_is_partial_with_no_score() -> None:
    task = _task()
    eng = FakeEngine(_right(task))
    res = EngineEvaluator(task, eng, _order(task)).evaluate(
        Trial(4, {"max_tokens": 4}, fidelity=3, token_limit=5))
    assert res.n_evaluated == 0 and res.tokens == 0 and res.score is None
    assert res.status == TrialStatus.PARTIAL and eng.requests == []


def test_scores_with_n_samples_average() -> None:
    task = _task()
    eng = FakeEngine(_right(task))
    ev = EngineEvaluator(task, eng, _order(task))
    res = ev.evaluate(Trial(5, {"max_tokens": 1}, fidelity=2, token_limit=10**6))
    assert isinstance(res, TrialResult) and res.score == 1.0


def test_unknown_instance_ids_rejected() -> None:
    task = _task()
    with pytest.raises(ValueError, match="not in task"):
        EngineEvaluator(task, FakeEngine(), ["nope"])


def test_engine_error_type_is_kept() -> None:
    task = _task()
    ev = EngineEvaluator(task, FakeEngine(fail_after=0), _order(task))
    trial = Trial(6, {}, fidelity=3, token_limit=10**6)
    with pytest.raises(TrialEvaluationError) as ei:
        ev.evaluate(trial)
    assert isinstance(ei.value.__cause__, EngineError)
    # all three requests went out and failed with unknown outcomes: worst cases charged
    worst = sum(len(task.build_prompt(task.instance(i), {}).split()) + task.default_max_tokens
                for i in _order(task)[:3])
    assert ei.value.partial_result.tokens == ei.value.partial_result.unsettled_tokens == worst
