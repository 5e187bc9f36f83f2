"""``ecotune bench suite``: every problem × every method × many seeds, one report.

The protocol is fixed here, before any result (issue #11):

* problems: the standard multi-fidelity problems of :mod:`ecotune.bench.problems` (biased
  and unbiased lower fidelities), the recorded LLM tables under ``benchmarks/tables/``
  (finite candidate set, HPO-B style: every method chooses among the table's configs), the
  same tables' surrogates (:mod:`ecotune.bench.surrogate_table`: any config answers) and
  the synthetic landscape (kept, not evidence on its own);
* budgets: 20 full evaluations on the function problems, 10 on the noisy-prefix ones, 2 on
  the LLM tables (so screening every table config is impossible), 50K tokens on synthetic;
* every method with the same accounting and token limits (the replay of
  :mod:`ecotune.bench.runs`); seeds ``0 .. S−1``; no method starts from the HELM default;
* measures: the incumbent's true score (full fidelity; on an LLM table, its mean over the
  last quarter of the instances, which no method tunes on) at 25/50/100% of the budget,
  mean and 95% t-interval over seeds; the average rank of each method across problems at
  those points (the HPOBench / HPO-B summary); tokens each method needs until its
  incumbent reaches each peer's mean final score (the BOHBs' also from runs to 5 budgets,
  ``--horizon``); anytime regret curves; the largest spend/budget of any run.

Runs are appended to ``<out>/runs.jsonl.gz`` (one gzip member per run, so a kill loses at
most the run being written) as they finish and skipped when present, so the suite resumes
where it stopped; ``--report-only`` rebuilds the report from what is there; ``--workers N``
runs them in N processes of one thread each (:mod:`ecotune.bench.suite_workers`, which
names failed runs once the rest are done). A row of an older suite version is run again
and replaced (:mod:`ecotune.bench.suite_versions`).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ecotune.bench.problems import ALPHA, BETA, PROBLEMS
from ecotune.bench.runs import load_bench, tokens_to_target
from ecotune.bench.suite_plots import plot_regret, score_at, slug
from ecotune.bench.suite_versions import SUITE_VERSION, key, latest, stale, stamp, version
from ecotune.bench.suite_workers import RunsFailed, run_jobs

log = logging.getLogger(__name__)

METHODS = ("ecotune", "ecotune+narrow", "ecotune+increment", "ecotune+paper", "ecotune+finish",
           "random", "qmc", "botorch", "cmaes", "bohb", "smac_bohb", "dehb", "asha",
           "tpe_hyperband", "gp", "tpe", "eipu", "mfkg", "ecotune+level2", "ecotune+binomial",
           "ecotune+uncalibrated", "ecotune+unshrunk", "ecotune+scaled", "ecotune+shared",
           "ecotune+adjusted", "ecotune+last", "ecotune+rung", "ecotune+eq8")
TABLES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "tables"
FRACTIONS = (0.25, 0.5, 1.0)
#: the recorded runs, in the suite's folder
RUNS = "runs.jsonl.gz"
#: BOHB's runs to a longer horizon, for the token ratio (:func:`horizon_runs`)
HORIZON_RUNS = "runs-{h:g}x.jsonl.gz"
#: the surrogates' cross-validation, cached in the suite's folder by table file size
SURROGATES = "surrogates.json"


def problem_budget(name: str, bench: Any, scale: float = 1.0) -> int:
    """A problem's pre-registered budget (module docstring) times ``scale`` (CI smoke: ¼)."""
    return int(scale * _budget(name, bench))


def _budget(name: str, bench: Any) -> int:
    if name == "synthetic":
        return 50_000
    if name.startswith("noisy-"):
        per = float(PROBLEMS[name]().meta["per_instance"](np.full((1, bench.space.dim), 0.5)).sum())
        return int(10 * per)
    if name in PROBLEMS:
        return 20 * (ALPHA * bench.r_max + BETA)
    if name.startswith("surrogate:"):
        return _budget(name.removeprefix("surrogate:"), load_bench(name.removeprefix("surrogate:")))
    tb = bench.table
    full = (tb.prompt_tokens + tb.completion_tokens).sum(axis=1)
    return int(2 * float(np.mean(full)))


