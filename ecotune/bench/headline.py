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
            "ecotune+last", "ecotune+rung", "ecotune+eq8")


def _peers(rows: dict[str, Any]) -> list[str]:
    return [m for m in rows if not m.startswith("ecotune") and m != "helm"]


def _ci(v: tuple[float, float], seeds: int | None = None) -> str:
    m, h = v
    if math.isnan(m):
        return "—"
    s = f"{m:.3f}" if math.isnan(h) else f"{m:.3f} ± {h:.3f}"
    return s if seeds is None else f"{s} ({seeds})"


def _ratio(rows: dict[str, Any], bohb: str, target: str) -> tuple[float, bool, str]:
    """(ratio, whether it is only an upper bound, label); the ratio is nan where unknown."""
    nan = float("nan")
    if "ecotune" not in rows or bohb not in rows or target not in rows:
        return nan, False, "n/a"
    e = rows["ecotune"]["tokens_to"].get(target, nan)
    long = _complete_horizon(rows[bohb])
    b = (long or rows[bohb])["tokens_to"].get(target, nan)
    if math.isinf(e):  # EcoTune never gets there: infinitely worse, unless neither does
        return (nan, False, "neither") if math.isinf(b) else (math.inf, False, "never")
    if math.isinf(b):
        if not long:
            return nan, False, f"{bohb} never"
        bound = e / (long["h"] * rows[bohb]["budget"])
        return bound, True, f"< {bound:.2f}"
    if math.isnan(e) or math.isnan(b) or b <= 0:
        return nan, False, "n/a"
    return e / b, False, f"{e / b:.2f}"


def token_ratio(rows: dict[str, Any], bohb: str, target: str) -> str:
    """EcoTune's median tokens to ``target``'s mean final score over ``bohb``'s, the latter
    from ``bohb``'s runs to a longer horizon h where recorded (``< x``: its median run does
    not get there within h budgets, so the ratio is below EcoTune's tokens / (h · budget))."""
    return _ratio(rows, bohb, target)[2]


def _complete_horizon(row: dict[str, Any]) -> dict[str, Any] | None:
    """A BOHB's runs to a longer horizon, once they cover every seed it ran to the budget
    (a median over fewer seeds would not be the same method's median)."""
    long = row.get("horizon")
    return long if long and long["seeds"] >= row["seeds"] else None


def _horizon(row: dict[str, Any] | None) -> str:
    """`` (5× budget: 30 seeds)`` where a BOHB's ratio comes from its longer runs, or how
    many seeds of them there are so far."""
    long = (row or {}).get("horizon")
    if not long:
        return ""
    if _complete_horizon(row or {}):
        return f" ({long['h']:g}× budget: {long['seeds']} seeds)"
    return f" ({long['h']:g}× budget: {long['seeds']} of {(row or {})['seeds']} seeds, not used)"


def _best_peer(rows: dict[str, Any]) -> str | None:
    return max(_peers(rows), key=lambda m: np.nan_to_num(rows[m]["at100"][0], nan=-9),
               default=None)


def token_target(summary: dict[str, Any], at_most: float = 0.2) -> tuple[int, int, int]:
    """The paper's ">80% fewer tokens than BOHB for the same score": (problems where
    EcoTune's ratio to both BOHBs is at most ``at_most``, problems where that is decided,
    problems where EcoTune's median run reaches the best peer's final score). A bound
    ``< x`` decides it only when x ≤ ``at_most``."""
    met = decided = reached = 0
    for rows in summary["problems"].values():
        best = _best_peer(rows)
        if best is None or "ecotune" not in rows:
            continue
        reached += math.isfinite(rows["ecotune"]["tokens_to"].get(best, math.inf))
        ratios = [_ratio(rows, b, best) for b in BOHBS]
        if any(not math.isnan(v) and v > at_most and not bound for v, bound, _ in ratios):
            decided += 1  # missed against one BOHB at least
        elif all(not math.isnan(v) and v <= at_most for v, _, _ in ratios):
            decided += 1
            met += 1
    return met, decided, reached


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
        best = _best_peer(rows)
        cells = [p, str(eco["kind"]), str(eco["seeds"]), _ci(eco["at100"])]
        cells += [_ci(rows[v]["at100"], rows[v]["seeds"]) if v in rows else "—" for v in VARIANTS]
        cells.append(f"{best} {_ci(rows[best]['at100'])}" if best else "—")
        cells += [_ci(rows[b]["at100"], rows[b]["seeds"]) if b in rows else "—" for b in BOHBS]
        cells += [(token_ratio(rows, b, best) if best else "n/a") + _horizon(rows.get(b))
                  for b in BOHBS]
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
         "`… never`: that method's median run does not stay there within the budget; where "
         "a BOHB was also run to h times the budget, its tokens come from those runs and "
         "`< x` says its median run does not get there within h budgets).", "",
         *problem_table(summary), "",
         f"EcoTune's mean at or above every peer's (problems with 30 seeds, at 25 / 50 / "
         f"100% of the budget): **{met} of {total} cells**.", "",
         "EcoTune's tokens to the best peer's final at most 20% of both BOHBs': **{} of the "
         "{} problems where that is decided** (EcoTune's median run reaches that score "
         "on {}).".format(*token_target(summary))]
    if misses:
        L += ["", "Missed:", "", *[f"* {m}" for m in misses]]
    pair = paired(runs)
    if len(pair) > 2:
        L += ["", "EcoTune (the default) paired by seed with its variants:", "", *pair]
    return L
