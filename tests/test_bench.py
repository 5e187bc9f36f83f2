"""Replay benchmark: exact token charging, token limits, budget, and the report command."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ecotune.bench.collect import collect, sobol_configs
from ecotune.bench.replay import ReplayEvaluator, Table
from ecotune.bench.synthetic import SyntheticLandscape, synthetic_space
from ecotune.evaluator import fits
from ecotune.optimizers import make_optimizer
from ecotune.space import helm_default
from ecotune.trial import Trial, TrialStatus


@pytest.fixture(scope="module")
def table() -> Table:
    land = SyntheticLandscape(60, seed=3)
    space = synthetic_space()
    return Table.from_landscape(land, space, sobol_configs(space, 24, seed=0), 40,
                                helm=helm_default(space, max_tokens=16))


def test_replay_charges_exactly_recorded_tokens(table: Table) -> None:
    ev = ReplayEvaluator(table)
    for k in (0, 5, 17):
        cfg = table.configs[k]
        res = ev.evaluate(Trial(id=0, config=cfg, fidelity=12, token_limit=10**9))
        assert ev.hits[-1] == k and ev.dists[-1] == pytest.approx(0.0)
        assert res.n_evaluated == 12 and res.status == TrialStatus.COMPLETE
        assert res.prompt_tokens == int(table.prompt_tokens[k, :12].sum())
        assert res.completion_tokens == int(table.completion_tokens[k, :12].sum())
        assert res.score == pytest.approx(table.scores[k, :12].mean())
        assert res.instance_ids == table.instance_ids[:12]


def test_replay_honours_token_limit(table: Table) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        ev = ReplayEvaluator(table)  # a fresh study: nothing measured before
        k = int(rng.integers(table.n_configs))
        cfg = table.configs[k]
        limit = int(rng.integers(1, 4000))
        res = ev.evaluate(Trial(id=0, config=cfg, fidelity=30, token_limit=limit))
        assert res.tokens <= limit
        n = res.n_evaluated
        assert res.tokens == int(table.prompt_tokens[k, :n].sum() + table.completion_tokens[k, :n].sum())
        if n < 30:  # stopped before the first instance that did not fit
            assert not fits(res.tokens, int(table.prompt_tokens[k, n]), int(cfg["max_tokens"]), limit)
            assert res.status in (TrialStatus.PARTIAL, TrialStatus.FAILED)


def test_replay_keeps_what_a_config_already_measured(table: Table) -> None:
    """Promotion from r=10 to r=25 pays only for instances 11..25, like the trial runner;
    a pruned trial stops on the same bound."""
    ev = ReplayEvaluator(table)
    cfg = table.configs[3]
    low = ev.evaluate(Trial(id=0, config=cfg, fidelity=10, token_limit=10**9))
    high = ev.evaluate(Trial(id=1, config=cfg, fidelity=25, token_limit=10**9))
    cost = table.prompt_tokens[3] + table.completion_tokens[3]
    assert low.tokens == int(cost[:10].sum()) and high.reused_tokens == low.tokens
    assert high.tokens == int(cost[10:25].sum()) and high.n_evaluated == 25
    assert high.score == pytest.approx(table.scores[3, :25].mean())
    worst = int(np.argmin(table.true_scores))
    res = ReplayEvaluator(table).evaluate(Trial(id=2, config=table.configs[worst], fidelity=40,
                                                token_limit=10**9, prune_below=0.99))
    assert res.status == TrialStatus.PRUNED and res.n_evaluated < 40


def test_replay_nearest_neighbour(table: Table) -> None:
    cfg = dict(table.configs[7])
    cfg["repetition_penalty"] = min(1.5, cfg["repetition_penalty"] + 1e-3)
    assert table.nearest(cfg) == 7
    assert table.true_score(cfg) == pytest.approx(table.scores[7].mean())


@pytest.mark.parametrize("method", ["ecotune", "random", "bohb", "cmaes"])
def test_replay_never_exceeds_budget(table: Table, method: str) -> None:
    budget = 8000 if method == "ecotune" else 20000
    for seed in range(3 if method != "ecotune" else 1):
        opt = make_optimizer(method, space=table.space, budget_tokens=budget, r_min=3, r_max=40,
                             seed=seed)
        ev = ReplayEvaluator(table)
        while (trial := opt.ask()) is not None:
            res = ev.evaluate(trial)
            assert res.tokens <= trial.token_limit
            opt.tell(trial, result=res)
        assert opt.tokens_used <= budget


class _Echo:
    """A fake engine that answers '3' with exact-looking usage."""

    def generate(self, prompts, params):
        from ecotune.engines.base import Completion

        return [Completion(text=" 3", prompt_tokens=len(p) // 4, completion_tokens=min(2, params.max_tokens),
                           index=i) for i, p in enumerate(prompts)]


def test_collect_resumes(tmp_path) -> None:
    out = tmp_path / "t.jsonl.gz"
    collect("arithmetic", "http://unused", "m", 3, 6, out, engine=_Echo(), progress=False)
    tb = Table.load(out)
    assert tb.scores.shape == (4, 6) and tb.helm_index == 0
    n_before = len(gzip.open(out, "rt").read().splitlines())
    collect("arithmetic", "http://unused", "m", 3, 6, out, engine=_Echo(), progress=False)
    assert len(gzip.open(out, "rt").read().splitlines()) == n_before  # nothing redone
    rows = [json.loads(x) for x in gzip.open(out, "rt").read().splitlines()]
    assert sum(r["type"] == "row" for r in rows) == 24

    # a kill in the middle of a write leaves a torn gzip member: the next run keeps every
    # whole record before it and appends after them (nothing lands behind the tear)
    kept = [r for r in rows if not (r["type"] == "row" and r["c"] == 3)]
    with gzip.open(out, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept))
    whole = out.read_bytes()
    with gzip.open(out, "at") as f:
        f.write(json.dumps({"type": "row", "c": 3, "i": 0, "s": [1.0]}) + "\n")
    torn = out.read_bytes()
    out.write_bytes(torn[:(len(whole) + len(torn)) // 2])  # cut in the member's data
    collect("arithmetic", "http://unused", "m", 3, 6, out, engine=_Echo(), progress=False)
    again = [json.loads(x) for x in gzip.open(out, "rt").read().splitlines()]
    assert again[:len(kept)] == kept and len(again) == len(rows)
    assert Table.load(out).scores.shape == (4, 6)


def test_report_on_synthetic(tmp_path) -> None:
    from ecotune.bench.cli import main

    out = tmp_path / "rep"
    rc = main(["run", "--table", "synthetic", "--budget", "12000", "--seeds", "2",
               "--optimizers", "random,qmc,bohb,helm", "--out", str(out), "--no-timing"])
    assert rc == 0
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "tokens spent / budget" in md
    for f in ("anytime.png", "ecdf.png", "tokens_to_target.png"):
        assert (out / f).stat().st_size > 1000
    res = json.loads((out / "results.json").read_text())
    assert res["max_spend_ratio"] <= 1.0 and res["over_limit_trials"] == 0


@pytest.mark.parametrize("method", ["ecotune", "random", "botorch", "qmc"])
def test_restricted_replay_only_runs_table_configs(table: Table, method: str) -> None:
    from ecotune.bench.report import Bench, replay_one

    bench = Bench("t", table.space, 3, 40, lambda seed: ReplayEvaluator(table), table.true_score,
                  float(table.true_scores.max()), "best", {}, table)
    out = replay_one(bench, method, seed=0, budget=12_000, restrict=True)
    assert out["mean_map_dist"] == pytest.approx(0.0, abs=1e-9)  # no mapping needed
    assert out["tokens_used"] <= 12_000 and out["over_limit"] == 0


def test_a_replay_that_buys_nothing_more_stops_as_stalled(table: Table) -> None:
    """With a budget no table can absorb, Syne Tune's BOHB over the table's 24 configs
    soon asks only configs it has measured, whose answers are reused for free: the replay
    stops ``stalled`` after STALL such trials in a row instead of running for ever."""
    from ecotune.bench.report import Bench, replay_one
    from ecotune.bench.runs import STALL

    bench = Bench("t", table.space, 3, 40, lambda seed: ReplayEvaluator(table), table.true_score,
                  float(table.true_scores.max()), "best", {}, table)
    out = replay_one(bench, "bohb", seed=0, budget=10**7, restrict=True)
    tokens = [t for t, _ in out["trajectory"]]
    assert out["stop_reason"] == "stalled" and out["tokens_used"] < 10**7
    assert tokens[-STALL - 1:] == [tokens[-1]] * (STALL + 1) and tokens[-STALL - 2] < tokens[-1]


def test_restrict_needs_a_table(tmp_path, capsys) -> None:
    from ecotune.bench.cli import main

    rc = main(["run", "--table", "synthetic", "--seeds", "1", "--optimizers", "random",
               "--out", str(tmp_path), "--restrict", "--no-timing"])
    assert rc == 2 and "--restrict needs a recorded table" in capsys.readouterr().err


def test_bohb_with_a_longer_budget_extends_the_same_run(tmp_path) -> None:
    """The report measures BOHB's tokens-to-target beyond the budget with a longer run;
    that is only fair if BOHB's trials do not depend on the budget."""
    from ecotune.bench.cli import main
    from ecotune.bench.report import load_bench, replay_one

    bench = load_bench("synthetic")
    short = replay_one(bench, "bohb", seed=3, budget=30000)["trajectory"]
    long = replay_one(bench, "bohb", seed=3, budget=120000)["trajectory"]
    k = len(short) - 2  # the last trials differ: their token limits meet the budget
    assert k > 5 and short[:k] == long[:k] and len(long) > len(short)
    out = tmp_path / "rep"
    assert main(["run", "--table", "synthetic", "--budget", "6000", "--seeds", "1",
                 "--optimizers", "ecotune,bohb", "--out", str(out), "--no-timing",
                 "--reach-factor", "4"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["bohb_long"]["budget"] == 24000 and res["bohb_long"]["runs"] == 1
    assert "4× the budget" in (out / "report.md").read_text()


def test_waste_counts_only_repeated_greedy_pairs(capsys: pytest.CaptureFixture[str],
                                                  tmp_path) -> None:
    import json

    from ecotune.bench.cli import main
    from ecotune.bench.waste import waste

    greedy, sampled = {"decoding": "greedy", "max_tokens": 4}, {"temperature": 0.7}
    recs = [{"type": "study", "key": "study", "r_max": 4, "budget_tokens": 1000}]
    for tid, cfg in enumerate([greedy, greedy, sampled, sampled]):
        recs.append({"type": "ask", "key": f"ask:{tid}", "trial": {"id": tid, "config": cfg}})
        for i in range(2):
            recs.append({"type": "instance", "key": f"inst:{tid}:{i}", "trial_id": tid,
                         "instance_id": str(i), "prompt_tokens": 10, "completion_tokens": 5})
        recs.append({"type": "tell", "key": f"tell:{tid}", "trial_id": tid,
                     "result": {"n_evaluated": 2, "tokens": 30, "reused_tokens": 0}})
    w = waste(recs)
    # trial 1 re-bought trial 0's two greedy answers; sampled repeats are new samples
    assert w["remeasured_tokens"] == 30 and w["remeasured_share_of_budget"] == 0.03
    assert w["below_r_max"] == 4 and w["tokens_charged"] == 120
    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["waste", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["remeasured_tokens"] == 30