def suite_problems(smoke: bool = False) -> list[str]:
    """Every problem (tables by path, but those still being collected: their configs would
    change under the recorded runs), or the CI smoke subset."""
    if smoke:
        return ["branin", "noisy-branin"]
    tables = sorted(str(p) for p in [*TABLES_DIR.glob("*.jsonl.gz"),
                                     *TABLES_DIR.parent.glob("*.jsonl.gz")] if collected(p))
    return list(PROBLEMS) + tables + [f"surrogate:{t}" for t in tables] + ["synthetic"]


def collected(path: str | Path) -> bool:
    """True when a recorded table holds every config its header planned (HELM + n_configs)."""
    from ecotune.bench.replay import Table

    tb = Table.load(path)
    want = tb.meta.get("n_configs")
    return want is None or tb.n_configs >= int(want) + 1


def run_suite(out: str | Path, seeds: int = 30, problems: list[str] | None = None,
              methods: tuple[str, ...] | list[str] = METHODS, smoke: bool = False,
              workers: int = 1, horizon: float = 1.0) -> Path:
    """Run what is missing (in ``workers`` processes: :mod:`ecotune.bench.suite_workers`),
    then write the report; returns its path. ``horizon`` > 1 runs to that many times each
    problem's budget, into their own file (:func:`horizon_runs`)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    if not horizon >= 1.0:
        raise ValueError(f"horizon must be >= 1, not {horizon}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (RUNS if horizon == 1.0 else HORIZON_RUNS.format(h=horizon))
    compact(path)
    done = {key(r) for r in latest(read_runs(path)) if version(r) == SUITE_VERSION}
    names = problems or suite_problems(smoke)
    if "smac_bohb" in methods and os.environ.get("PYTHONHASHSEED") != "0":
        log.warning("smac_bohb's runs follow Python's string hashes (ecotune.optimizers."
                    "smac_bohb): the recorded ones were run with PYTHONHASHSEED=0")
    benches = {n: load_bench(n, held_out=True) for n in names}
    scale = (0.25 if smoke else 1.0) * horizon
    jobs = [(n, m, seed, problem_budget(n, benches[n], scale), _kind(n))
            for seed in range(seeds)  # seeds outermost: a cut-short suite still covers every cell
            for n in names for m in methods if (benches[n].name, m, seed) not in done]
    try:
        for r in run_jobs(jobs, workers, benches):
            with gzip.open(path, "at") as f:
                f.write(json.dumps(r, default=str) + "\n")
            log.info("%s %s seed %d: %.3f", r["problem"], r["method"], r["seed"], r["final_true"])
    except RunsFailed:
        compact(path)
        write_report(out)  # of the runs that did not fail (all recorded)
        raise
    compact(path)
    return write_report(out)


def compact(path: Path) -> None:
    """Rewrite the runs file without torn or replaced rows, stamping the old rows the
    current version cannot change (:mod:`ecotune.bench.suite_versions`); a no-op when
    there is nothing to drop or stamp."""
    from ecotune.bench.collect import rewrite_jsonl_gz

    rows = read_runs(path, repair=True)
    newest = latest(rows)
    if stamp(newest) or len(newest) < len(rows):
        rewrite_jsonl_gz(path, newest)


def _kind(name: str) -> str:
    if name in PROBLEMS:
        return PROBLEMS[name]().kind if name.startswith("noisy-") else "biased"
    if name.startswith("surrogate:"):
        return "llm-surrogate"
    return "synthetic" if name == "synthetic" else "llm-table"


def read_runs(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The runs recorded so far. A run torn by a kill (a truncated gzip member or line) is
    skipped; with ``repair`` the file is rewritten without it, so appends go on after the
    last whole run."""
    from ecotune.bench.collect import read_jsonl_gz, rewrite_jsonl_gz

    runs, torn = read_jsonl_gz(path)
    if torn:
        log.warning("%s: skipping a torn last run", path)
    if torn and repair:
        rewrite_jsonl_gz(path, runs)
    return runs


