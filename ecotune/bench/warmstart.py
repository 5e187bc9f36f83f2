"""What a warm start saves on a study's second scheduled run.

For each seed: a first EcoTune study runs cold on a benchmark problem (the synthetic
landscape, a standard problem of :mod:`ecotune.bench.problems` or a recorded table) and
writes its journal; its final incumbent's true score is the target. Then a second study
(another seed, the same budget) runs three ways:

* ``cold``: as a scheduled run without a warm start (the HELM default first, as
  ``ecotune tune`` does);
* ``configs``: the first study's champion and best configs run first (``warm_start`` with
  ``observations: false``);
* ``warm``: those configs and the first study's observations as prior data (the default).

Each is charged the same way (prior data costs nothing, :mod:`ecotune.warmstart`), and the
measure is the tokens the second study spends until its incumbent's true score reaches the
first study's final score and stays there (:func:`ecotune.bench.runs.tokens_to_target`).

Usage::

    python -m ecotune.bench.warmstart --problem synthetic --budget 50000 --seeds 10 \\
        --out benchmarks/warmstart_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecotune.bench.runs import Bench, load_bench, run_to_end, tokens_to_target
from ecotune.construct import helm_first
from ecotune.optimizers import make_optimizer
from ecotune.warmstart import WarmStart, read_warm_start, study_identity

VARIANTS = ("cold", "configs", "warm")


def bench_study(bench: Bench, seed: int, budget: int, journal: str | None = None,
                warm: WarmStart | None = None) -> dict[str, Any]:
    """One EcoTune study on ``bench`` as a study config builds it (warm configs, then the
    HELM default; prior observations to the state); its trajectory and final true score."""
    space = bench.space
    tags = {"ecotune.task": bench.name, "ecotune.model": "bench"}
    initial = [space.canonical(c) for c in (warm.configs if warm else [])]
    initial += [c for c in map(space.canonical,
                               helm_first(space, bench.helm_fixed.get("max_tokens")))
                if c not in initial]
    opts: dict[str, Any] = {"initial_configs": initial, "header_extra": {"tags": tags}}
    if warm is not None:
        opts["warm_start"] = warm.to_dict()
    opt = make_optimizer("ecotune", space=space, budget_tokens=budget, r_min=bench.r_min,
                         r_max=bench.r_max, seed=seed, journal=journal, **opts)
    ev = bench.make_evaluator(seed)
    traj, _ = run_to_end(opt, ev, bench.true_score)
    cfg, _ = opt.best()
    return {"seed": seed, "trials": len(opt.state.results), "tokens_used": opt.tokens_used,
            "final_true": float(bench.true_score(cfg)), "trajectory": traj,
            "prior_observations": len(warm.observations) if warm else 0}


def warmstart_gain(problem: str = "synthetic", seeds: int = 5, budget: int = 50_000,
                   top_k: int = 3, second_seed_offset: int = 1000, first_seed: int = 0,
                   workdir: str | None = None, log: Any = None,
                   on_seed: Any = None) -> dict[str, Any]:
    """Per seed, tokens the second study needs to reach the first study's final score,
    cold and warm-started (see the module docstring); and a summary over seeds.
    ``on_seed(result so far)`` is called after each seed (long runs save as they go)."""
    bench = load_bench(problem)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ecotune-warm-") as tmp:
        root = Path(workdir or tmp)
        for seed in range(first_seed, first_seed + seeds):
            t0 = time.monotonic()
            journal = str(root / f"{bench.name}-first-{seed}.jsonl")
            Path(journal).unlink(missing_ok=True)
            first = bench_study(bench, seed, budget, journal=journal)
            identity = study_identity({"space": bench.space.to_dict(), "options": {"fixed": {}},
                                       "tags": {"ecotune.task": bench.name,
                                                "ecotune.model": "bench"}})
            ws = read_warm_start(journal, space=bench.space, identity=identity, top_k=top_k,
                                 r_max=bench.r_max)
            if not ws.matched:
                raise RuntimeError(f"warm start did not match its own problem: {ws.reason}")
            configs_only = WarmStart(ws.source, ws.configs, [], ws.matched, "configs only")
            target = first["final_true"]
            row: dict[str, Any] = {"seed": seed, "target": target,
                                   "first_tokens": first["tokens_used"],
                                   "first_to_target": tokens_to_target(first["trajectory"],
                                                                       target)}
            for name, warm in zip(VARIANTS, (None, configs_only, ws), strict=True):
                second = bench_study(bench, seed + second_seed_offset, budget, warm=warm)
                row[name] = {"to_target": tokens_to_target(second["trajectory"], target),
                             "first_hit": tokens_to_target(second["trajectory"], target,
                                                           keep=False),
                             "final_true": second["final_true"],
                             "tokens_used": second["tokens_used"], "trials": second["trials"],
                             "prior_observations": second["prior_observations"]}
            rows.append(row)
            if on_seed is not None:
                on_seed(_result(bench.name, budget, len(rows), top_k, rows))
            if log is not None:
                log(f"seed {seed}: target {target:.4f}; " + ", ".join(
                    f"{v} {row[v]['to_target']:.0f}" for v in VARIANTS)
                    + f" ({time.monotonic() - t0:.0f}s)")
    return _result(bench.name, budget, seeds, top_k, rows)


def _result(name: str, budget: int, seeds: int, top_k: int, rows: list[dict[str, Any]]
            ) -> dict[str, Any]:
    return {"problem": name, "budget": budget, "seeds": seeds, "top_k": top_k,
            "runs": rows, "summary": summarise(rows, budget)}


def summarise(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Per variant: how many second studies reached the target, the median tokens to it
    (unreached count as infinite), the mean final true score; and the median saving of
    ``warm`` and ``configs`` against ``cold`` over seeds where both reached it."""
    out: dict[str, Any] = {}
    for v in VARIANTS:
        hits = [r[v]["to_target"] for r in rows]
        out[v] = {"reached": sum(math.isfinite(h) for h in hits), "runs": len(hits),
                  "median_tokens_to_target": float(np.median(hits)) if hits else math.nan,
                  "median_first_hit": float(np.median([r[v]["first_hit"] for r in rows]))
                  if rows else math.nan,
                  "mean_final_true": float(np.mean([r[v]["final_true"] for r in rows]))}
    for v in ("configs", "warm"):
        pairs = [(r["cold"]["to_target"], r[v]["to_target"]) for r in rows]
        both = [(c, w) for c, w in pairs if math.isfinite(w)]
        # a cold run that never got there needed more than the budget: count it as the budget
        saved = [(min(c, budget) - w) / min(c, budget) for c, w in both if min(c, budget) > 0]
        out[f"{v}_median_saving"] = float(np.median(saved)) if saved else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecotune bench warmstart",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", default="synthetic",
                   help="synthetic, a standard problem name or a recorded table's path")
    p.add_argument("--budget", type=int, default=50_000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--out", help="write the runs and the summary as JSON here")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.budget < 1 or a.top_k < 1:
        p.error("--seeds, --budget and --top-k must be >= 1")

    def save(res: dict[str, Any]) -> None:
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(res, indent=1, default=str))

    try:
        res = warmstart_gain(a.problem, a.seeds, a.budget, a.top_k, first_seed=a.first_seed,
                             log=lambda m: print(m, flush=True), on_seed=save)
    except (ValueError, OSError) as e:  # an unknown problem, an unreadable table
        print(f"ecotune bench warmstart: {e}", file=sys.stderr)
        return 2
    save(res)
    print(json.dumps(res["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
