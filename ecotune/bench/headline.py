"""The suite's headline: EcoTune against the issue-#10 targets, from the recorded runs.

Three tables, written at the top of ``report.md`` and copied into ``docs/benchmarks.md``:

* per problem: EcoTune's final true score (mean ± 95% t-interval), its variants', the best
  peer's, both BOHBs' (Syne Tune's ``bohb`` and SMAC3's ``smac_bohb``), and the token ratio
  of the paper's claim: EcoTune's tokens until its incumbent stays at or above the best
  peer's mean final score, over each BOHB's (median runs);
* the target cells: at 25 / 50 / 100% of the budget, is EcoTune's mean at or above every
  peer's; which cells miss and by how much;
* EcoTune paired by seed against each of its variants (the evidence for the default).

Peers are every method but EcoTune's own variants (``ecotune+…``) and the HELM default.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ecotune.bench.suite import FRACTIONS, mean_ci

BOHBS = ("bohb", "smac_bohb")
VARIANTS = ("ecotune+narrow", "ecotune+increment", "ecotune+paper", "ecotune+finish",
            "ecotune+level2", "ecotune+binomial", "ecotune+uncalibrated",
            "ecotune+unshrunk", "ecotune+scaled", "ecotune+shared", "ecotune+adjusted",
            "ecotune+last")


def _peers(rows: dict[str, Any]) -> list[str]:
    return [m for m in rows if not m.startswith("ecotune") and m != "helm"]


def _ci(v: tuple[float, float], seeds: int | None = None) -> str:
    m, h = v
    if math.isnan(m):
        return "—"
    s = f"{m:.3f}" if math.isnan(h) else f"{m:.3f} ± {h:.3f}"
    return s if seeds is None else f"{s} ({seeds})"


def token_ratio(rows: dict[str, Any], bohb: str, target: str) -> str:
    """EcoTune's median tokens to ``target``'s mean final score over ``bohb``'s."""
    if "ecotune" not in rows or bohb not in rows or target not in rows:
        return "n/a"
    e = rows["ecotune"]["tokens_to"].get(target, float("nan"))
    b = rows[bohb]["tokens_to"].get(target, float("nan"))
    if math.isinf(e) and math.isinf(b):
        return "neither"
    if math.isinf(e):
        return "never"
    if math.isinf(b):
        return f"{bohb} never"
    return "n/a" if math.isnan(e) or math.isnan(b) or b <= 0 else f"{e / b:.2f}"


def problem_table(summary: dict[str, Any]) -> list[str]:
    """One row per problem (see the module docstring)."""
    L = ["| problem | kind | seeds | EcoTune | " + " | ".join(f"`{v[8:]}`" for v in VARIANTS)
         + " | best peer | bohb | smac_bohb | EcoTune / bohb tokens to the best peer's final"
         " | EcoTune / smac_bohb tokens to it |",
         "|---|---|---|---|" + "---|" * len(VARIANTS) + "---|---|---|---|---|"]
    for p, rows in summary["problems"].items():
        if "ecotune" not in rows:
            continue
        eco = rows["ecotune"]
        peers = _peers(rows)
        best = max(peers, key=lambda m: np.nan_to_num(rows[m]["at100"][0], nan=-9), default=None)
        cells = [p, str(eco["kind"]), str(eco["seeds"]), _ci(eco["at100"])]
        cells += [_ci(rows[v]["at100"], rows[v]["seeds"]) if v in rows else "—" for v in VARIANTS]
        cells.append(f"{best} {_ci(rows[best]['at100'])}" if best else "—")
        cells += [_ci(rows[b]["at100"], rows[b]["seeds"]) if b in rows else "—" for b in BOHBS]
        cells += [token_ratio(rows, b, best) if best else "n/a" for b in BOHBS]
        L.append("| " + " | ".join(cells) + " |")
    return L


def target_cells(summary: dict[str, Any], min_seeds: int = 30) -> tuple[int, int, list[str]]:
    """(cells met, cells, misses) of "EcoTune's mean ≥ every peer's" over the problems where
    EcoTune has at least ``min_seeds`` seeds."""
    met = total = 0
    misses = []
    for p, rows in summary["problems"].items():
        if "ecotune" not in rows or rows["ecotune"]["seeds"] < min_seeds:
            continue
        for f in FRACTIONS:
            key = f"at{int(f * 100)}"
            e = rows["ecotune"][key]
            peers = [m for m in _peers(rows) if not math.isnan(rows[m][key][0])]
            if not peers:
                continue
            top = max(peers, key=lambda m: rows[m][key][0])
            total += 1
            if e[0] >= rows[top][key][0] - 1e-12:
                met += 1
            else:
                misses.append(f"{p} at {int(f * 100)}%: {_ci(e)} vs {top} "
                              f"{_ci(rows[top][key])}")
    return met, total, misses


def paired(runs: list[dict[str, Any]], variants: tuple[str, ...] = VARIANTS) -> list[str]:
    """EcoTune − variant, paired by (problem, seed): mean ± 95% and wins / losses."""
    final = {(r["problem"], r["method"], r["seed"]): r["final_true"] for r in runs}
    L = ["| problem | vs | seeds | mean difference (EcoTune − variant) ± 95% | "
         "EcoTune better / worse |", "|---|---|---|---|---|"]
    problems = list(dict.fromkeys(r["problem"] for r in runs))
    for v in variants:
        for p in problems:
            d = [final[(p, "ecotune", s)] - x for (pp, m, s), x in final.items()
                 if pp == p and m == v and (p, "ecotune", s) in final]
            if len(d) < 2:
                continue
            m, h = mean_ci(d)
            L.append(f"| {p} | {v} | {len(d)} | {m:+.3f} ± {h:.3f} | "
                     f"{sum(x > 1e-9 for x in d)} / {sum(x < -1e-9 for x in d)} |")
    return L


def headline(runs: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """The three tables as markdown lines."""
    met, total, misses = target_cells(summary)
    L = ["## Against the targets", "",
         "Final true score at the budget (mean ± 95% t-interval; the seeds column is "
         "EcoTune's, others in brackets) and the tokens EcoTune needs until its incumbent "
         "stays at or above the best peer's mean final score, over each BOHB's (median runs; "
         "`… never`: that method's median run does not stay there within the budget).", "",
         *problem_table(summary), "",
         f"EcoTune's mean at or above every peer's (problems with 30 seeds, at 25 / 50 / "
         f"100% of the budget): **{met} of {total} cells**."]
    if misses:
        L += ["", "Missed:", "", *[f"* {m}" for m in misses]]
    pair = paired(runs)
    if len(pair) > 2:
        L += ["", "EcoTune (the default) paired by seed with its variants:", "", *pair]
    return L