def mean_ci(x: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan entries count as missing)."""
    from scipy.stats import t as student

    a = np.array([v for v in x if not math.isnan(v)], float)
    if len(a) == 0:
        return float("nan"), float("nan")
    if len(a) == 1:
        return float(a[0]), float("nan")
    return float(a.mean()), float(student.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def summarise(runs: list[dict[str, Any]],
              longer: dict[float, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Per problem and method: scores at each budget fraction (mean, CI), tokens to each
    peer's mean final score (also over the runs to a longer horizon, ``longer``: see
    :func:`horizon_runs`); across problems: average ranks; and the largest spend."""
    by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        by.setdefault(r["problem"], {}).setdefault(r["method"], []).append(r)
    table: dict[str, Any] = {}
    for p, ms in by.items():
        rows = {}
        for m, rs in ms.items():
            rows[m] = {"seeds": len(rs), "kind": rs[0].get("kind"), "oracle": rs[0]["oracle"],
                       "budget": rs[0]["budget"]}
            for f in FRACTIONS:
                rows[m][f"at{int(f * 100)}"] = mean_ci([score_at(r, f * r["budget"]) for r in rs])
        finals = {m: rows[m]["at100"][0] for m in rows if not math.isnan(rows[m]["at100"][0])}
        for m, rs in ms.items():
            rows[m]["tokens_to"] = _tokens_to(rs, finals)
        for h, long in sorted((longer or {}).items()):  # the longest horizon last, kept
            for m in rows:
                if rs := [r for r in long if r["problem"] == p and r["method"] == m]:
                    rows[m]["horizon"] = {"h": h, "seeds": len(rs),
                                          "tokens_to": _tokens_to(rs, finals)}
        table[p] = rows
    spend = max((r["tokens_used"] / r["budget"] for r in runs), default=float("nan"))
    return {"problems": table, "ranks": _ranks(table, lambda m: True),
            "field_ranks": _ranks(table, lambda m: m == "ecotune" or "+" not in m),
            "max_spend_ratio": spend,
            "over_limit_trials": int(sum(r.get("over_limit", 0) for r in runs)),
            "fallbacks": {m: [sum(r.get("fallbacks", 0) for r in runs if r["method"] == m),
                              sum(r.get("fallbacks", 0) > 0 for r in runs if r["method"] == m)]
                          for m in sorted({r["method"] for r in runs if "fallbacks" in r})}}


def _tokens_to(runs: list[dict[str, Any]], targets: dict[str, float]) -> dict[str, float]:
    """Median over ``runs`` of the tokens until the incumbent stays at each target."""
    return {peer: float(np.median([tokens_to_target(r["trajectory"], t) for r in runs]))
            for peer, t in targets.items()}


def horizon_runs(out: Path) -> dict[float, list[dict[str, Any]]]:
    """Runs to ``h`` times the budget (``ecotune bench suite --horizon h``), by ``h``. A BOHB
    run that does not reach a target within the budget needs more; the same run continued
    (the token budget only ends a BOHB's study: tests/test_bench_suite.py) says how many,
    so the paper's token ratio is a number, or a bound ``< e / (h·B)``."""
    return {float(p.name.removeprefix("runs-").removesuffix("x.jsonl.gz")):
            latest(read_runs(p)) for p in sorted(out.glob("runs-*x.jsonl.gz"))}


def _ranks(table: dict[str, Any], keep: Any) -> dict[str, dict[str, float]]:
    """Average rank over problems (1 = best; ties share the mean of their ranks) at each
    budget fraction, among the methods ``keep`` admits that ran every seed of every problem:
    a method seen on some problems only would be averaged over other problems than the
    rest and push the others down on its problems alone, and one seen on a few seeds of a
    problem would be ranked by a noisier mean (:func:`unranked` names them)."""
    left = unranked(table)
    everywhere = {m for rows in table.values() for m in rows if m not in left}
    ranks: dict[str, dict[str, float]] = {}
    for f in FRACTIONS:
        key = f"at{int(f * 100)}"
        acc: dict[str, list[float]] = {}
        for rows in table.values():
            ms = [m for m in rows
                  if m in everywhere and keep(m) and not math.isnan(rows[m][key][0])]
            order = sorted(ms, key=lambda m: -rows[m][key][0])
            for m in ms:
                tied = [j for j, o in enumerate(order) if rows[o][key][0] == rows[m][key][0]]
                acc.setdefault(m, []).append(1 + float(np.mean(tied)))
        ranks[key] = {m: float(np.mean(v)) for m, v in acc.items()}
    return ranks


