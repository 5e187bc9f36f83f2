"""The benchmark suite: standard problems, BoTorch peers, the 2-seed smoke run and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecotune.bench.problems import PROBLEMS, ProblemEvaluator
from ecotune.bench.runs import load_bench, replay_one
from ecotune.bench.suite import mean_ci, read_runs, summarise, unranked
from ecotune.bench.suite_plots import score_at
from ecotune.trial import Trial, TrialStatus


def test_botorch_problems_match_their_known_optima() -> None:
    """The normalised score is 1 at BoTorch's published optimiser (Branin's first)."""
    pb = PROBLEMS["branin"]()
    x = np.array([(-np.pi + 5) / 15, 12.275 / 15])  # argmin of Branin, mapped to [0, 1]
    assert pb.true_score({"x0": x[0], "x1": x[1]}) == pytest.approx(1.0, abs=1e-4)
    hart = PROBLEMS["hartmann"]()
    xo = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
    assert hart.true_score({f"x{j}": v for j, v in enumerate(xo)}) == pytest.approx(1.0, abs=1e-3)


def test_low_fidelity_is_biased_or_unbiased_as_declared() -> None:
    rng = np.random.default_rng(0)
    biased = PROBLEMS["branin"]()
    U = rng.random((200, 2))
    assert np.abs(biased.value(U, biased.r_min) - biased.value(U, biased.r_max)).mean() > 0.01
    # a noisy prefix mean is unbiased over the draw of the instances (the problem's seed)
    from ecotune.bench.problems import noisy_prefix

    draws = [noisy_prefix("branin", seed=s) for s in range(40)]
    u = U[:1]
    prefix = np.mean([pb.value(u, 20)[0] for pb in draws])
    truth = np.mean([pb.value(u, pb.r_max)[0] for pb in draws])
    assert abs(prefix - truth) < 0.05 and 0.05 < truth < 0.95


def test_problem_evaluator_keeps_the_token_limit_and_charges_alpha_r_plus_beta() -> None:
    pb = PROBLEMS["hartmann"]()
    ev = ProblemEvaluator(pb)
    cfg = {f"x{j}": 0.5 for j in range(pb.dim)}
    full = ev.evaluate(Trial(id=0, config=cfg, fidelity=50, token_limit=10**6))
    assert full.status == TrialStatus.COMPLETE and full.tokens == 40 * 50 + 100
    cut = ev.evaluate(Trial(id=1, config=cfg, fidelity=50, token_limit=1000))
    assert cut.status == TrialStatus.PARTIAL and cut.tokens <= 1000 and cut.n_evaluated == 22
    noisy = ProblemEvaluator(PROBLEMS["noisy-hartmann"]())
    a = noisy.evaluate(Trial(id=2, config=cfg, fidelity=20, token_limit=10**6))
    b = noisy.evaluate(Trial(id=3, config=cfg, fidelity=40, token_limit=10**6))
    assert b.reused_tokens == a.tokens and b.instance_scores[:20] == a.instance_scores


@pytest.mark.parametrize("method", ["eipu", "mfkg"])
def test_botorch_peers_run_within_budget(method: str) -> None:
    b = load_bench("branin")
    r = replay_one(b, method, 0, 12_000)
    assert r["tokens_used"] <= 12_000 and r["over_limit"] == 0 and r["trials"] >= 3
    assert not np.isnan(r["final_true"])


def test_summary_statistics() -> None:
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.4841, abs=1e-3)  # t(0.975, 2) * 1 / sqrt(3)
    run = {"trajectory": [[100, 0.2], [300, 0.5]], "budget": 400}
    assert np.isnan(score_at(run, 50)) and score_at(run, 200) == 0.2 and score_at(run, 400) == 0.5
    runs = [{"problem": p, "method": m, "seed": 0, "budget": 10, "tokens_used": 10,
             "oracle": 1.0, "trajectory": [[5, s]], "final_true": s}
            for p, scores in (("a", {"x": 0.9, "y": 0.5, "ecotune": 0.95, "ecotune+v": 1.0}),
                              ("b", {"x": 0.1, "y": 0.5, "ecotune": 0.6, "ecotune+v": 0.0}))
            for m, s in scores.items()]
    s = summarise(runs)
    assert s["ranks"]["at100"] == {"x": 3.0, "y": 3.0, "ecotune": 1.5, "ecotune+v": 2.5}
    # the field: EcoTune's default and the peers, without its variants
    assert s["field_ranks"]["at100"] == {"x": 2.5, "y": 2.5, "ecotune": 1.0}
    assert s["max_spend_ratio"] == 1.0
    tied = summarise([dict(r, final_true=0.5, trajectory=[[5, 0.5]]) for r in runs])
    assert set(tied["ranks"]["at100"].values()) == {2.5}  # ties share the mean rank
    # a method run on one problem only is left out of the ranks, not averaged over it
    partial = summarise(runs + [dict(runs[0], method="z", final_true=2.0, trajectory=[[5, 2.0]])])
    assert partial["ranks"]["at100"] == s["ranks"]["at100"]
    assert unranked(partial["problems"]) == {"z": 1} and unranked(s["problems"]) == {}
    # and so is one run on every problem but with fewer seeds than the rest on one
    more = [dict(r, seed=1) for r in runs if r["method"] != "y" or r["problem"] == "a"]
    few = summarise(runs + more)
    assert unranked(few["problems"]) == {"y": 1} and "y" not in few["ranks"]["at100"]
    # asks a peer's Sobol design answered when its acquisition broke down: per method, in all
    # and in how many runs (rows without the field: none)
    xs = [r for r in runs if r["method"] == "x"]
    fell = [dict(r, fallbacks=k) for r, k in zip(xs, (3, 0), strict=True)]
    assert summarise(runs)["fallbacks"] == {}
    assert summarise(fell + [r for r in runs if r["method"] != "x"])["fallbacks"] == {"x": [3, 1]}


def test_headline_counts_target_cells_token_ratios_and_pairs() -> None:
    """The report's headline: EcoTune against every peer per (problem, budget point), its
    tokens to the best peer's final score over each BOHB's, and seed-paired differences."""
    from ecotune.bench.headline import headline, paired, target_cells, token_ratio, token_target

    def run(p, m, seed, traj):
        return {"problem": p, "method": m, "seed": seed, "budget": 100, "tokens_used": 100,
                "oracle": 1.0, "trajectory": traj, "final_true": traj[-1][1]}

    runs = []
    for seed in range(30):
        runs += [run("a", "ecotune", seed, [[20, 0.2], [40, 0.8]]),          # late, best
                 run("a", "bohb", seed, [[10, 0.5], [90, 0.6]]),             # early lead
                 run("a", "smac_bohb", seed, [[10, 0.1], [80, 0.8]]),        # ties at the end
                 run("a", "ecotune+paper", seed, [[40, 0.7 + 0.01 * (seed % 2)]]),
                 run("a", "helm", seed, [[5, 0.99]])]                         # not a peer
    s = summarise(runs)
    met, total, misses = target_cells(s)
    # at 25 tokens: 0.2 < bohb 0.5; at 50 and 100: 0.8 >= 0.6 and >= smac_bohb's 0.8
    assert (met, total) == (2, 3) and misses == [
        "a at 25%: 0.200 ± 0.000 vs bohb 0.500 ± 0.000"]
    rows = s["problems"]["a"]
    # EcoTune holds 0.8 from 40 tokens; bohb never reaches it; smac_bohb from 80
    assert token_ratio(rows, "bohb", "smac_bohb") == "bohb never"
    assert token_ratio(rows, "smac_bohb", "smac_bohb") == "0.50"
    assert token_ratio(rows, "smac_bohb", "ecotune") == "0.50"
    pair = paired(runs)
    assert pair[2] == "| a | ecotune+paper | 30 | +0.095 ± 0.002 | 30 / 0 |"
    md = "\n".join(headline(runs, s))
    assert "**2 of 3 cells**" in md and "helm" not in md
    assert token_target(s) == (0, 1, 1)  # 0.50 of smac_bohb's tokens: missed
    assert token_target(s, at_most=0.6) == (0, 0, 1)  # bohb never within the budget
    # bohb run to 5x the budget: its median run holds 0.8 from 400 tokens (17 seeds of 30);
    # used once every seed the budgeted rows have is there
    long = [run("a", "bohb", seed, [[10, 0.5], [400 if seed < 17 else 450, 0.8]])
            for seed in range(30)]
    part = summarise(runs, {5.0: long[:29]})
    assert token_ratio(part["problems"]["a"], "bohb", "smac_bohb") == "bohb never"
    assert "| bohb never (5× budget: 29 of 30 seeds, not used) |" in "\n".join(
        headline(runs, part))
    s5 = summarise(runs, {5.0: long})
    assert s5["problems"]["a"]["bohb"]["horizon"]["seeds"] == 30
    assert token_ratio(s5["problems"]["a"], "bohb", "smac_bohb") == "0.10"  # 40 / 400
    assert token_target(s5, at_most=0.6) == (1, 1, 1)  # 0.10 and 0.50
    # a bohb that does not get there within 5 budgets bounds the ratio: < 40 / 500
    never = summarise(runs, {5.0: [dict(r, trajectory=[[10, 0.5]]) for r in long]})
    assert token_ratio(never["problems"]["a"], "bohb", "smac_bohb") == "< 0.08"
    assert token_target(never, at_most=0.6) == (1, 1, 1)  # a bound within it decides
    md5 = "\n".join(headline(runs, s5))
    assert "tokens to the best peer's final at most 20% of both BOHBs': **0 of the 1" in md5
    assert "| 0.10 (5× budget: 30 seeds) | 0.50 |" in md5


def test_a_longer_horizon_extends_the_same_smac_bohb_run() -> None:
    """The token budget only ends SMAC3's BOHB study, so its run to twice the budget is the
    budgeted run continued (the last trial, cut by the budget, then runs whole): the
    horizon runs measure the tokens the budgeted run would have needed. (Syne Tune's:
    tests/test_bench.py.)"""
    bench = load_bench("branin")
    budget = 20_000
    short = replay_one(bench, "smac_bohb", 0, budget)["trajectory"]
    long = replay_one(bench, "smac_bohb", 0, 2 * budget)["trajectory"]
    assert len(long) > len(short) > 5
    assert long[:len(short) - 1] == short[:-1]


def test_suite_smoke_runs_resumes_and_rejects_bad_input(tmp_path: Path) -> None:
    """The CI version of ``ecotune bench suite``: 2 seeds, 2 problems, 4 methods (both
    BOHBs: Syne Tune's and SMAC3's)."""
    from ecotune.bench.cli import main

    out = tmp_path / "suite"
    assert main(["suite", "--smoke", "--seeds", "2", "--out", str(out)]) == 0
    runs = read_runs(out / "runs.jsonl.gz")
    assert len(runs) == 2 * 2 * 4
    assert {r["method"] for r in runs} == {"ecotune", "random", "bohb", "smac_bohb"}
    assert {r["problem"] for r in runs} == {"branin", "noisy-branin"}
    assert all(r["tokens_used"] <= r["budget"] and r["over_limit"] == 0 for r in runs)
    md = (out / "report.md").read_text()
    assert "Average rank" in md and "noisy-branin (unbiased" in md
    assert (out / "branin.png").stat().st_size > 1000
    before = (out / "runs.jsonl.gz").read_bytes()
    assert main(["suite", "--smoke", "--seeds", "2", "--out", str(out)]) == 0
    assert (out / "runs.jsonl.gz").read_bytes() == before  # resumed: nothing re-run
    assert main(["suite", "--smoke", "--optimizers", "nope", "--out", str(out)]) == 2
    assert main(["suite", "--smoke", "--horizon", "0.5", "--out", str(out)]) == 2
    assert (out / "runs.jsonl.gz").read_bytes() == before
    # BOHB to twice the budget: its own file, the table's ratio from it, the rest unchanged
    assert main(["suite", "--smoke", "--seeds", "2", "--optimizers", "bohb", "--horizon", "2",
                 "--out", str(out)]) == 0
    long = read_runs(out / "runs-2x.jsonl.gz")
    assert len(long) == 4 and {r["budget"] for r in long} == {
        2 * r["budget"] for r in runs if r["method"] == "bohb"}
    assert (out / "runs.jsonl.gz").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["problems"]["branin"]["bohb"][
        "horizon"]["h"] == 2.0
    # the docs get the report's tables between their markers, the rest untouched
    docs = tmp_path / "bench.md"
    docs.write_text("# Intro\n<!-- suite:begin -->\nold table\n<!-- suite:end -->\nTail\n")
    assert main(["suite", "--report-only", "--out", str(out), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith("# Intro\n<!-- suite:begin -->\n### Against the targets")
    assert "### Average rank" in text and "old table" not in text
    assert text.endswith("<!-- suite:end -->\nTail\n") and "## branin" not in text
    docs.write_text("no markers\n")
    assert main(["suite", "--report-only", "--out", str(out), "--docs", str(docs)]) == 2
    assert docs.read_text() == "no markers\n"


def test_table_surrogate_ranks_held_out_configs_and_answers_any_config() -> None:
    """YAHPO-style surrogate: fitted on a table, checked on configs it never saw, and a
    trial at a config off the table is answered within its limit, prefixes nested."""
    from ecotune.bench.collect import sobol_configs
    from ecotune.bench.replay import Table
    from ecotune.bench.surrogate_table import SurrogateEvaluator, TableSurrogate, cross_validate
    from ecotune.bench.synthetic import SyntheticLandscape, synthetic_space

    land = SyntheticLandscape(60, seed=3)
    space = synthetic_space()
    tb = Table.from_landscape(land, space, sobol_configs(space, 30, seed=0), 40)
    cv = cross_validate(tb, folds=3)
    assert cv["spearman"] > 0.6 and cv["configs"] == 30
    sur = TableSurrogate(tb)
    ev = SurrogateEvaluator(sur)
    off = space.sample(np.random.default_rng(5), 1)[0]
    a = ev.evaluate(Trial(id=0, config=off, fidelity=10, token_limit=10**6))
    b = ev.evaluate(Trial(id=1, config=off, fidelity=30, token_limit=10**6))
    assert a.status == TrialStatus.COMPLETE and b.instance_scores[:10] == a.instance_scores
    assert b.reused_tokens == a.tokens
    cut = ev.evaluate(Trial(id=2, config=space.sample(np.random.default_rng(6), 1)[0],
                            fidelity=30, token_limit=400))
    assert cut.tokens <= 400


def test_surrogate_check_is_reported_cached_and_spliced(tmp_path: Path, monkeypatch) -> None:
    """The suite's report carries each surrogate's cross-validation on held-out configs,
    computed once per table file (cached by its size), and the docs get that table too."""
    import ecotune.bench.surrogate_table as st
    from ecotune.bench.suite import DOCS_BEGIN, DOCS_END, splice_docs, surrogate_checks

    got = surrogate_checks(tmp_path, ["surrogate-arithmetic"])  # benchmarks/arithmetic.jsonl.gz
    cv = got["surrogate-arithmetic"]
    assert cv["configs"] == 49 and cv["spearman"] > 0.6 and 0 < cv["mae"] < 0.2

    def refit(*a, **k):
        raise AssertionError("refitted a cached check")

    monkeypatch.setattr(st, "cross_validate", refit)
    assert surrogate_checks(tmp_path, ["surrogate-arithmetic"]) == got
    with pytest.raises(FileNotFoundError, match="no table"):
        surrogate_checks(tmp_path, ["surrogate-nosuchtable"])
    report = tmp_path / "report.md"
    report.write_text("# r\n\n## Against the targets\n\nA\n\n## Average rank\n\nB\n\n"
                      "## Surrogate check\n\nC\n\n## branin (biased)\n\nD\n")
    docs = tmp_path / "docs.md"
    docs.write_text(f"x\n{DOCS_BEGIN}\nold\n{DOCS_END}\ny\n")
    splice_docs(report, docs)
    text = docs.read_text()
    assert "### Surrogate check" in text and "C" in text and "D" not in text and "old" not in text


def test_a_table_still_being_collected_is_not_in_the_suite(tmp_path: Path) -> None:
    """Runs on a table whose configs are still coming in would not reproduce: the suite
    leaves it out until every planned config is recorded."""
    import gzip

    from ecotune.bench.suite import collected

    src = Path(__file__).resolve().parents[1] / "benchmarks" / "arithmetic.jsonl.gz"
    assert collected(src)
    lines = gzip.open(src, "rt").read().splitlines()
    head = json.loads(lines[0])
    head["n_configs"] += 10  # planned more than it holds
    part = tmp_path / "partial.jsonl.gz"
    with gzip.open(part, "wt") as f:
        f.write("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    assert not collected(part)


def test_a_run_torn_by_a_kill_is_skipped_and_repaired(tmp_path: Path) -> None:
    """Runs are gzip members appended one by one: a kill mid-write leaves a torn member,
    which reading skips and a resumed suite cuts off before appending."""
    import gzip

    path = tmp_path / "runs.jsonl.gz"
    for i in range(3):
        with gzip.open(path, "at") as f:
            f.write(json.dumps({"seed": i}) + "\n")
    whole = path.read_bytes()
    with gzip.open(path, "at") as f:
        f.write(json.dumps({"seed": 3, "pad": "x" * 5000}) + "\n")
    path.write_bytes(path.read_bytes()[:len(whole) + 40])  # the 4th member cut short
    assert [r["seed"] for r in read_runs(path)] == [0, 1, 2]
    assert [r["seed"] for r in read_runs(path, repair=True)] == [0, 1, 2]
    with gzip.open(path, "at") as f:
        f.write(json.dumps({"seed": 4}) + "\n")
    assert [r["seed"] for r in read_runs(path)] == [0, 1, 2, 4]


def test_rows_of_an_older_suite_version_are_reported_run_again_and_replaced(tmp_path: Path
                                                                             ) -> None:
    """A change that alters what a run records raises the suite's version: older rows are
    named in the report and run again by the next ``bench suite``; rows the new version
    cannot change (no instance scores, a seeded method) are stamped, not re-run."""
    from ecotune.bench.cli import main
    from ecotune.bench.collect import rewrite_jsonl_gz
    from ecotune.bench.suite_versions import SUITE_VERSION, stale

    out = tmp_path / "suite"
    args = ["suite", "--smoke", "--seeds", "2", "--out", str(out),
            "--optimizers", "random,bohb"]
    assert main(args) == 0
    path = out / "runs.jsonl.gz"
    rows = read_runs(path)
    assert len(rows) == 8 and {r["version"] for r in rows} == {SUITE_VERSION}
    for r in rows:  # as version 1 recorded them: no version field, another final score
        if (r["problem"], r["method"]) != ("noisy-branin", "bohb"):
            del r["version"]
            r["final_true"] = -1.0
    rewrite_jsonl_gz(path, rows)
    assert stale(rows) == {("branin", "bohb"): 2, ("branin", "random"): 2,
                           ("noisy-branin", "random"): 2}
    assert main(["suite", "--report-only", "--out", str(out)]) == 0
    assert "**4 of 8 runs are of an older suite version**" in (out / "report.md").read_text()
    assert main(args) == 0
    again = read_runs(path)
    assert len(again) == 8 and not stale(again)  # compacted: one row a key
    final = {(r["problem"], r["method"], r["seed"]): r["final_true"] for r in again}
    # branin × random: no instance scores, seeded: stamped, kept as recorded
    assert final["branin", "random", 0] == final["branin", "random", 1] == -1.0
    # bohb (its old randomness was not the seed's) and noisy-branin (instance scores): re-run
    assert all(final[p, m, s] != -1.0 for p, m in [("branin", "bohb"), ("noisy-branin", "random")]
               for s in (0, 1)), final
    assert "older suite version" not in (out / "report.md").read_text()


def test_suite_workers_record_what_one_process_records(tmp_path: Path) -> None:
    """``--workers 2`` (spawned processes of one thread each) records the runs one process
    records, whatever order they finish in; a bad count is refused."""
    from ecotune.bench.cli import main

    args = ["suite", "--smoke", "--seeds", "2", "--optimizers", "ecotune,random,bohb"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "two")]) == 0

    def rows(folder: str) -> list[str]:
        return sorted(json.dumps({k: v for k, v in r.items() if k != "wall_s"}, sort_keys=True)
                      for r in read_runs(tmp_path / folder / "runs.jsonl.gz"))

    assert len(rows("one")) == 2 * 2 * 3 and rows("one") == rows("two")
    assert (tmp_path / "one" / "report.md").read_text() == (tmp_path / "two" / "report.md").read_text()
    assert main([*args, "--workers", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_a_failing_run_is_named_and_the_others_are_recorded(tmp_path: Path, monkeypatch,
                                                            capsys, caplog) -> None:
    """A run that raises stops no other: the rest are recorded and reported, the command
    names the failed runs and exits 1, and a second call runs only those."""
    from ecotune.bench import suite_workers
    from ecotune.bench.cli import main

    real = suite_workers.run_job

    def flaky(job, benches=None):
        if job[1] == "random" and job[2] == 1:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return real(job, benches)

    monkeypatch.setattr(suite_workers, "run_job", flaky)
    args = ["suite", "--smoke", "--seeds", "2", "--optimizers", "random,ecotune",
            "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 run(s) failed: branin random seed 1: RuntimeError: probability tensor" in err
    assert "noisy-branin random seed 1: RuntimeError" in err
    assert "noisy-branin random seed 1 failed:\nTraceback" in caplog.text  # the log has it all
    assert len(read_runs(tmp_path / "runs.jsonl.gz")) == 2 * 2 * 2 - 2
    assert (tmp_path / "report.md").exists()
    monkeypatch.setattr(suite_workers, "run_job", real)
    assert main(args) == 0
    runs = read_runs(tmp_path / "runs.jsonl.gz")
    assert sorted((r["problem"], r["method"], r["seed"]) for r in runs if r["method"] == "random") \
        == [("branin", "random", 0), ("branin", "random", 1),
            ("noisy-branin", "random", 0), ("noisy-branin", "random", 1)]


def test_worker_processes_report_a_failed_run_after_the_others() -> None:
    from ecotune.bench.suite_workers import RunsFailed, run_jobs

    jobs = [("branin", "no-such-method", 0, 2000, "biased"), ("branin", "random", 0, 2000, "biased")]
    rows = []
    with pytest.raises(RunsFailed, match="branin no-such-method seed 0: ") as e:
        for r in run_jobs(jobs, workers=2):
            rows.append(r)
    assert [r["method"] for r in rows] == ["random"] and len(e.value.failed) == 1


def test_each_suite_version_re_runs_only_the_rows_it_changes() -> None:
    """Version 3 (the BoTorch peers fit their noise where scores carry no instance scores)
    re-runs their function-problem rows only; every other older row is stamped as it is,
    unless an earlier version's change still applies to it."""
    from ecotune.bench.suite_versions import SUITE_VERSION, unchanged_by

    def row(method: str, kind: str, version: int | None) -> dict:
        r = {"problem": "p", "method": method, "seed": 0, "kind": kind}
        return r if version is None else {**r, "version": version}

    assert SUITE_VERSION == 3
    for method in ("botorch", "eipu", "mfkg"):
        assert not unchanged_by(row(method, "biased", 2))
        assert unchanged_by(row(method, "unbiased", 2))
        assert unchanged_by(row(method, "llm-table", 2))
    assert unchanged_by(row("random", "biased", 2)) and unchanged_by(row("random", "biased", None))
    assert not unchanged_by(row("dehb", "biased", None))  # version 2's change (its seed)
    assert not unchanged_by(row("random", "llm-table", None))  # version 2's answer rule
    assert not unchanged_by(row("random", "biased", 3))  # already current: nothing to stamp
