"""``ecotune bench suite --verify``: recorded runs are run again and compared."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from unittest import mock

from ecotune.bench.runs import load_bench
from ecotune.bench.suite import RUNS, problem_budget
from ecotune.bench.suite_verify import Check, compare, jobs_to_verify, verify
from ecotune.bench.suite_workers import run_job

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite"


def _record(out: Path, problem: str, methods: tuple[str, ...], seeds: int) -> list[dict]:
    bench = load_bench(problem, held_out=True)
    budget = problem_budget(problem, bench, 0.25)
    rows = [run_job((problem, m, s, budget, "unbiased"), {problem: bench})
            for s in range(seeds) for m in methods]
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / RUNS, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def test_a_row_that_repeats_passes_and_a_changed_one_is_named(tmp_path: Path) -> None:
    from ecotune.bench.cli import main

    out = tmp_path / "suite"
    rows = _record(out, "noisy-branin", ("ecotune", "random"), 2)
    checks = list(verify(out / RUNS, seeds=2, problems=["noisy-branin"]))
    assert len(checks) == 4 and all(c.repeats and c.parts_at is None for c in checks)
    argv = ["suite", "--out", str(out), "--problems", "noisy-branin", "--verify", "2"]
    assert main(argv) == 0
    # a recorded row that the code no longer gives: one trial's tokens changed
    changed = next(r for r in rows if r["method"] == "random" and r["seed"] == 1)
    changed["trajectory"][1][0] += 1
    with gzip.open(out / RUNS, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    before = (out / RUNS).read_bytes()
    bad = [c for c in verify(out / RUNS, seeds=2, problems=["noisy-branin"]) if not c.repeats]
    assert [(c.method, c.seed, c.parts_at) for c in bad] == [("random", 1, 1)]
    assert main(argv) == 1
    assert main(argv[:-1] + ["1"]) == 0  # seed 0 only: it repeats
    assert main(argv[:-1] + ["2", "--optimizers", "ecotune"]) == 0
    assert (out / RUNS).read_bytes() == before  # verifying records nothing
    # bad input: a clear error and exit 2
    assert main(argv[:-1] + ["-1"]) == 2
    assert main(["suite", "--out", str(tmp_path / "none"), "--problems", "noisy-branin",
                 "--verify", "1"]) == 2
    assert main(argv + ["--optimizers", "qmc"]) == 2  # nothing recorded for it


def test_compare_names_where_runs_part_and_a_cut_short_run() -> None:
    rec = {"problem": "p", "method": "m", "seed": 0, "trials": 3, "final_true": 0.5,
           "trajectory": [[10, 0.1], [20, 0.3], [30, 0.5]]}
    assert compare(rec, dict(rec)) == Check("p", "m", 0, True, None, 0.5, 0.5, (3, 3))
    shorter = dict(rec, trials=2, trajectory=rec["trajectory"][:2], final_true=0.3)
    assert compare(rec, shorter).parts_at == 2 and not compare(rec, shorter).repeats
    later = dict(rec, trajectory=[[10, 0.1], [20, 0.3], [31, 0.5]])
    assert compare(rec, later).parts_at == 2
    # the final score alone differing (an answer rule changed) is not a repeat either
    assert not compare(rec, dict(rec, final_true=0.4)).repeats
    # scores a few units in the last place apart (another CPU's libm) repeat, not exactly
    ulp = dict(rec, final_true=0.5 + 4e-16, trajectory=[[10, 0.1], [20, 0.3 - 6e-17],
                                                        [30, 0.5 + 4e-16]])
    c = compare(rec, ulp)
    assert c.repeats and not c.exact and c.parts_at is None
    assert not compare(rec, dict(ulp, final_true=0.5001)).repeats


def test_verify_chooses_current_version_seeds_and_leaves_mfkg_out() -> None:
    rows = [{"problem": "noisy-branin", "method": m, "seed": s, "budget": 100,
             "kind": "unbiased", "version": v}
            for m in ("ecotune", "mfkg") for s in range(3) for v in (3,)]
    rows.append({"problem": "old", "method": "ecotune", "seed": 0, "budget": 1,
                 "kind": "biased", "version": 1})
    names = {"noisy-branin": "noisy-branin", "old": "old"}
    jobs = [j for j, _ in jobs_to_verify(rows, names, 2)]
    assert jobs == [("noisy-branin", "ecotune", 0, 100, "unbiased"),
                    ("noisy-branin", "ecotune", 1, 100, "unbiased")]
    assert {j[1] for j, _ in jobs_to_verify(rows, names, 1, ["mfkg"])} == {"mfkg"}


def test_recorded_peer_rows_repeat_here() -> None:
    """Seed 0 of the recorded suite, for EcoTune and peers that run through their own
    libraries (both BOHBs, Optuna's TPE) on the 49-config gsm8k_calc table and noisy
    Branin, and DEHB (its own environment) on Branin: what the report shows is what this
    checkout runs (docs/benchmarks.md, "Do the recorded rows repeat?"). DEHB's rows on
    Branin came out the same in every environment they were run in; on the noisy and LLM
    problems they did not (2026-12-03), which ``ecotune bench suite --verify`` checks.
    ``ecotune+narrow`` on Branin: a variant replayed with the defaults of its day."""
    problems = ["benchmarks/gsm8k_calc.jsonl.gz", "noisy-branin"]
    methods = ["ecotune", "random", "bohb", "smac_bohb", "tpe"]
    # worker processes started under the hash seed the suite is recorded with (SMAC3)
    with mock.patch.dict(os.environ, {"PYTHONHASHSEED": "0"}):
        checks = list(verify(SUITE / RUNS, seeds=1, problems=problems, methods=methods,
                             workers=2))
    # and a variant recorded under the defaults of its day (binomial noise, here on Branin)
    checks += list(verify(SUITE / RUNS, seeds=1, problems=["branin"],
                          methods=["dehb", "ecotune+narrow"]))
    assert len(checks) == len(problems) * len(methods) + 2
    assert [c for c in checks if not c.repeats] == []
