"""Replay every optimizer over many seeds on a table (or the synthetic landscape) and report.

The report follows the paper's evaluation:

* Table 1: the final full-fidelity score at the budget (the true full-table score of the
  config each method returns from ``best()``), mean ± std over seeds, every method and the
  HELM default;
* Figure 2: tokens each method needs until its incumbent reaches a target score (the best
  baseline's mean final score), and the ratio EcoTune / BOHB;
* anytime curves (best true score of the incumbent against tokens spent) and the ECDF of the
  final validation error (1 − score), as PNGs;
* the largest spend / budget over all runs (must be <= 1), and EcoTune's ask+tell time
  at 50 and 200 observations (a synthetic loop).

Example:
    >>> run_benchmark("synthetic", out="benchmarks/report_synthetic", seeds=2)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ecotune.bench.runs import (  # noqa: F401 - the benchmark API, re-exported
    EXPERIMENTS,
    Bench,
    load_bench,
    replay_one,
    time_ask_tell,
    tokens_to_target,
)

log = logging.getLogger(__name__)

BASELINE_ORDER = ("ecotune", "random", "qmc", "botorch", "cmaes", "bohb", "asha",
                  "tpe_hyperband", "gp", "tpe", "helm")


def _long_ratio_text(ratio: float | None, long_bohb: dict[str, Any]) -> str:
    if ratio is not None:
        return f"{ratio:.2f}"
    if "ratio_below" in long_bohb:
        return (f"below {long_bohb['ratio_below']:.3f} (BOHB's median run does not reach the "
                "target within the longer budget either)")
    return "n/a (EcoTune's median run does not reach the target)"


def _fmt(m: float, s: float | None = None, d: int = 3) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m:.{d}f}" if s is None else f"{m:.{d}f} ± {s:.{d}f}"


def _plots(out: Path, bench: Bench, runs: dict[str, list[dict[str, Any]]], budget: int,
           target: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 201)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j, (m, rs) in enumerate(runs.items()):
        curves = []
        for r in rs:
            y = np.full(grid.shape, np.nan)
            for tokens, score in r["trajectory"]:
                y[grid >= tokens] = score
            curves.append(y)
        C = np.array(curves)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(C, axis=0)
            lo, hi = np.nanpercentile(C, 25, axis=0), np.nanpercentile(C, 75, axis=0)
        col = colors[j % len(colors)]
        ax.plot(grid, mean, label=m, color=col, lw=2 if m == "ecotune" else 1.2)
        ax.fill_between(grid, lo, hi, color=col, alpha=0.12)
    ax.axhline(target, color="k", ls=":", lw=1, label="target (best baseline mean)")
    ax.axhline(bench.oracle, color="grey", ls="--", lw=1, label="oracle")
    ax.set_xlabel("tokens spent")
    ax.set_ylabel("true full-fidelity score of incumbent")
    ax.set_title(f"{bench.name}: anytime performance (mean, IQR over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "anytime.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for j, (m, rs) in enumerate(runs.items()):
        err = np.sort([1 - r["final_true"] for r in rs if not math.isnan(r["final_true"])])
        if len(err):
            ax.step(np.r_[err[0], err], np.r_[0, np.arange(1, len(err) + 1) / len(err)],
                    where="post", label=m, color=colors[j % len(colors)],
                    lw=2 if m == "ecotune" else 1.2)
    ax.set_xlabel("final validation error (1 − true score)")
    ax.set_ylabel("fraction of seeds")
    ax.set_title(f"{bench.name}: ECDF of final error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ecdf.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    names, med = [], []
    for m, rs in runs.items():
        t = np.array([tokens_to_target(r["trajectory"], target) for r in rs])
        names.append(m)
        med.append(np.median(t))
    vals = [v if math.isfinite(v) else budget * 1.05 for v in med]
    bars = ax.bar(names, vals, color=[colors[j % len(colors)] for j in range(len(names))])
    for b, v in zip(bars, med, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), "never" if not math.isfinite(v)
                else f"{v / 1000:.1f}K", ha="center", va="bottom", fontsize=8)
    ax.axhline(budget, color="k", ls=":", lw=1)
    ax.set_ylabel("median tokens to reach target")
    ax.set_title(f"{bench.name}: tokens to target {target:.3f}")
    fig.tight_layout()
    fig.savefig(out / "tokens_to_target.png", dpi=110)
    plt.close(fig)
    return ["anytime.png", "ecdf.png", "tokens_to_target.png"]


def run_benchmark(table: str, out: str | Path, budget: int = 50_000, seeds: int = 10,
                  optimizers: list[str] | tuple[str, ...] = BASELINE_ORDER,
                  r_min: int | None = None, r_max: int | None = None, name: str | None = None,
                  timing: bool = True, progress: bool = True, restrict: bool = False,
                  reach_factor: int = 10) -> Path:
    """Replay the optimizers, write ``report.md``, ``results.json`` and PNGs to ``out``."""
    bench = load_bench(table, r_min, r_max)
    if restrict and bench.table is None:
        raise ValueError("--restrict needs a recorded table (the synthetic landscape is "
                         "continuous)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for m in optimizers:
        n = 1 if m == "helm" else seeds  # deterministic: one run stands for all seeds
        runs[m] = []
        for s in range(n):
            r = replay_one(bench, m, s, budget, restrict=restrict)
            runs[m].append(r)
            if progress:
                print(f"[{bench.name}] {m:8s} seed {s}: true {r['final_true']:.3f} "
                      f"tokens {r['tokens_used']} trials {r['trials']} ({r['wall_s']:.1f}s)",
                      flush=True)
    finals = {m: np.array([r["final_true"] for r in rs], dtype=float) for m, rs in runs.items()}
    means = {m: float(np.nanmean(v)) for m, v in finals.items()}
    # the target is set by the search baselines; HELM's default is a fixed reference
    baselines = ([m for m in runs if m not in ("ecotune", "helm", *EXPERIMENTS)]
                 or [m for m in runs if m not in ("ecotune", *EXPERIMENTS)])
    best_base = max(baselines, key=lambda m: means[m]) if baselines else None
    target = means[best_base] if best_base else (means.get("ecotune", 0.0))
    ttt = {m: np.array([tokens_to_target(r["trajectory"], target) for r in rs])
           for m, rs in runs.items()}
    first = {m: np.array([tokens_to_target(r["trajectory"], target, keep=False) for r in rs])
             for m, rs in runs.items()}
    max_ratio = max(r["tokens_used"] / budget for rs in runs.values() for r in rs)
    over = sum(r["over_limit"] for rs in runs.values() for r in rs)
    timings = time_ask_tell() if timing and "ecotune" in runs else {}

    def med(m: str) -> float:
        return float(np.median(ttt[m]))

    ratio = None
    if "ecotune" in runs and "bohb" in runs:
        e, b = med("ecotune"), med("bohb")
        ratio = (e / b) if math.isfinite(e) and math.isfinite(b) else None
    censored = None  # "never" counted as the whole budget (flatters the later method)
    if "ecotune" in runs and "bohb" in runs:
        cm = {m: float(np.mean(np.minimum(ttt[m], budget))) for m in ("ecotune", "bohb")}
        censored = cm["ecotune"] / cm["bohb"] if cm["bohb"] > 0 else None
    # BOHB's proposals do not depend on the budget, so a longer study extends the same
    # trajectory: it measures the tokens BOHB needs where the budget cut it off
    long_bohb = long_ratio = None
    if "ecotune" in runs and "bohb" in runs and reach_factor > 1:
        long_budget = budget * reach_factor
        long_runs = [replay_one(bench, "bohb", s, long_budget, restrict=restrict)
                     for s in range(seeds)]
        lt = np.array([tokens_to_target(r["trajectory"], target) for r in long_runs])
        long_bohb = {"budget": long_budget, "median": float(np.median(lt)),
                     "reached": int(np.isfinite(lt).sum()), "runs": len(lt)}
        if math.isfinite(med("ecotune")) and math.isfinite(long_bohb["median"]):
            long_ratio = med("ecotune") / long_bohb["median"]
        elif math.isfinite(med("ecotune")):  # BOHB needs more than the long budget
            long_bohb["ratio_below"] = med("ecotune") / long_budget
    figs = _plots(out, bench, runs, budget, target)

    title = name or bench.name
    L = [f"# Replay benchmark: {title}", "",
         f"Table/landscape: `{table}`; budget {budget:,} tokens; {seeds} seeds; "
         f"fidelity r in [{bench.r_min}, {bench.r_max}] instances. Generated by "
         f"`ecotune bench run --table {table} --budget {budget} --seeds {seeds} "
         f"--optimizers {','.join(optimizers)} --out {out}{' --restrict' if restrict else ''}`.",
         ""]
    if bench.table is not None:
        tb = bench.table
        how = ("every optimizer chooses among the table's configs (`candidates`): the "
               "model-based ones and random search pick from the set, the others' proposals "
               "are mapped to the nearest one" if restrict else
               "free proposals are mapped to the nearest recorded config in the encoded space")
        L += [f"Recorded table: {tb.n_configs} configs × {tb.n_instances} instances "
              f"(model `{tb.meta.get('model')}`); {how}; a method's true score is its "
              "config's full-table mean.", ""]
    L += ["## Table 1: final full-fidelity score at the budget", "",
          "| method | true score (mean ± std) | min | max | trials (mean) | tokens used (mean) |",
          "|---|---|---|---|---|---|"]
    for m, rs in runs.items():
        v = finals[m]
        L.append(f"| {m}{' (HELM default)' if m == 'helm' else ''} | "
                 f"{_fmt(float(np.nanmean(v)), float(np.nanstd(v)))} | {_fmt(float(np.nanmin(v)))} | "
                 f"{_fmt(float(np.nanmax(v)))} | {np.mean([r['trials'] for r in rs]):.1f} | "
                 f"{np.mean([r['tokens_used'] for r in rs]):,.0f} |")
    L.append(f"| oracle ({bench.oracle_label}) | {_fmt(bench.oracle)} | | | | |")
    L += ["", "## Figure 2: tokens to reach the target", "",
          f"Target = best search baseline's mean final score (HELM default excluded): **{_fmt(target)}** ({best_base}). "
          "Tokens to target = tokens spent from which the incumbent's true score stays at or "
          "above the target until the budget ends (a run that never gets there counts as "
          "never; medians over seeds). The last column uses the first time it touches the "
          "target instead.", "",
          "| method | median tokens to target | runs reaching it | median first touch |",
          "|---|---|---|---|"]
    for m in runs:
        t, f1 = ttt[m], float(np.median(first[m]))
        L.append(f"| {m} | {'never' if not math.isfinite(med(m)) else f'{med(m):,.0f}'} | "
                 f"{int(np.isfinite(t).sum())}/{len(t)} | "
                 f"{'never' if not math.isfinite(f1) else f'{f1:,.0f}'} |")
    if "ecotune" in runs and "bohb" in runs:
        L += ["", f"**EcoTune / BOHB tokens-to-target ratio (medians): "
              f"{'n/a (a median never reaches the target)' if ratio is None else f'{ratio:.2f}'}**"
              f" (target: <= 0.20). With \"never\" counted as the whole budget, mean over seeds: "
              f"{'n/a' if censored is None else f'{censored:.2f}'}."]
        if long_bohb is not None:
            lm = long_bohb["median"]
            L += ["", f"BOHB given {reach_factor}× the budget ({long_bohb['budget']:,} tokens; "
                  f"its proposals do not depend on the budget, so this extends the same runs): "
                  f"median tokens to target {'never' if not math.isfinite(lm) else f'{lm:,.0f}'} "
                  f"({long_bohb['reached']}/{long_bohb['runs']} runs reach it). **EcoTune at "
                  f"{budget:,} / BOHB at {long_bohb['budget']:,}, medians: "
                  f"{_long_ratio_text(long_ratio, long_bohb)}**."]
    L += ["", "## Budget", "",
          f"Max over all runs of tokens spent / budget: **{max_ratio:.5f}** (must be <= 1). "
          f"Trials that spent more than their token_limit: {over}.", ""]
    if bench.table is not None:
        L += ["## Nearest-neighbour mapping", "",
              "| method | distinct table configs reached (mean) | mean encoded distance to the "
              "mapped config |", "|---|---|---|"]
        for m, rs in runs.items():
            L.append(f"| {m} | {np.mean([r['distinct_configs'] for r in rs]):.1f} | "
                     f"{np.mean([r['mean_map_dist'] for r in rs]):.3f} |")
        L.append("")
    if timings:
        L += ["## EcoTune ask+tell time", "",
              "| observations | seconds per ask+tell |", "|---|---|"]
        for p, v in timings.items():
            L.append(f"| {p} | {v:.3f} |")
        L.append("")
    L += ["## Plots", ""] + [f"![{f}]({f})" for f in figs] + [""]
    md = out / "report.md"
    md.write_text("\n".join(L))
    summary = {"name": title, "table": table, "budget": budget, "seeds": seeds,
               "restrict": restrict,
               "r_min": bench.r_min, "r_max": bench.r_max, "target": target,
               "best_baseline": best_base, "oracle": bench.oracle,
               "final_mean": means,
               "final_std": {m: float(np.nanstd(v)) for m, v in finals.items()},
               "tokens_to_target_median": {m: med(m) if math.isfinite(med(m)) else None
                                           for m in runs},
               "ratio_ecotune_bohb": ratio, "ratio_ecotune_bohb_censored": censored,
               "bohb_long": long_bohb, "ratio_ecotune_bohb_long": long_ratio, "max_spend_ratio": max_ratio,
               "over_limit_trials": over, "ask_tell_s": timings,
               "runs": [{k: v for k, v in r.items() if k != "trajectory"}
                        for rs in runs.values() for r in rs]}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    return md