def unranked(table: dict[str, Any]) -> dict[str, int]:
    """Methods left out of the average ranks, with the number of problems on which they ran
    as many seeds as the most-run method there."""
    counts: dict[str, int] = {}
    for rows in table.values():
        full = max(r["seeds"] for r in rows.values())
        for m in rows:
            counts[m] = counts.get(m, 0) + (rows[m]["seeds"] == full)
    return {m: k for m, k in sorted(counts.items()) if k < len(table)}


def write_report(out: Path) -> Path:
    """``report.md`` (headline against the targets first: :mod:`ecotune.bench.headline`),
    ``summary.json`` and one regret plot per problem."""
    from ecotune.bench.headline import headline

    runs = latest(read_runs(out / RUNS))
    stamp(runs)  # in memory: the rows the current version records identically
    s = summarise(runs, horizon_runs(out))
    (out / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    L = ["# EcoTune benchmark suite", "",
         f"{len(runs)} runs. Scores are the incumbent's true full-fidelity score; mean ± "
         "95% t-interval over seeds, at 25 / 50 / 100% of each problem's budget. "
         f"Largest spend/budget over all runs: {s['max_spend_ratio']:.3f}; trials over "
         f"their token limit: {s['over_limit_trials']}.", "", *_stale_line(runs),
         *[x for m, (n, k) in s["fallbacks"].items() if n for x in (
             f"`{m}`: {n} asks answered by its Sobol design where its acquisition broke "
             f"down numerically, in {k} run{'s' * (k != 1)}.", "")],
         "Tokens to a target: median over seeds of the tokens after which the incumbent "
         "stays at or above the target (`never`: the median run does not get there).", "",
         *headline(runs, s), "",
         "## Average rank across problems (1 = best)", ""]
    for ranks, what in ((s["ranks"], "Every method, EcoTune's variants too:"),
                        (s["field_ranks"], "EcoTune (the default) and the peers only:")):
        L += [what, "", "| method | 25% | 50% | 100% |", "|---|---|---|---|"]
        for m in sorted(ranks["at100"], key=lambda m: ranks["at100"][m]):
            L.append(f"| {m} | " + " | ".join(f"{ranks[k].get(m, float('nan')):.2f}"
                                             for k in ("at25", "at50", "at100")) + " |")
        L.append("")
    if left := unranked(s["problems"]):
        L += [f"Not ranked (not run with every seed on all {len(s['problems'])} problems): "
              + ", ".join(f"`{m}` ({k})" for m, k in left.items()) + ".", ""]
    L.pop()
    checks = surrogate_checks(out, [p for p in s["problems"] if p.startswith("surrogate-")])
    if checks:
        L += ["", "## Surrogate check", "",
              "Each surrogate's model refitted on 4/5 of its table's configs predicts the "
              "full-table score of the held-out fifth (5 folds; YAHPO Gym's check):", "",
              "| surrogate problem | table configs | Spearman ρ | mean absolute error |",
              "|---|---|---|---|"]
        L += [f"| {p} | {c['configs']} | {c['spearman']:.2f} | {c['mae']:.3f} |"
              for p, c in checks.items()]
    for p, rows in s["problems"].items():
        some = next(iter(rows.values()))
        L += ["", f"## {p} ({some['kind']}; optimum {some['oracle']:.3f})", "",
              "| method | seeds | 25% | 50% | 100% | its tokens to ecotune's mean final | "
              "ecotune's tokens to its mean final |", "|---|---|---|---|---|---|---|"]
        eco = rows.get("ecotune")
        for m in sorted(rows, key=lambda m: -np.nan_to_num(rows[m]["at100"][0], nan=-9)):
            v = rows[m]
            cells = [_ci(v[k]) for k in ("at25", "at50", "at100")]
            mine = v["tokens_to"].get("ecotune", float("nan"))
            theirs = eco["tokens_to"].get(m, float("nan")) if eco else float("nan")
            L.append(f"| {m} | {v['seeds']} | " + " | ".join(cells) +
                     f" | {_tok(mine)} | {_tok(theirs)} |")
        plot_regret(out, p, [r for r in runs if r["problem"] == p])
        L += ["", f"![regret]({slug(p)}.png)"]
    md = out / "report.md"
    md.write_text("\n".join(L) + "\n")
    return md


def _stale_line(runs: list[dict[str, Any]]) -> list[str]:
    """The report's word on rows recorded by an older suite version (none: nothing)."""
    old = stale(runs)
    if not old:
        return []
    cells = ", ".join(f"{p} × `{m}` ({n})" for (p, m), n in sorted(old.items()))
    return [f"**{sum(old.values())} of {len(runs)} runs are of an older suite version** "
            f"(`ecotune/bench/suite_versions.py`; `make bench-suite` re-runs them): "
            f"{cells}.", ""]


def surrogate_checks(out: Path, problems: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`ecotune.bench.surrogate_table.cross_validate` of every surrogate problem's table
    (``surrogate-<table>``), cached in ``<out>/surrogates.json`` while the file keeps its size."""
    from ecotune.bench.replay import Table
    from ecotune.bench.surrogate_table import cross_validate

    cache_path = out / SURROGATES
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    found = {}
    for p in problems:
        name = p.removeprefix("surrogate-") + ".jsonl.gz"
        path = next((d / name for d in (TABLES_DIR, TABLES_DIR.parent) if (d / name).exists()),
                    None)
        if path is None:
            raise FileNotFoundError(f"{p}: no table {name} under {TABLES_DIR} or its parent")
        size = path.stat().st_size
        if cache.get(p, {}).get("bytes") != size:
            cache[p] = {**cross_validate(Table.load(path)), "bytes": size}
        found[p] = cache[p]
    cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return found


DOCS_BEGIN, DOCS_END = "<!-- suite:begin -->", "<!-- suite:end -->"


def splice_docs(report: Path, docs: Path) -> None:
    """Put the report's tables (its headline, the average ranks and the surrogate check,
    not the per-problem sections) into ``docs`` between its :data:`DOCS_BEGIN` and :data:`DOCS_END` lines,
    so the documentation shows exactly what ``ecotune bench suite`` wrote.

    Raises:
        ValueError: ``docs`` lacks the two marker lines (in that order).
    """
    text = docs.read_text()
    lines = text.splitlines()
    if DOCS_BEGIN not in lines or DOCS_END not in lines or \
            lines.index(DOCS_BEGIN) > lines.index(DOCS_END):
        raise ValueError(f"{docs}: needs the lines {DOCS_BEGIN!r} and {DOCS_END!r}")
    body = report.read_text().splitlines()
    start = next(i for i, x in enumerate(body) if x.startswith("## Against the targets"))
    stop = next((i for i, x in enumerate(body) if x.startswith("## ") and i > start
                 and not x.startswith(("## Average rank", "## Surrogate check"))), len(body))
    part = ["#" + x if x.startswith("## ") else x for x in body[start:stop]]
    i, j = lines.index(DOCS_BEGIN), lines.index(DOCS_END)
    docs.write_text("\n".join(lines[:i + 1] + part + lines[j:]) + "\n")


def _ci(v: tuple[float, float]) -> str:
    m, h = v
    if math.isnan(m):
        return "n/a"
    return f"{m:.3f}" if math.isnan(h) else f"{m:.3f} ± {h:.3f}"


def _tok(x: float) -> str:
    return "never" if math.isinf(x) else "n/a" if math.isnan(x) else f"{x:,.0f}"
