"""Never pay twice: the response cache, kept measurements (incremental promotion) and early
stopping, through the trial runner on the FakeEngine."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from ecotune.cache import ResponseCache
from ecotune.decoding import SamplingParams
from ecotune.engines import Completion, FakeEngine
from ecotune.journal import open_journal
from ecotune.pruning import clopper_pearson, incumbent_floor, should_prune
from ecotune.storage import LocalStore
from ecotune.subsets import nested_order
from ecotune.tasks import make_task
from ecotune.trial import Trial, TrialStatus
from ecotune.trial_runner import EngineEvaluator


def _task():
    return make_task({"name": "arithmetic", "n": 60})


def _right(task):
    by_q = {task.render(i): i.reference for i in task.instances()}

    def answer(text: str, params) -> str:
        return next((ref for q, ref in by_q.items() if text.endswith(q)), "?")

    return answer


# -- the cache -------------------------------------------------------------------------
def test_cache_hits_and_misses(tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path), model="m")
    greedy = SamplingParams(max_tokens=8, stop=["\n"])
    stopped = Completion("42", prompt_tokens=10, completion_tokens=3, finish_reason="stop")
    assert cache.get("p", greedy) is None
    assert cache.put("p", greedy, stopped)
    hit = cache.get("p", greedy)
    assert hit is not None and hit.text == "42" and hit.tokens == 0 and hit.reused_tokens == 13
    # a stopped answer answers any max_tokens >= its length, not a shorter one
    assert cache.get("p", greedy.model_copy(update={"max_tokens": 3})) is not None
    assert cache.get("p", greedy.model_copy(update={"max_tokens": 2})) is None
    # inert sampling knobs do not change a greedy request; anything else does
    assert cache.get("p", SamplingParams.from_config({"temperature": 0, "top_p": 0.3,
                                                      "max_tokens": 8}, stop=["\n"])) is not None
    assert cache.get("q", greedy) is None
    assert cache.get("p", greedy.model_copy(update={"repetition_penalty": 1.2})) is None
    assert ResponseCache(LocalStore(tmp_path), model="other").get("p", greedy) is None
    # an answer cut at max_tokens answers only that exact request
    cut = Completion("1 2 3", prompt_tokens=10, completion_tokens=3, finish_reason="length")
    assert cache.put("r", greedy.model_copy(update={"max_tokens": 3}), cut)
    assert cache.get("r", greedy.model_copy(update={"max_tokens": 3})) is not None
    assert cache.get("r", greedy.model_copy(update={"max_tokens": 4})) is None
    # sampling is not deterministic: never cached (unless the engine honours seeds)
    sampled = SamplingParams(temperature=0.7, max_tokens=8, seed=3)
    assert not cache.put("p", sampled, stopped) and cache.get("p", sampled) is None
    seeded = ResponseCache(LocalStore(tmp_path), model="m", seeded=True)
    assert seeded.put("p", sampled, stopped) and seeded.get("p", sampled) is not None
    assert seeded.get("p", sampled.model_copy(update={"seed": 4})) is None
    # a billed but malformed answer is not an answer
    bad = Completion("", 10, 3, finish_reason="error", error="malformed")
    assert not cache.put("s", greedy, bad)


def test_greedy_answers_are_bought_once_across_trials(tmp_path: Path) -> None:
    task = _task()
    order = nested_order(task.instances(), 0)
    cache = ResponseCache(LocalStore(tmp_path / "cache"), model="fake")
    eng = FakeEngine(_right(task))
    ev = EngineEvaluator(task, eng, order, journal=str(tmp_path / "j.jsonl"), cache=cache)
    a = ev.evaluate(Trial(0, {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4,
                              "few_shot": 1}, 5, 10**6))
    assert len(eng.requests) == 5 and a.reused_tokens == 0
    # another trial, a config that decodes identically (top_p is inert under greedy), more
    # instances, a larger max_tokens: the first 5 answers stopped by themselves, so they
    # are reused; only 3 are bought
    b = ev.evaluate(Trial(1, {"temperature": 0.0, "top_p": 0.999, "max_tokens": 5,
                              "few_shot": 1}, 8, 10**6))
    assert len(eng.requests) == 8
    assert b.n_evaluated == 8 and b.score == 1.0 and b.reused_tokens == a.tokens
    new = [r for r in open_journal(tmp_path / "j.jsonl").records()
           if r["type"] == "instance" and r["trial_id"] == 1 and r.get("source") != "cache"]
    assert b.tokens == sum(r["prompt_tokens"] + r["completion_tokens"] for r in new)
    assert len(new) == 3
    # a later study of the same model (a new journal) reuses them too
    ev2 = EngineEvaluator(task, eng, order, journal=str(tmp_path / "j2.jsonl"), cache=cache)
    c = ev2.evaluate(Trial(0, {"temperature": 0.0, "max_tokens": 4, "few_shot": 1}, 8, 10**6))
    assert len(eng.requests) == 8 and c.tokens == 0 and c.reused_tokens == a.tokens + b.tokens


# -- incremental promotion --------------------------------------------------------------
def test_promotion_pays_only_for_the_new_instances(tmp_path: Path) -> None:
    """A sampled config at r=4, then the same config at r=10: the first 4 measurements are
    kept (valid samples of those instances), 6 are bought."""
    task = _task()
    order = nested_order(task.instances(), 0)
    eng = FakeEngine(_right(task))
    ev = EngineEvaluator(task, eng, order, journal=str(tmp_path / "j.jsonl"))
    cfg = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 4, "few_shot": 2}
    low = ev.evaluate(Trial(0, cfg, 4, 10**6))
    high = ev.evaluate(Trial(1, dict(cfg), 10, 10**6))
    assert len(eng.requests) == 10
    assert high.n_evaluated == 10 and high.instance_ids == order[:10]
    assert high.reused_tokens == low.tokens
    per_new = [r for r in open_journal(tmp_path / "j.jsonl").records()
               if r["type"] == "instance" and r["trial_id"] == 1]
    assert len(per_new) == 10 and sum(r.get("source") == "kept" for r in per_new) == 4
    assert high.tokens == sum(r["prompt_tokens"] + r["completion_tokens"] for r in per_new)
    # another config is not "the same measurement"
    other = ev.evaluate(Trial(2, {**cfg, "temperature": 0.5}, 4, 10**6))
    assert other.reused_tokens == 0 and len(eng.requests) == 14


# -- early stopping ---------------------------------------------------------------------
def test_a_losing_trial_stops_early_and_says_so(tmp_path: Path) -> None:
    task = _task()
    order = nested_order(task.instances(), 0)
    eng = FakeEngine(default="?")  # always wrong
    ev = EngineEvaluator(task, eng, order, journal=str(tmp_path / "j.jsonl"), max_in_flight=1)
    res = ev.evaluate(Trial(0, {"max_tokens": 2, "few_shot": 1}, 30, 10**6, prune_below=0.8))
    # upper bound of 0/n: 1 − 0.05^(1/n) = 0.78 < 0.8 at n = 2
    assert res.status == TrialStatus.PRUNED and res.n_evaluated == 2 == len(eng.requests)
    assert res.score == 0.0 and res.instance_ids == order[:2]
    # a trial that could still win runs to the end
    eng2 = FakeEngine(_right(task))
    ok = EngineEvaluator(task, eng2, order, max_in_flight=1).evaluate(
        Trial(1, {"max_tokens": 4, "few_shot": 1}, 30, 10**6, prune_below=0.8))
    assert ok.status == TrialStatus.COMPLETE and ok.n_evaluated == 30


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.data(), st.floats(0.01, 0.2))
def test_bounds_match_exact_binomial_tails(n: int, data, alpha: float) -> None:
    k = data.draw(st.integers(0, n))
    lo, hi = clopper_pearson(k, n, alpha)
    if k < n:  # the upper bound is where seeing <= k successes has probability alpha
        assert binom.cdf(k, n, hi) == pytest.approx(alpha, rel=1e-6, abs=1e-9)
        assert binom.cdf(k, n, hi - 1e-6) > alpha
    else:
        assert hi == 1.0
    if k > 0:  # the lower bound is where seeing >= k has probability alpha
        assert binom.sf(k - 1, n, lo) == pytest.approx(alpha, rel=1e-6, abs=1e-9)
    else:
        assert lo == 0.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=60),
       st.lists(st.integers(0, 1), min_size=5, max_size=60))
def test_never_stops_a_trial_that_could_still_win(scores, incumbent) -> None:
    """If a trial is stopped, even its most optimistic plausible mean is below the
    incumbent's most pessimistic one; a trial whose observed mean already reaches the
    incumbent's lower bound is never stopped."""
    floor = incumbent_floor(incumbent)
    stopped = should_prune(scores, floor)
    if stopped:
        assert clopper_pearson(sum(scores), len(scores))[1] < floor
    if sum(scores) / len(scores) >= floor:
        assert not stopped


def test_no_pruning_bound_outside_the_unit_interval():
    """A benchmark function's normalised scores can be negative or above 1: no Clopper-Pearson
    bound holds there, so nothing is pruned and the incumbent has no floor (the suite's
    Branin runs used to crash here with k < 0)."""
    from ecotune.pruning import incumbent_floor, should_prune

    assert incumbent_floor([-0.4, 0.2, 0.1]) is None
    assert incumbent_floor([1.3, 0.9]) is None
    assert not should_prune([-0.5] * 20, prune_below=0.9)
    assert should_prune([0.0] * 20, prune_below=0.9)  # in [0, 1] the bound still prunes
    assert 0.0 < incumbent_floor([1.0] * 10 + [0.0] * 10) < 0.5
