"""The ``make demo`` token targets: re-measurement and screening, over several demo runs.

Runs the demo study (``examples/demo.yaml``) N times against one embedded vLLM, each run with
its own workdir and so a fresh response cache (a run does not profit from an earlier
one's answers), without tracking or promotion, and prints, per run and over all runs, what
``ecotune bench waste`` measures: the share of the budget spent re-measuring
(canonical config, instance) pairs already seen under greedy decoding (target ≤ 2%), the
trials below r_max (target: most), the tokens reused, and each run's answer (its best
config at r_max) scored on held-out instances after r_max. A run whose journal exists is
resumed, not run again, so re-running only adds what is missing.

Usage:
    python -m ecotune.bench.demo_waste --runs 3 --out runs/demo-waste   # starts vLLM (~40 s)
    ECOTUNE_VLLM_URL=http://127.0.0.1:8000 python -m ecotune.bench.demo_waste --runs 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Any

from ecotune.bench.waste import waste
from ecotune.config import load_study_config, with_overrides
from ecotune.journal import open_journal
from ecotune.study import run_tune
from ecotune.testing.vllm import ENV_URL, start_local_vllm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--config", default="examples/demo.yaml")
    ap.add_argument("--out", default="runs/demo-waste")
    ap.add_argument("--seed0", type=int, default=0, help="seed of the first run (+1 each)")
    ap.add_argument("--held-out", type=int, default=40,
                    help="score each run's answer on this many unseen instances (0: off)")
    args = ap.parse_args(argv)
    rows = []
    with start_local_vllm() as url:
        os.environ[ENV_URL] = url
        for i in range(args.runs):
            work = Path(args.out) / f"run-{i}"
            cfg = with_overrides(load_study_config(args.config), name=f"demo-{i}",
                                 seed=args.seed0 + i, workdir=str(work),
                                 tracking={"enabled": False}, promotion={"enabled": False})
            done = bool(open_journal(cfg.journal_uri).records())  # a finished run: kept
            run_tune(cfg, resume=done, stream=io.StringIO(), live=False)
            records = open_journal(cfg.journal_uri).records()
            w = {**waste(records), **held_out(cfg, records, args.held_out)}
            rows.append(w)
            print(json.dumps({"run": i, "seed": args.seed0 + i, **w}), flush=True)
    budget = sum(r["budget_tokens"] for r in rows)
    total = {"runs": len(rows),
             "remeasured_share_of_budget": sum(r["remeasured_tokens"] for r in rows) / budget,
             "max_run_share": max(r["remeasured_share_of_budget"] for r in rows),
             "trials": sum(r["trials"] for r in rows),
             "below_r_max": sum(r["below_r_max"] for r in rows),
             "tokens_charged": sum(r["tokens_charged"] for r in rows),
             "tokens_reused": sum(r["tokens_reused"] for r in rows)}
    scores = [r["held_out_score"] for r in rows if r.get("held_out_score") is not None]
    total["mean_held_out_score"] = sum(scores) / len(scores) if scores else None
    print(json.dumps({"total": total}))
    return 0


def held_out(cfg: Any, records: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The study's answer (its best config at r_max) scored on ``n`` instances after r_max
    in the nested order, which no trial saw: the score a user of the winner gets."""
    from ecotune.engines.session import engine_session
    from ecotune.study import best_from_journal, build_task
    from ecotune.trial_runner import evaluate_config

    best, tuning = best_from_journal(records, cfg.r_max)
    if best is None or n <= 0:
        return {"held_out_score": None}
    task, order = build_task(cfg)
    with engine_session(cfg, lambda *_: None) as (engine, _spec):
        res = evaluate_config(task, engine, best, order[cfg.r_max: cfg.r_max + n])
    return {"best_tuning_score": tuning, "held_out_score": res.score, "held_out_n": n,
            "held_out_tokens": res.tokens}


if __name__ == "__main__":
    raise SystemExit(main())
